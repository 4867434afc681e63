"""Transforms between record kinds (deduplication and splitting are in `preference_data.splits`).

Every function returns new records (records are frozen; nothing is mutated) and every function
that can leave something out says how much in a `TransformReport`, so nothing is lost silently.

Conversions:

- ranked -> pairwise: all C(K, 2) pairs with a strict rank difference (ties are not pairs);
- rated -> pairwise: pairs whose score difference is above a threshold, margin = difference;
- rated -> ranked: dense ranks from scores (highest score = rank 0, equal scores tie);
- pairwise -> ranked: a preference graph per prompt, ranked by longest chain; cycles reported.

Scores are compared after rounding to 9 decimal places, so float noise in a weighted mean of
attributes (0.1 + 0.2 vs 0.3) is not taken for a preference.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from preference_data.records import PairwiseRecord, RankedRecord, RatedRecord, prompt_key

_SCORE_DECIMALS = 9


@dataclass
class TransformReport:
    """What a transform read, wrote and left out (counters stay 0 where they do not apply)."""

    records_in: int = 0
    """Records given to the transform."""
    records_out: int = 0
    """Records returned (pairs for the *_to_pairwise functions)."""
    ties_skipped: int = 0
    """Response pairs with equal rank / score: not a preference, so no pair."""
    below_threshold: int = 0
    """Response pairs whose score difference was not above `threshold` (ties not included)."""
    too_few_responses: int = 0
    """Records with fewer than two responses, which cannot give a ranking (left out)."""
    all_tied: int = 0
    """Ranked records returned whose responses all share one rank (they give no pairs)."""
    duplicates: int = 0
    """Records dropped by `dedup` as duplicates of an earlier record."""
    duplicate_of: list[dict] = field(default_factory=list)
    """For each dropped duplicate: {"dropped": "source:line", "kept": "source:line"}."""
    cycles: list[dict] = field(default_factory=list)
    """Preference cycles found by `pairwise_to_ranked`, one per left-out group:
    {"prompt": prompt key, "cycle": [r1, r2, ..., rn] (r1 > r2 > ... > rn > r1),
    "sources": ["source:line", ...] of every pair of the group}."""
    pairs_in_cycles: int = 0
    """Input pairs left out because their group contains a cycle."""
    implied_pairs: int = 0
    """Pairs a ranked record asserts that its input pairs did not imply (see `pairwise_to_ranked`)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def where(record) -> str:
    """`source:line` of a record, the form every report uses."""
    return f"{record.source}:{record.line}"


def item_id(record) -> str:
    """A stable id of one ranked / rated item, used as the `group` of the pairs it gives.

    `source:line` when the record has a source (readable in logs); otherwise a hash of its
    prompt, responses and annotator, which is the same from run to run.
    """
    if record.source:
        return where(record)
    payload = json.dumps([prompt_key(record.prompt), list(record.responses), record.annotator], ensure_ascii=False)
    return "item-" + hashlib.sha1(payload.encode("utf-8")).hexdigest()[:16]


# --- ranked / rated -> pairwise -----------------------------------------------------------------


def ranked_to_pairwise(records: Iterable[RankedRecord]) -> tuple[list[PairwiseRecord], TransformReport]:
    """All C(K, 2) pairs of each ranked record whose ranks differ (InstructGPT K-wise data).

    `chosen` is the response with the lower (better) rank. Pairs keep the record's prompt,
    annotator, source and line, and share `group = item_id(record)` so a reward model can score
    each response once per batch. Pairs with equal ranks are counted in `ties_skipped`.
    Pairs come in response order: (0, 1), (0, 2), ..., (K-2, K-1).
    """
    report = TransformReport()
    pairs: list[PairwiseRecord] = []
    for record in records:
        report.records_in += 1
        _check_lengths(record, record.ranks, "ranks")
        group = item_id(record)
        for i, j in _index_pairs(len(record.responses)):
            if record.ranks[i] == record.ranks[j]:
                report.ties_skipped += 1
                continue
            better, worse = (i, j) if record.ranks[i] < record.ranks[j] else (j, i)
            pairs.append(_pair(record, better, worse, None, group))
    report.records_out = len(pairs)
    return pairs, report


def rated_to_pairwise(
    records: Iterable[RatedRecord],
    *,
    threshold: float = 0.0,
    attribute: str | None = None,
    weights: Mapping[str, float] | None = None,
) -> tuple[list[PairwiseRecord], TransformReport]:
    """Pairs from absolute scores: a pair for each two responses whose scores differ by more than
    `threshold`, with `margin` = the score difference (always > 0).

    Numeric scores are used as they are. Attribute scores ({"helpfulness": 4, ...}) are reduced
    to one number: the named `attribute`, or else the weighted mean over `weights`, or else the
    plain mean of the response's attributes. Equal scores are counted in `ties_skipped`, other
    differences not above the threshold in `below_threshold`.
    """
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    report = TransformReport()
    pairs: list[PairwiseRecord] = []
    for record in records:
        report.records_in += 1
        scores = _scalar_scores(record, attribute, weights)
        group = item_id(record)
        for i, j in _index_pairs(len(record.responses)):
            difference = scores[i] - scores[j]
            if difference == 0:
                report.ties_skipped += 1
            elif abs(difference) <= threshold:
                report.below_threshold += 1
            else:
                better, worse = (i, j) if difference > 0 else (j, i)
                margin = round(abs(difference), _SCORE_DECIMALS)
                pairs.append(_pair(record, better, worse, margin, group))
    report.records_out = len(pairs)
    return pairs, report


def rated_to_ranked(
    records: Iterable[RatedRecord],
    *,
    attribute: str | None = None,
    weights: Mapping[str, float] | None = None,
) -> tuple[list[RankedRecord], TransformReport]:
    """Dense ranks from scores: the highest score gets rank 0, equal scores share a rank.

    Scores [3, 1, 1, 2] give ranks (0, 2, 2, 1). Attribute scores are reduced to one number as in
    `rated_to_pairwise`. Records with fewer than two responses are left out
    (`too_few_responses`); records whose scores are all equal are returned (all rank 0) and
    counted in `all_tied`, since they give no pairs.
    """
    report = TransformReport()
    ranked: list[RankedRecord] = []
    for record in records:
        report.records_in += 1
        scores = _scalar_scores(record, attribute, weights)
        if len(scores) < 2:
            report.too_few_responses += 1
            continue
        levels = sorted(set(scores), reverse=True)
        rank_of = {score: rank for rank, score in enumerate(levels)}
        if len(levels) == 1:
            report.all_tied += 1
        ranked.append(
            RankedRecord(
                prompt=record.prompt,
                responses=tuple(record.responses),
                ranks=tuple(rank_of[s] for s in scores),
                annotator=record.annotator,
                source=record.source,
                line=record.line,
            )
        )
    report.records_out = len(ranked)
    return ranked, report


def scalar_score(score, attribute: str | None = None, weights: Mapping[str, float] | None = None) -> float:
    """One number from a score: a number as is, or an attribute mapping reduced (see
    `rated_to_pairwise`). Rounded to 9 decimals so float noise does not break ties."""
    if isinstance(score, Mapping):
        if attribute is not None:
            if attribute not in score:
                raise KeyError(f"attribute {attribute!r} not among {sorted(score)}")
            value = score[attribute]
        elif weights is not None:
            missing = sorted(set(weights) - set(score))
            if missing:
                raise KeyError(f"weighted attributes {missing} not among {sorted(score)}")
            total = sum(weights.values())
            if total <= 0:
                raise ValueError(f"weights must sum to a positive number, got {dict(weights)}")
            # Sorted so the float sum is the same whatever order the mapping was built in.
            value = sum(weights[name] * score[name] for name in sorted(weights)) / total
        else:
            if not score:
                raise ValueError("an attribute score has no attributes")
            value = sum(score[name] for name in sorted(score)) / len(score)
    else:
        value = score
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"a score must be a number, got {type(value).__name__}")
    return round(float(value), _SCORE_DECIMALS)


def _scalar_scores(record: RatedRecord, attribute, weights) -> list[float]:
    _check_lengths(record, record.scores, "scores")
    try:
        return [scalar_score(s, attribute, weights) for s in record.scores]
    except (KeyError, TypeError, ValueError) as error:
        message = error.args[0] if error.args else str(error)
        raise ValueError(f"{where(record)}: {message}") from None


def _check_lengths(record, values: Sequence, name: str) -> None:
    if len(values) != len(record.responses):
        raise ValueError(f"{where(record)}: {len(record.responses)} responses but {len(values)} {name}")


def _index_pairs(k: int):
    return ((i, j) for i in range(k) for j in range(i + 1, k))


def _pair(record, better: int, worse: int, margin: float | None, group: str) -> PairwiseRecord:
    return PairwiseRecord(
        prompt=record.prompt,
        chosen=record.responses[better],
        rejected=record.responses[worse],
        margin=margin,
        annotator=record.annotator,
        group=group,
        source=record.source,
        line=record.line,
    )


# --- pairwise -> ranked -------------------------------------------------------------------------


def pairwise_to_ranked(pairs: Iterable[PairwiseRecord]) -> tuple[list[RankedRecord], TransformReport]:
    """Ranked records from pairs: one per prompt and connected set of responses.

    Pairs are grouped by `prompt_key`; within a prompt, responses linked by pairs (directly or
    through other responses) form one group, and responses never compared with each other go
    to separate records (otherwise the ranking would invent comparisons between them). Each
    group is a graph with an edge chosen -> rejected:

    - acyclic: a response's rank is the length of the longest chain of preferences above it
      (0 for responses nothing is preferred to). A > B, B > C gives A 0, B 1, C 2; a single pair
      gives a K = 2 record. This respects every input pair, but a rank order is a total preorder
      and the input may be only partial (A > B, A > C, C > D ranks B above D though no pair says
      so): such pairs asserted by ranks only are counted in `implied_pairs`.
    - cyclic (A > B, B > C, C > A): nothing is emitted for the group; the cycle, the prompt and
      the `source:line` of every pair of the group go to `report.cycles`, and the pairs are
      counted in `pairs_in_cycles`. (Pairs from several annotators that disagree form a cycle:
      merge them with `annotators.merge_annotators` first.)

    Margins are not kept. The record takes the prompt, source and line of the group's first
    pair, and its annotator when all pairs share one (else None). Responses keep the order in
    which they first appear.
    """
    report = TransformReport()
    by_prompt: dict[str, list[PairwiseRecord]] = defaultdict(list)
    for pair in pairs:
        report.records_in += 1
        by_prompt[prompt_key(pair.prompt)].append(pair)

    ranked: list[RankedRecord] = []
    for key, group_pairs in by_prompt.items():
        for component in _components(group_pairs):
            record = _rank_component(key, component, report)
            if record is not None:
                ranked.append(record)
    report.records_out = len(ranked)
    return ranked, report


def _components(pairs: list[PairwiseRecord]) -> list[list[PairwiseRecord]]:
    """Pairs split by connected sets of responses (union-find), in order of first appearance."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for pair in pairs:
        a, b = find(pair.chosen), find(pair.rejected)
        if a != b:
            parent[b] = a
    components: dict[str, list[PairwiseRecord]] = {}
    for pair in pairs:
        components.setdefault(find(pair.chosen), []).append(pair)
    return list(components.values())


def _rank_component(key: str, pairs: list[PairwiseRecord], report: TransformReport) -> RankedRecord | None:
    responses: list[str] = []
    for pair in pairs:
        for response in (pair.chosen, pair.rejected):
            if response not in responses:
                responses.append(response)
    below: dict[str, set[str]] = {r: set() for r in responses}  # chosen -> {rejected}
    above: dict[str, set[str]] = {r: set() for r in responses}
    for pair in pairs:
        below[pair.chosen].add(pair.rejected)
        above[pair.rejected].add(pair.chosen)

    # Kahn's algorithm in first-appearance order; the longest chain above a response is its rank.
    rank = dict.fromkeys(responses, 0)
    waiting = {r: len(above[r]) for r in responses}
    ready = [r for r in responses if waiting[r] == 0]
    done: list[str] = []
    while ready:
        current = ready.pop(0)
        done.append(current)
        for lower in below[current]:
            rank[lower] = max(rank[lower], rank[current] + 1)
            waiting[lower] -= 1
            if waiting[lower] == 0:
                ready.append(lower)
    if len(done) < len(responses):
        report.cycles.append(
            {
                "prompt": key,
                "cycle": _find_cycle([r for r in responses if waiting[r] > 0], above, responses),
                "sources": [where(p) for p in pairs],
            }
        )
        report.pairs_in_cycles += len(pairs)
        return None

    report.implied_pairs += _count_implied(responses, rank, below)
    annotators = {p.annotator for p in pairs}
    first = pairs[0]
    return RankedRecord(
        prompt=first.prompt,
        responses=tuple(responses),
        ranks=tuple(rank[r] for r in responses),
        annotator=annotators.pop() if len(annotators) == 1 else None,
        source=first.source,
        line=first.line,
    )


def _find_cycle(left: list[str], above: dict[str, set[str]], order: list[str]) -> list[str]:
    """One cycle among the responses Kahn's algorithm could not place.

    Each of them has a preferred response that is also left, so walking up from any of them
    must come back to a response already seen; the walk from there on is a cycle.
    """
    left_set = set(left)
    position = {r: i for i, r in enumerate(order)}
    walk = [left[0]]
    seen = {left[0]: 0}
    while True:
        nxt = min((r for r in above[walk[-1]] if r in left_set), key=position.__getitem__)
        if nxt in seen:
            cycle = walk[seen[nxt] :]
            break
        seen[nxt] = len(walk)
        walk.append(nxt)
    cycle.reverse()  # the walk went from worse to better; report best-first: r1 > r2 > ... > r1
    start = min(range(len(cycle)), key=lambda i: position[cycle[i]])
    return cycle[start:] + cycle[:start]


def _count_implied(responses: list[str], rank: dict[str, int], below: dict[str, set[str]]) -> int:
    """Pairs with different ranks where the better is not above the worse through the input."""
    implied = 0
    for r in responses:
        reachable: set[str] = set()
        stack = list(below[r])
        while stack:
            x = stack.pop()
            if x not in reachable:
                reachable.add(x)
                stack.extend(below[x])
        implied += sum(1 for other in responses if rank[other] > rank[r] and other not in reachable)
    return implied
