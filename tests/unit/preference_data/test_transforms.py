"""Transforms: K-wise pairs, ratings to pairs / ranks, pairs to ranks, dedup, split, shuffle.

Expected values are worked out by hand in the comments.
"""

import dataclasses

import pytest

from preference_data.records import PairwiseRecord, RankedRecord, RatedRecord, SFTRecord, message
from preference_data.splits import dedup, shuffle, split_by_prompt
from preference_data.transforms import (
    pairwise_to_ranked,
    ranked_to_pairwise,
    rated_to_pairwise,
    rated_to_ranked,
)


def ranked(ranks, responses=None, source="r.jsonl", line=1, annotator="ann"):
    responses = responses or tuple("ABCDEFG"[: len(ranks)])
    return RankedRecord(
        prompt="p", responses=tuple(responses), ranks=tuple(ranks), annotator=annotator, source=source, line=line
    )


def pair(chosen, rejected, prompt="p", line=1, annotator=None, margin=None):
    return PairwiseRecord(
        prompt=prompt, chosen=chosen, rejected=rejected, margin=margin, annotator=annotator, source="p.jsonl", line=line
    )


# --- ranked -> pairwise ---------------------------------------------------------------------


def test_ranked_k4_gives_all_six_pairs_best_first():
    record = ranked([0, 1, 2, 3])
    pairs, report = ranked_to_pairwise([record])
    assert [(p.chosen, p.rejected) for p in pairs] == [
        ("A", "B"),
        ("A", "C"),
        ("A", "D"),
        ("B", "C"),
        ("B", "D"),
        ("C", "D"),
    ]
    assert report.records_in == 1 and report.records_out == 6 and report.ties_skipped == 0
    assert {p.group for p in pairs} == {"r.jsonl:1"}
    assert all(p.annotator == "ann" and p.source == "r.jsonl" and p.line == 1 and p.margin is None for p in pairs)
    assert record.ranks == (0, 1, 2, 3)  # input untouched


def test_ranked_order_of_responses_does_not_decide_chosen():
    # Responses listed worst first: ranks [3, 2, 1, 0] means D is best.
    pairs, _ = ranked_to_pairwise([ranked([3, 2, 1, 0])])
    assert [(p.chosen, p.rejected) for p in pairs] == [
        ("B", "A"),
        ("C", "A"),
        ("D", "A"),
        ("C", "B"),
        ("D", "B"),
        ("D", "C"),
    ]


def test_ranked_ties_are_not_pairs_and_are_counted():
    # [0, 1, 1, 2]: of the 6 pairs only (B, C) is tied -> 5 pairs, 1 tie.
    pairs, report = ranked_to_pairwise([ranked([0, 1, 1, 2])])
    assert len(pairs) == 5 and report.ties_skipped == 1
    assert ("B", "C") not in {(p.chosen, p.rejected) for p in pairs}
    assert ("C", "B") not in {(p.chosen, p.rejected) for p in pairs}
    assert ("C", "D") in {(p.chosen, p.rejected) for p in pairs}


def test_ranked_groups_differ_per_item_and_are_stable_without_source():
    a = ranked([0, 1], source="", line=0)
    b = ranked([1, 0], responses=("X", "Y"), source="", line=0)
    pa, _ = ranked_to_pairwise([a, b])
    pa2, _ = ranked_to_pairwise([a, b])
    assert pa[0].group != pa[1].group
    assert [p.group for p in pa] == [p.group for p in pa2]


def test_ranked_length_mismatch_names_the_record():
    with pytest.raises(ValueError, match="r.jsonl:1"):
        ranked_to_pairwise([ranked([0, 1, 2], responses=("A", "B"))])


# --- rated -> pairwise / ranked ---------------------------------------------------------------


def rated(scores, responses=None, line=1):
    responses = responses or tuple("ABCDEFG"[: len(scores)])
    return RatedRecord(
        prompt="p", responses=tuple(responses), scores=tuple(scores), annotator="ann", source="s.jsonl", line=line
    )


def test_rated_pairs_have_score_difference_as_margin():
    # [3, 1, 1]: A-B diff 2, A-C diff 2, B-C tie -> 2 pairs, margins 2 and 2, one tie.
    pairs, report = rated_to_pairwise([rated([3, 1, 1])])
    assert [(p.chosen, p.rejected, p.margin) for p in pairs] == [("A", "B", 2.0), ("A", "C", 2.0)]
    assert report.ties_skipped == 1 and report.below_threshold == 0
    assert {p.group for p in pairs} == {"s.jsonl:1"}


def test_rated_threshold_skips_small_differences():
    # [5, 4.5, 1] threshold 0.5: A-B 0.5 (not above) skipped; A-C 4, B-C 3.5 kept.
    pairs, report = rated_to_pairwise([rated([5, 4.5, 1])], threshold=0.5)
    assert [(p.chosen, p.rejected, p.margin) for p in pairs] == [("A", "C", 4.0), ("B", "C", 3.5)]
    assert report.below_threshold == 1 and report.ties_skipped == 0


def test_rated_lower_score_first_is_rejected():
    pairs, _ = rated_to_pairwise([rated([1, 4])])
    assert (pairs[0].chosen, pairs[0].rejected, pairs[0].margin) == ("B", "A", 3.0)


def test_rated_attributes_by_name_and_weighted_mean():
    a = {"helpful": 4, "correct": 1}
    b = {"helpful": 2, "correct": 4}
    record = rated([a, b])
    by_helpful, _ = rated_to_pairwise([record], attribute="helpful")
    assert (by_helpful[0].chosen, by_helpful[0].margin) == ("A", 2.0)
    # Equal weights: A = 2.5, B = 3.0 -> B by 0.5.
    plain, _ = rated_to_pairwise([record])
    assert (plain[0].chosen, plain[0].margin) == ("B", 0.5)
    # Weights helpful 3, correct 1: A = (12 + 1) / 4 = 3.25, B = (6 + 4) / 4 = 2.5 -> A by 0.75.
    weighted, _ = rated_to_pairwise([record], weights={"helpful": 3, "correct": 1})
    assert (weighted[0].chosen, weighted[0].margin) == ("A", 0.75)


def test_rated_float_noise_is_a_tie():
    # Means 0.2 and (0.1 + 0.3) / 2 = 0.2 (plus float noise) are equal scores.
    record = rated([{"x": 0.2, "y": 0.2}, {"x": 0.1, "y": 0.3}])
    pairs, report = rated_to_pairwise([record])
    assert pairs == [] and report.ties_skipped == 1


def test_rated_missing_attribute_names_the_record():
    with pytest.raises(ValueError, match="s.jsonl:1.*'style'"):
        rated_to_pairwise([rated([{"helpful": 1}, {"helpful": 2}])], attribute="style")


def test_rated_to_ranked_is_dense_with_ties():
    # [3, 1, 1, 2] -> levels 3 > 2 > 1 -> ranks (0, 2, 2, 1).
    records, report = rated_to_ranked([rated([3, 1, 1, 2]), rated([2, 2], line=2), rated([7], line=3)])
    assert records[0].ranks == (0, 2, 2, 1) and records[0].responses == ("A", "B", "C", "D")
    assert records[1].ranks == (0, 0)
    assert report.all_tied == 1 and report.too_few_responses == 1 and report.records_out == 2
    # Ranked from ratings then K-wise pairs: same preferences as the direct pairs, without margins.
    via_ranks, _ = ranked_to_pairwise(records[:1])
    direct, _ = rated_to_pairwise([rated([3, 1, 1, 2])])
    assert {(p.chosen, p.rejected) for p in via_ranks} == {(p.chosen, p.rejected) for p in direct}


# --- pairwise -> ranked -----------------------------------------------------------------------


def test_chain_of_pairs_gives_ranks():
    records, report = pairwise_to_ranked([pair("A", "B", line=1), pair("B", "C", line=2)])
    assert len(records) == 1
    assert records[0].responses == ("A", "B", "C") and records[0].ranks == (0, 1, 2)
    assert records[0].line == 1 and report.cycles == [] and report.implied_pairs == 0


def test_chain_given_in_any_order_gives_the_same_ranks():
    records, _ = pairwise_to_ranked([pair("B", "C"), pair("A", "B")])
    assert dict(zip(records[0].responses, records[0].ranks)) == {"A": 0, "B": 1, "C": 2}


def test_longest_chain_decides_the_rank():
    # A > B, B > C, A > C: C is below two responses on the longest chain -> rank 2, not 1.
    records, report = pairwise_to_ranked([pair("A", "C"), pair("A", "B"), pair("B", "C")])
    assert dict(zip(records[0].responses, records[0].ranks)) == {"A": 0, "B": 1, "C": 2}
    assert report.implied_pairs == 0


def test_cycle_is_reported_and_not_emitted():
    pairs = [pair("A", "B", line=1), pair("B", "C", line=2), pair("C", "A", line=3)]
    records, report = pairwise_to_ranked(pairs)
    assert records == []
    assert report.cycles == [
        {"prompt": "p", "cycle": ["A", "B", "C"], "sources": ["p.jsonl:1", "p.jsonl:2", "p.jsonl:3"]}
    ]
    assert report.pairs_in_cycles == 3


def test_cycle_only_drops_its_own_group():
    pairs = [pair("A", "B"), pair("B", "A"), pair("X", "Y", prompt="q"), pair("D", "B")]
    records, report = pairwise_to_ranked(pairs)
    assert [(r.prompt, r.responses, r.ranks) for r in records] == [("q", ("X", "Y"), (0, 1))]
    assert len(report.cycles) == 1 and report.cycles[0]["cycle"] == ["A", "B"]
    assert report.pairs_in_cycles == 3


def test_single_pair_becomes_k2_and_disjoint_pairs_stay_apart():
    # A > B and C > D for one prompt were never compared across: two K = 2 records, not one
    # K = 4 record that would claim A > D.
    records, report = pairwise_to_ranked([pair("A", "B", annotator="x"), pair("C", "D", annotator="x")])
    assert [(r.responses, r.ranks, r.annotator) for r in records] == [
        (("A", "B"), (0, 1), "x"),
        (("C", "D"), (0, 1), "x"),
    ]
    assert report.records_in == 2 and report.records_out == 2


def test_partial_order_counts_implied_pairs():
    # A > B, A > C, C > D: ranks A0 B1 C1 D2 assert B > D, which no pair implies.
    records, report = pairwise_to_ranked([pair("A", "B"), pair("A", "C"), pair("C", "D")])
    assert dict(zip(records[0].responses, records[0].ranks)) == {"A": 0, "B": 1, "C": 1, "D": 2}
    assert report.implied_pairs == 1


def test_pairs_to_ranks_to_pairs_round_trip():
    original = [pair("A", "B"), pair("A", "C"), pair("B", "C")]
    records, _ = pairwise_to_ranked(original)
    back, _ = ranked_to_pairwise(records)
    assert {(p.chosen, p.rejected) for p in back} == {(p.chosen, p.rejected) for p in original}


# --- dedup ------------------------------------------------------------------------------------


def test_dedup_counts_and_names_the_kept_record():
    records = [
        pair("A", "B", line=1),
        pair("A", "B", line=2),
        pair("A", "C", line=3),
        pair("A", "B", line=4),
        pair("A", "B", line=5, annotator="other"),
    ]
    kept, report = dedup(records)
    assert [r.line for r in kept] == [1, 3, 5]
    assert report.duplicates == 2 and report.records_in == 5 and report.records_out == 3
    assert report.duplicate_of == [
        {"dropped": "p.jsonl:2", "kept": "p.jsonl:1"},
        {"dropped": "p.jsonl:4", "kept": "p.jsonl:1"},
    ]


def test_dedup_normalise_collapses_whitespace_and_case():
    records = [pair("Hello  world", "B", line=1), pair("hello world ", "b", line=2)]
    assert len(dedup(records)[0]) == 2
    kept, report = dedup(records, normalise=True)
    assert [r.line for r in kept] == [1] and report.duplicates == 1


def test_dedup_handles_conversations_and_kinds():
    conversation = (message("user", "hi"), message("assistant", "hello"))
    sft = [
        SFTRecord(conversation, "a", 1),
        SFTRecord(conversation, "b", 9),
        SFTRecord((message("user", "hi"), message("assistant", "bye")), "a", 2),
    ]
    kept, report = dedup(sft)
    assert [(r.source, r.line) for r in kept] == [("a", 1), ("a", 2)]
    assert report.duplicate_of == [{"dropped": "b:9", "kept": "a:1"}]
    # A ranked and a pairwise record are never duplicates of each other.
    mixed = [pair("A", "B"), ranked([0, 1])]
    assert dedup(mixed)[1].duplicates == 0


# --- split / shuffle --------------------------------------------------------------------------


def test_split_by_prompt_is_disjoint_deterministic_and_near_the_fraction():
    records = [pair("A", "B", prompt=f"prompt {i}", line=i) for i in range(1000)]
    records += [pair("C", "D", prompt=f"prompt {i}", line=1000 + i) for i in range(0, 1000, 3)]
    train, evaluation = split_by_prompt(records, 0.1, seed=0)
    assert len(train) + len(evaluation) == len(records)
    train_prompts = {r.prompt for r in train}
    eval_prompts = {r.prompt for r in evaluation}
    assert not train_prompts & eval_prompts
    assert 0.07 <= len(eval_prompts) / 1000 <= 0.13
    # Same seed -> same split, whatever the order; another seed -> another split.
    again = split_by_prompt(list(reversed(records)), 0.1, seed=0)[1]
    assert {r.prompt for r in again} == eval_prompts
    assert {r.prompt for r in split_by_prompt(records, 0.1, seed=1)[1]} != eval_prompts
    # Records keep their order within a side.
    assert [r.line for r in train] == sorted(r.line for r in train)


def test_split_edges_and_conversational_prompts():
    records = [pair("A", "B", prompt=f"p{i}") for i in range(20)]
    assert split_by_prompt(records, 0.0, seed=3) == (records, [])
    assert split_by_prompt(records, 1.0, seed=3) == ([], records)
    with pytest.raises(ValueError):
        split_by_prompt(records, 1.5, seed=3)
    turns = (message("user", "hi"),)
    sft = [SFTRecord(turns + (message("assistant", f"a{i}"),), "s", i) for i in range(5)]
    train, evaluation = split_by_prompt(sft, 0.5, seed=0)
    assert len(train) in (0, 5)  # one prompt: all on one side


def test_shuffle_is_seeded_and_a_permutation():
    records = list(range(50))
    a = shuffle(records, seed=7)
    assert sorted(a) == records and a != records
    assert a == shuffle(records, seed=7) and a != shuffle(records, seed=8)
    assert records == list(range(50))


def test_records_are_never_mutated():
    record = ranked([0, 1, 1])
    snapshot = dataclasses.astuple(record)
    ranked_to_pairwise([record])
    dedup([record, record])
    assert dataclasses.astuple(record) == snapshot
