"""Simulated annotators on the judged task: truthful without noise, noisy at the stated rate."""

from itertools import combinations

from preference_data.readers import iter_rows
from preference_data.synthetic import judge
from preference_data.synthetic_prefs import pairwise_records, ranked_records, rated_records


def test_pairwise_without_noise_always_prefers_the_judges_choice():
    records = pairwise_records(300, seed=1)
    assert len(records) == 300
    assert all(judge(r["prompt"], r["chosen"]) > judge(r["prompt"], r["rejected"]) for r in records)
    assert records == pairwise_records(300, seed=1) and records != pairwise_records(300, seed=2)


def test_pairwise_noise_flips_about_that_share_and_annotators_multiply_records():
    records = pairwise_records(1000, seed=0, noise=0.3, annotators=3)
    assert len(records) == 3000 and {r["annotator"] for r in records} == {"ann0", "ann1", "ann2"}
    flipped = sum(judge(r["prompt"], r["chosen"]) < judge(r["prompt"], r["rejected"]) for r in records)
    assert 0.26 < flipped / len(records) < 0.34
    # Annotators judge the same items: consecutive triples share prompt and replies.
    first = records[:3]
    assert len({(r["prompt"], frozenset((r["chosen"], r["rejected"]))) for r in first}) == 1


def test_ranked_without_noise_orders_by_the_judge():
    for record in ranked_records(200, seed=0, k=4):
        prompt, responses, ranks = record["prompt"], record["responses"], record["ranks"]
        assert len(responses) == 4 == len(set(responses)) and min(ranks) == 0
        for i, j in combinations(range(4), 2):
            ji, jj = judge(prompt, responses[i]), judge(prompt, responses[j])
            if ranks[i] < ranks[j]:
                assert ji >= jj - 0.25  # rounding to 0.5 may merge, never invert
            if ji > jj + 0.5:
                assert ranks[i] < ranks[j]


def test_rated_scores_track_the_judge_and_builtins_read():
    record = rated_records(5, seed=0)[0]
    assert [round(2 * judge(record["prompt"], r)) / 2 for r in record["responses"]] == record["scores"]
    rows = list(iter_rows("builtin:judged-ranked?n=7&noise=20&annotators=2"))
    assert len(rows) == 14 and rows[0].data["annotator"] == "ann0"
    assert len(list(iter_rows("builtin:judged-pairwise?n=5"))) == 5
