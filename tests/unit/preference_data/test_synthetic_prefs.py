"""Simulated annotators on the judged task: truthful without noise, noisy at the stated rate."""

from itertools import combinations

import pytest

from preference_data.readers import iter_rows
from preference_data.synthetic import TEST_COMBINATIONS, in_split, judge, parse_prompt
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


def test_split_all_is_the_output_without_split():
    assert pairwise_records(100, seed=3, noise=0.2, annotators=2, split="all") == pairwise_records(
        100, seed=3, noise=0.2, annotators=2
    )
    assert ranked_records(100, seed=3, noise=0.3, split="all") == ranked_records(100, seed=3, noise=0.3)
    assert rated_records(100, seed=3, k=3, split="all") == rated_records(100, seed=3, k=3)
    for name in ("judged-pairwise", "judged-ranked", "judged-rated"):
        with_all = [row.data for row in iter_rows(f"builtin:{name}?n=30&seed=2&noise=10&split=all")]
        assert with_all == [row.data for row in iter_rows(f"builtin:{name}?n=30&seed=2&noise=10")]


@pytest.mark.parametrize("name", ["judged-pairwise", "judged-ranked", "judged-rated"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_preference_builtins_respect_the_split(name, split):
    rows = [row.data for row in iter_rows(f"builtin:{name}?n=200&seed=1&noise=10&split={split}")]
    assert len(rows) == 200
    assert all(in_split(r["prompt"], split) for r in rows)
    other = "test" if split == "train" else "train"
    assert not any(in_split(r["prompt"], other) for r in rows)
    assert rows == [row.data for row in iter_rows(f"builtin:{name}?n=200&seed=1&noise=10&split={split}")]


def test_split_records_keep_their_labels():
    for record in pairwise_records(100, seed=0, split="test"):
        assert judge(record["prompt"], record["chosen"]) > judge(record["prompt"], record["rejected"])
    prompts = {parse_prompt(r["prompt"]) for r in ranked_records(500, seed=0, split="test")}
    assert prompts == TEST_COMBINATIONS


@pytest.mark.parametrize("name", ["judged-pairwise", "judged-ranked", "judged-rated"])
def test_unknown_split_names_the_source_and_the_allowed_values(name):
    with pytest.raises(ValueError, match=rf"builtin:{name}: unknown split 'eval'.*all, train, test"):
        iter_rows(f"builtin:{name}?n=3&split=eval")
    with pytest.raises(ValueError, match="unknown split"):
        rated_records(3, split="Train")
