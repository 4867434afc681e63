"""Preference data for the judged synthetic task, labelled by simulated annotators.

Each item is a task prompt with candidate replies of different styles (see `synthetic`). The
true preference is `synthetic.judge`; a simulated annotator sees it through noise:

- pairwise: the annotator flips the true preference with probability `noise`;
- ranked / rated: the annotator's score is the judge's plus Gaussian noise of std `2 * noise`
  (the judge's scores span about 0..3), rounded to 0.5, so noisy annotators also create ties.

With `annotators > 1`, every item is judged by each annotator (`ann0`, `ann1`, ...), one record
per judgement, which is what `annotators.merge_annotators` takes. Deterministic for a seed.

Built-ins for `readers.iter_rows`: `builtin:judged-pairwise`, `builtin:judged-ranked`,
`builtin:judged-rated` (parameters `n`, `seed`, `k`, `noise` in percent, `annotators`, `split`).

`split` is "all" (default; the same output as before it existed), "train" or "test": the
prompts' (colour, noun) combinations are held out as in `synthetic` (`TEST_COMBINATIONS`).
Only the prompt is constrained; an off-topic candidate still talks about another object.
"""

from __future__ import annotations

import random

from preference_data.readers import register_builtin
from preference_data.synthetic import STYLES, check_split, judge, make_prompt, reply


def _candidates(prompt: str, k: int, rng: random.Random) -> list[str]:
    """k distinct replies; styles are cycled so every item mixes good and bad ones."""
    styles = list(STYLES)
    rng.shuffle(styles)
    replies: list[str] = []
    attempts = 0
    while len(replies) < k:
        candidate = reply(prompt, styles[len(replies) % len(styles)], rng)
        attempts += 1
        if candidate not in replies or attempts > 50 * k:
            replies.append(candidate)
    return replies


def _perceived(prompt: str, responses: list[str], noise: float, rng: random.Random) -> list[float]:
    return [round(2 * (judge(prompt, r) + rng.gauss(0.0, 2 * noise))) / 2 for r in responses]


def _annotator_ids(annotators: int) -> list[str | None]:
    return [None] if annotators <= 1 else [f"ann{i}" for i in range(annotators)]


def pairwise_records(
    n: int = 1000, seed: int = 0, noise: float = 0.0, annotators: int = 1, split: str = "all"
) -> list[dict]:
    """`n` items {"prompt", "chosen", "rejected", "annotator"?}; the two replies' true scores differ."""
    check_split(split, "pairwise_records")
    rng = random.Random(seed)
    records = []
    while len(records) < n * max(1, annotators):
        prompt = make_prompt(rng, split)
        a, b = _candidates(prompt, 2, rng)
        if judge(prompt, a) == judge(prompt, b):
            continue  # no true preference to label
        better, worse = (a, b) if judge(prompt, a) > judge(prompt, b) else (b, a)
        for annotator in _annotator_ids(annotators):
            chosen, rejected = (worse, better) if rng.random() < noise else (better, worse)
            record = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
            if annotator:
                record["annotator"] = annotator
            records.append(record)
    return records


def _ranks(scores: list[float]) -> list[int]:
    """Dense ranks, 0 = best; equal scores share a rank."""
    distinct = sorted(set(scores), reverse=True)
    return [distinct.index(s) for s in scores]


def ranked_records(
    n: int = 1000, seed: int = 0, k: int = 4, noise: float = 0.0, annotators: int = 1, split: str = "all"
) -> list[dict]:
    """`n` items {"prompt", "responses", "ranks", "annotator"?} with K = `k` replies."""
    check_split(split, "ranked_records")
    rng = random.Random(seed)
    records = []
    while len(records) < n * max(1, annotators):
        prompt = make_prompt(rng, split)
        responses = _candidates(prompt, k, rng)
        for annotator in _annotator_ids(annotators):
            ranks = _ranks(_perceived(prompt, responses, noise, rng))
            if len(set(ranks)) < 2:
                continue  # an all-tie judgement carries no preference
            record = {"prompt": prompt, "responses": responses, "ranks": ranks}
            if annotator:
                record["annotator"] = annotator
            records.append(record)
    return records[: n * max(1, annotators)]


def rated_records(n: int = 1000, seed: int = 0, k: int = 4, noise: float = 0.0, split: str = "all") -> list[dict]:
    """`n` items {"prompt", "responses", "scores"}: absolute scores on the judge's scale."""
    check_split(split, "rated_records")
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        prompt = make_prompt(rng, split)
        responses = _candidates(prompt, k, rng)
        records.append({"prompt": prompt, "responses": responses, "scores": _perceived(prompt, responses, noise, rng)})
    return records


def _percent(noise: int | str) -> float:
    return float(noise) / 100.0


def _judged_pairwise(
    n: int = 1000, seed: int = 0, noise: int | str = 0, annotators: int = 1, split: str = "all"
) -> list[dict]:
    check_split(split, "builtin:judged-pairwise")
    return pairwise_records(n, seed, _percent(noise), annotators, split)


def _judged_ranked(
    n: int = 1000, seed: int = 0, k: int = 4, noise: int | str = 0, annotators: int = 1, split: str = "all"
) -> list[dict]:
    check_split(split, "builtin:judged-ranked")
    return ranked_records(n, seed, k, _percent(noise), annotators, split)


def _judged_rated(n: int = 1000, seed: int = 0, k: int = 4, noise: int | str = 0, split: str = "all") -> list[dict]:
    check_split(split, "builtin:judged-rated")
    return rated_records(n, seed, k, _percent(noise), split)


register_builtin("judged-pairwise", _judged_pairwise)
register_builtin("judged-ranked", _judged_ranked)
register_builtin("judged-rated", _judged_rated)
