"""Multi-annotator intake: merge several annotators' labels of one item, and measure agreement.

An *item* is one prompt with one set of responses: for pairwise records the unordered pair
{chosen, rejected}, for ranked records the set of ranked responses. Its responses are put in a
canonical order (sorted text) so that annotators who saw them in different orders can be
compared; a pairwise label is then "first" or "second" (which of the two canonical responses
was preferred).

A record without an annotator is counted as its own anonymous voter ("anonymous@source:line"),
since nothing says two such records come from one person.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace

from preference_data.records import PairwiseRecord, RankedRecord, prompt_key

FIRST, SECOND, TIE = "first", "second", "tie"


@dataclass
class MergeReport:
    """What `merge_annotators` read, merged and left out."""

    records_in: int = 0
    """Records given (votes, duplicates included)."""
    items: int = 0
    """Distinct items (prompt + set of responses)."""
    merged: int = 0
    """Merged records returned (items minus ties)."""
    ties: list[dict] = field(default_factory=list)
    """Items whose votes carry no preference (equal votes), not emitted: one entry of `votes` each."""
    partial_ties: int = 0
    """Ranked items emitted with some responses sharing a rank because their mean ranks are equal."""
    duplicate_votes: list[dict] = field(default_factory=list)
    """Second and later votes of one annotator on one item (the first is used):
    {"item": key, "annotator": name, "source": "source:line"}."""
    votes: list[dict] = field(default_factory=list)
    """Raw votes of every item: {"item": key, "prompt": prompt key, "responses": [canonical
    order], "votes": {annotator: label}, "sources": ["source:line", ...], "outcome":
    "merged" | "tie"}. A pairwise label is "first" / "second"; a ranked label is the list of
    ranks the annotator gave, in canonical response order."""

    def to_dict(self) -> dict:
        return asdict(self)


def voter(record) -> str:
    """Who gave a record's label: its annotator, or an anonymous voter of its own."""
    return record.annotator if record.annotator is not None else f"anonymous@{record.source}:{record.line}"


def item_responses(record) -> tuple[str, ...]:
    """The responses of a record's item in canonical (sorted) order."""
    if isinstance(record, PairwiseRecord):
        return tuple(sorted((record.chosen, record.rejected)))
    if isinstance(record, RankedRecord):
        if len(set(record.responses)) != len(record.responses):
            raise ValueError(f"{record.source}:{record.line}: a ranked record repeats a response")
        return tuple(sorted(record.responses))
    raise TypeError(f"annotator votes are pairwise or ranked records, not {type(record).__name__}")


def item_key(record) -> str:
    """A stable id of a record's item: a hash of its prompt key and canonical responses."""
    payload = json.dumps([prompt_key(record.prompt), list(item_responses(record))], ensure_ascii=False)
    return "item-" + hashlib.sha1(payload.encode("utf-8")).hexdigest()[:16]


def _label(record, responses: tuple[str, ...]):
    if isinstance(record, PairwiseRecord):
        return FIRST if record.chosen == responses[0] else SECOND
    rank_of = dict(zip(record.responses, record.ranks))
    return [rank_of[r] for r in responses]


def _group_votes(records: Iterable, duplicates: list[dict] | None = None) -> dict[str, dict]:
    """Items in order of first appearance: {key: {"records": [...], "by_voter": {voter: record}}}."""
    items: dict[str, dict] = {}
    kind = None
    for record in records:
        responses = item_responses(record)
        if kind is None:
            kind = type(record)
        elif type(record) is not kind:
            raise TypeError(
                f"records of one kind are merged at a time: {kind.__name__} and "
                f"{type(record).__name__} ({record.source}:{record.line})"
            )
        key = item_key(record)
        item = items.setdefault(key, {"responses": responses, "records": [], "by_voter": {}})
        item["records"].append(record)
        who = voter(record)
        if who in item["by_voter"]:
            if duplicates is not None:
                duplicates.append({"item": key, "annotator": who, "source": f"{record.source}:{record.line}"})
            continue
        item["by_voter"][who] = record
    return items


def merge_annotators(records: Iterable) -> tuple[list, MergeReport]:
    """One record per item from the votes of several annotators.

    Pairwise: the response chosen by more annotators wins; equal votes are a tie. Ranked: each
    annotator's ranks become positions (tied responses share the mean of the positions they
    span, so [0, 0, 1] counts as positions 0.5, 0.5, 2), positions are summed over annotators
    (a Borda count: the same order as the mean rank) and dense-ranked again: lowest sum is rank
    0, equal sums tie. An item whose merged result prefers nothing (equal votes; all responses
    with one mean rank) is not emitted and goes to `report.ties`.

    A merged record takes the prompt, source, line (and pairwise group) of the item's first
    record, `annotator = "majority(N)"` with N the number of voters, and no margin. The raw votes
    of every item are kept in `report.votes`. One annotator's repeated votes on an item count
    once (the first), listed in `report.duplicate_votes`.
    """
    report = MergeReport()
    records = list(records)
    report.records_in = len(records)
    items = _group_votes(records, report.duplicate_votes)
    report.items = len(items)
    merged: list = []
    for key, item in items.items():
        responses, by_voter = item["responses"], item["by_voter"]
        first = item["records"][0]
        entry = {
            "item": key,
            "prompt": prompt_key(first.prompt),
            "responses": list(responses),
            "votes": {who: _label(r, responses) for who, r in by_voter.items()},
            "sources": [f"{r.source}:{r.line}" for r in item["records"]],
        }
        name = f"majority({len(by_voter)})"
        if isinstance(first, PairwiseRecord):
            result = _merge_pair(first, responses, entry["votes"].values(), name)
        else:
            result = _merge_ranked(first, responses, by_voter.values(), name)
            if result is not None and len(set(result.ranks)) < len(result.ranks):
                report.partial_ties += 1
        entry["outcome"] = "tie" if result is None else "merged"
        report.votes.append(entry)
        if result is None:
            report.ties.append(entry)
        else:
            merged.append(result)
    report.merged = len(merged)
    return merged, report


def _merge_pair(first: PairwiseRecord, responses, labels, name: str) -> PairwiseRecord | None:
    counts = Counter(labels)
    if counts[FIRST] == counts[SECOND]:
        return None
    winner, loser = responses if counts[FIRST] > counts[SECOND] else responses[::-1]
    return replace(first, chosen=winner, rejected=loser, margin=None, annotator=name)


def _merge_ranked(first: RankedRecord, responses, votes, name: str) -> RankedRecord | None:
    totals = dict.fromkeys(responses, 0.0)
    for record in votes:
        for response, position in zip(record.responses, positions(record.ranks)):
            totals[response] += position  # sums of halves: exact in floating point
    levels = sorted(set(totals.values()))
    if len(levels) == 1:
        return None
    rank_of = {total: rank for rank, total in enumerate(levels)}
    return replace(first, ranks=tuple(rank_of[totals[r]] for r in first.responses), annotator=name)


def positions(ranks: Sequence[int]) -> list[float]:
    """0-based positions of ranked responses; tied ones share the mean of the positions they span.

    Ranks [0, 1, 1, 2] give positions [0, 1.5, 1.5, 3].
    """
    order = sorted(range(len(ranks)), key=lambda i: ranks[i])
    result = [0.0] * len(ranks)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and ranks[order[end + 1]] == ranks[order[start]]:
            end += 1
        for i in order[start : end + 1]:
            result[i] = (start + end) / 2
        start = end + 1
    return result


def per_annotator_counts(records: Iterable) -> dict[str, int]:
    """Records per annotator, most first ("<none>" for records without one)."""
    counts = Counter(r.annotator if r.annotator is not None else "<none>" for r in records)
    return dict(counts.most_common())


# --- agreement ----------------------------------------------------------------------------------


def cohen_kappa(labels_a: Sequence[Hashable], labels_b: Sequence[Hashable]) -> float:
    """Cohen's kappa of two annotators' labels of the same units: (p_o - p_e) / (1 - p_e).

    p_o is the share of units they label alike, p_e the share expected by chance from each
    one's label frequencies. NaN when p_e == 1 (both always give one and the same label).
    """
    if len(labels_a) != len(labels_b):
        raise ValueError(f"two label lists of one length are needed, got {len(labels_a)} and {len(labels_b)}")
    n = len(labels_a)
    if n == 0:
        raise ValueError("no labels")
    observed = sum(a == b for a, b in zip(labels_a, labels_b)) / n
    count_a, count_b = Counter(labels_a), Counter(labels_b)
    expected = sum(count_a[c] * count_b[c] for c in count_a) / (n * n)
    if expected == 1:
        return math.nan
    return (observed - expected) / (1 - expected)


def fleiss_kappa(table: Sequence[Sequence[int]]) -> float:
    """Fleiss' kappa from a units x categories table of counts, each row summing to n >= 2.

    (P_bar - P_e) / (1 - P_e), with P_bar the mean over units of the share of agreeing rater
    pairs and P_e the sum of squared overall category shares. NaN when P_e == 1.
    """
    if not table:
        raise ValueError("no units")
    n = sum(table[0])
    if n < 2 or any(sum(row) != n for row in table):
        raise ValueError(f"every row must sum to one number of ratings n >= 2, got {[sum(r) for r in table]}")
    units = len(table)
    agreement = sum((sum(c * c for c in row) - n) / (n * (n - 1)) for row in table) / units
    shares = [sum(row[j] for row in table) / (units * n) for j in range(len(table[0]))]
    expected = sum(p * p for p in shares)
    if expected == 1:
        return math.nan
    return (agreement - expected) / (1 - expected)


def agreement(records: Iterable) -> dict:
    """Inter-annotator agreement on pairwise or ranked records.

    Units: for pairwise records, each item with the label "first" / "second" (which canonical
    response was preferred); for ranked records, each pair of responses of each item with the
    label "first" / "second" / "tie". With exactly two annotators, Cohen's kappa over the units
    both labelled; with more, Fleiss' kappa over the units with the most common number n >= 2 of
    ratings (Fleiss needs the same n per unit, not the same raters). Returns
    {"method": "cohen" | "fleiss" | None, "kappa", "observed_agreement" (share of units where all
    ratings agree), "annotators", "raters_per_unit", "units" (used), "units_total",
    "categories"}; method and kappa are None when fewer than two annotators or no shared unit.
    """
    labels: dict[tuple, dict[str, str]] = defaultdict(dict)  # unit -> {annotator: label}
    items = _group_votes(records)
    for key, item in items.items():
        responses = item["responses"]
        for who, record in item["by_voter"].items():
            if isinstance(record, PairwiseRecord):
                labels[(key,)][who] = _label(record, responses)
                continue
            ranks = _label(record, responses)
            for i in range(len(responses)):
                for j in range(i + 1, len(responses)):
                    label = TIE if ranks[i] == ranks[j] else FIRST if ranks[i] < ranks[j] else SECOND
                    labels[(key, i, j)][who] = label
    annotators = sorted({who for unit in labels.values() for who in unit})
    result = {
        "method": None,
        "kappa": None,
        "observed_agreement": None,
        "annotators": annotators,
        "raters_per_unit": None,
        "units": 0,
        "units_total": len(labels),
        "categories": [],
    }
    rated = [unit for unit in labels.values() if len(unit) >= 2]
    if len(annotators) < 2 or not rated:
        return result
    if len(annotators) == 2:
        used = rated
        a, b = annotators
        kappa = cohen_kappa([u[a] for u in used], [u[b] for u in used])
        method, n = "cohen", 2
    else:
        sizes = Counter(len(unit) for unit in rated)
        n = max(sizes, key=lambda size: (sizes[size], size))
        used = [unit for unit in rated if len(unit) == n]
        categories = _categories(used)
        table = [[Counter(unit.values())[c] for c in categories] for unit in used]
        kappa = fleiss_kappa(table)
        method = "fleiss"
    result.update(
        method=method,
        kappa=kappa,
        raters_per_unit=n,
        units=len(used),
        observed_agreement=sum(len(set(u.values())) == 1 for u in used) / len(used),
        categories=_categories(used),
    )
    return result


def _categories(units: list[dict[str, str]]) -> list[str]:
    return sorted({label for unit in units for label in unit.values()})
