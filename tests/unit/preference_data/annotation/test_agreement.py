"""Multi-annotator intake: majority merge, raw votes kept, kappa values worked out by hand."""

import math

import pytest

from preference_data.annotation.agreement import (
    agreement,
    cohen_kappa,
    fleiss_kappa,
    merge_annotators,
    per_annotator_counts,
    positions,
)
from preference_data.records import PairwiseRecord, RankedRecord, RatedRecord


def vote(annotator, chosen, rejected, prompt="p", line=1):
    return PairwiseRecord(
        prompt=prompt, chosen=chosen, rejected=rejected, annotator=annotator, source="votes.jsonl", line=line
    )


def ranking(annotator, responses, ranks, prompt="p", line=1):
    return RankedRecord(
        prompt=prompt,
        responses=tuple(responses),
        ranks=tuple(ranks),
        annotator=annotator,
        source="ranks.jsonl",
        line=line,
    )


# --- merge ------------------------------------------------------------------------------------


def test_pairwise_majority_of_three_and_a_tie():
    records = [
        vote("a", "A", "B", line=1),
        vote("b", "A", "B", line=2),
        vote("c", "B", "A", line=3),
        vote("a", "C", "D", prompt="q", line=4),
        vote("b", "D", "C", prompt="q", line=5),
    ]
    merged, report = merge_annotators(records)
    assert [(m.prompt, m.chosen, m.rejected, m.annotator) for m in merged] == [("p", "A", "B", "majority(3)")]
    assert merged[0].line == 1
    assert report.records_in == 5 and report.items == 2 and report.merged == 1
    # The tie is reported with its raw votes and not emitted; every item keeps its raw votes.
    assert len(report.ties) == 1
    tie = report.ties[0]
    assert tie["prompt"] == "q" and tie["responses"] == ["C", "D"]
    assert tie["votes"] == {"a": "first", "b": "second"} and tie["outcome"] == "tie"
    first = report.votes[0]
    assert first["votes"] == {"a": "first", "b": "first", "c": "second"}
    assert first["sources"] == ["votes.jsonl:1", "votes.jsonl:2", "votes.jsonl:3"]
    assert first["outcome"] == "merged"
    assert [v["item"] for v in report.votes] == [first["item"], tie["item"]]


def test_repeated_vote_of_one_annotator_counts_once():
    records = [vote("a", "A", "B", line=1), vote("a", "B", "A", line=2), vote("b", "B", "A", line=3)]
    merged, report = merge_annotators(records)
    # a's first vote (A) against b's (B): a tie once a's second vote is set aside.
    assert merged == [] and len(report.ties) == 1
    assert report.duplicate_votes == [{"item": report.votes[0]["item"], "annotator": "a", "source": "votes.jsonl:2"}]


def test_records_without_annotator_are_separate_voters():
    records = [vote(None, "A", "B", line=1), vote(None, "A", "B", line=2), vote(None, "B", "A", line=3)]
    merged, report = merge_annotators(records)
    assert [(m.chosen, m.annotator) for m in merged] == [("A", "majority(3)")]
    assert report.duplicate_votes == []


def test_ranked_merge_by_summed_positions():
    # Responses X, Y, Z; annotator c lists them in another order.
    # a: X0 Y1 Z2; b: X0 Z1 Y2; c: Y0 X1 Z2 -> position sums X 1, Y 3, Z 5 -> X0 Y1 Z2.
    records = [
        ranking("a", "XYZ", [0, 1, 2]),
        ranking("b", "XYZ", [0, 2, 1], line=2),
        ranking("c", "YZX", [0, 2, 1], line=3),
    ]
    merged, report = merge_annotators(records)
    assert len(merged) == 1
    assert merged[0].responses == ("X", "Y", "Z") and merged[0].ranks == (0, 1, 2)
    assert merged[0].annotator == "majority(3)" and report.partial_ties == 0
    assert report.votes[0]["votes"] == {"a": [0, 1, 2], "b": [0, 2, 1], "c": [1, 0, 2]}


def test_ranked_merge_with_ties_in_the_input_and_in_the_result():
    # a: X = Y > Z -> positions X 0.5, Y 0.5, Z 2; b: Y > X > Z -> X 1, Y 0, Z 2.
    # Sums X 1.5, Y 0.5, Z 4 -> Y0 X1 Z2.
    merged, _ = merge_annotators([ranking("a", "XYZ", [0, 0, 1]), ranking("b", "XYZ", [1, 0, 2])])
    assert dict(zip(merged[0].responses, merged[0].ranks)) == {"Y": 0, "X": 1, "Z": 2}
    # a: X > Y > Z, b: Y > X > Z -> sums X 1, Y 1, Z 4 -> X and Y tie above Z (emitted).
    merged, report = merge_annotators([ranking("a", "XYZ", [0, 1, 2]), ranking("b", "XYZ", [1, 0, 2])])
    assert merged[0].ranks == (0, 0, 1) and report.partial_ties == 1
    # K = 2 split 1-1: no preference at all -> tie, not emitted.
    merged, report = merge_annotators([ranking("a", "XY", [0, 1]), ranking("b", "XY", [1, 0])])
    assert merged == [] and len(report.ties) == 1


def test_positions_average_tied_ranks():
    assert positions([0, 1, 1, 2]) == [0, 1.5, 1.5, 3]
    assert positions([2, 0, 0]) == [2, 0.5, 0.5]


def test_mixed_or_unsupported_kinds_are_refused():
    with pytest.raises(TypeError):
        merge_annotators([vote("a", "A", "B"), ranking("b", "AB", [0, 1])])
    with pytest.raises(TypeError):
        merge_annotators([RatedRecord(prompt="p", responses=("A", "B"), scores=(1, 2))])


def test_per_annotator_counts():
    records = [vote("a", "A", "B"), vote("b", "A", "B"), vote("a", "A", "C"), vote(None, "A", "D")]
    assert per_annotator_counts(records) == {"a": 2, "b": 1, "<none>": 1}


# --- kappa ------------------------------------------------------------------------------------


def test_cohen_kappa_hand_computed():
    # Units: both "y" 2, a "y" / b "n" 1, both "n" 1.
    # p_o = 3/4; a says y 3/4, b says y 2/4: p_e = 3/4 * 2/4 + 1/4 * 2/4 = 1/2.
    # kappa = (3/4 - 1/2) / (1 - 1/2) = 0.5
    assert cohen_kappa(["y", "y", "y", "n"], ["y", "y", "n", "n"]) == pytest.approx(0.5)
    # 10 units: yy 4, yn 2, ny 1, nn 3. p_o = 0.7; a y 6/10, b y 5/10:
    # p_e = 0.6 * 0.5 + 0.4 * 0.5 = 0.5; kappa = (0.7 - 0.5) / 0.5 = 0.4
    a = ["y"] * 6 + ["n"] * 4
    b = ["y"] * 4 + ["n"] * 2 + ["y"] + ["n"] * 3
    assert cohen_kappa(a, b) == pytest.approx(0.4)
    assert cohen_kappa(["y", "n"], ["y", "n"]) == pytest.approx(1.0)
    # Opposite on every unit, balanced labels: p_o 0, p_e 1/2 -> -1.
    assert cohen_kappa(["y", "n"], ["n", "y"]) == pytest.approx(-1.0)
    assert math.isnan(cohen_kappa(["y", "y"], ["y", "y"]))
    with pytest.raises(ValueError):
        cohen_kappa(["y"], ["y", "n"])


def test_fleiss_kappa_wikipedia_example():
    # https://en.wikipedia.org/wiki/Fleiss%27_kappa: 10 subjects, 14 raters, 5 categories;
    # P_bar = 0.378, P_e = 0.213, kappa = 0.210.
    table = [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
    assert fleiss_kappa(table) == pytest.approx(0.20993, abs=5e-5)
    assert fleiss_kappa([[3, 0], [0, 3]]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        fleiss_kappa([[3, 0], [1, 1]])


def test_agreement_two_annotators_is_cohen_on_canonical_labels():
    # Canonical order of each item is (r1, r2): "first" = r1 preferred. b writes some pairs the
    # other way round, which must not matter. Labels as in the 4-unit Cohen example -> 0.5.
    a = [vote("a", "r1", "r2", prompt=f"p{i}") for i in range(3)] + [vote("a", "r2", "r1", prompt="p3")]
    b = [
        vote("b", "r1", "r2", prompt="p0"),
        vote("b", "r1", "r2", prompt="p1"),
        vote("b", "r2", "r1", prompt="p2"),
        vote("b", "r2", "r1", prompt="p3"),
        vote("b", "r1", "r2", prompt="only b"),
    ]
    result = agreement(a + b)
    assert result["method"] == "cohen" and result["kappa"] == pytest.approx(0.5)
    assert result["units"] == 4 and result["units_total"] == 5
    assert result["observed_agreement"] == pytest.approx(0.75)
    assert result["annotators"] == ["a", "b"] and result["categories"] == ["first", "second"]


def test_agreement_three_annotators_is_fleiss():
    # Items labelled (F = first, S = second) by a, b, c: FFF, FFS, SSS, FSS.
    # P_i = 1, 1/3, 1, 1/3 -> P_bar = 2/3; p_F = 6/12 -> P_e = 1/2; kappa = (2/3 - 1/2) / (1/2) = 1/3.
    labels = ["FFF", "FFS", "SSS", "FSS"]
    records = [
        vote(who, *(("r1", "r2") if label == "F" else ("r2", "r1")), prompt=f"p{i}")
        for i, item in enumerate(labels)
        for who, label in zip("abc", item)
    ]
    result = agreement(records)
    assert result["method"] == "fleiss" and result["kappa"] == pytest.approx(1 / 3)
    assert result["raters_per_unit"] == 3 and result["units"] == 4
    assert result["observed_agreement"] == pytest.approx(0.5)


def test_agreement_on_ranked_records_uses_response_pairs():
    # X, Y, Z: a [0, 1, 2], b [0, 2, 1]. Pairs (X,Y) F/F, (X,Z) F/F, (Y,Z) F/S.
    # p_o = 2/3; a always F, b F 2/3 -> p_e = 2/3 -> kappa = 0.
    result = agreement([ranking("a", "XYZ", [0, 1, 2]), ranking("b", "XYZ", [0, 2, 1])])
    assert result["units"] == 3 and result["kappa"] == pytest.approx(0.0)


def test_agreement_needs_two_annotators():
    result = agreement([vote("a", "A", "B"), vote("a", "A", "C")])
    assert result["method"] is None and result["kappa"] is None and result["units_total"] == 2
