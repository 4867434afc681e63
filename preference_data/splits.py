"""Deduplication, train / eval split by prompt, and seeded shuffling of records of any kind."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from collections.abc import Iterable, Mapping, Sequence

from preference_data.records import prompt_key
from preference_data.transforms import TransformReport, where


def dedup(records: Iterable, *, normalise: bool = False) -> tuple[list, TransformReport]:
    """Drop records whose content repeats an earlier record's (first occurrence kept).

    Content is every field except `source` and `line` (so the same pair from two annotators is
    two votes, not a duplicate), and the record's kind. With `normalise=True`, text is compared
    with runs of whitespace collapsed to one space, ends stripped and case folded. Each dropped
    record is listed in `report.duplicate_of` with the `source:line` of the record it repeats.
    """
    report = TransformReport()
    first_seen: dict[str, object] = {}
    kept: list = []
    for record in records:
        report.records_in += 1
        key = canonical_key(record, normalise=normalise)
        original = first_seen.get(key)
        if original is None:
            first_seen[key] = record
            kept.append(record)
        else:
            report.duplicates += 1
            report.duplicate_of.append({"dropped": where(record), "kept": where(original)})
    report.records_out = len(kept)
    return kept, report


def canonical_key(record, *, normalise: bool = False) -> str:
    """A text key equal for records with the same content (all fields but source and line)."""
    content = {f.name: getattr(record, f.name) for f in dataclasses.fields(record) if f.name not in ("source", "line")}
    if normalise:
        content = _normalised(content)
    return type(record).__name__ + json.dumps(content, sort_keys=True, ensure_ascii=False, default=repr)


def _normalised(value):
    if isinstance(value, str):
        return " ".join(value.split()).casefold()
    if isinstance(value, Mapping):
        return {k: _normalised(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalised(v) for v in value]
    return value


def split_by_prompt(records: Sequence, eval_fraction: float, seed: int) -> tuple[list, list]:
    """(train, eval) split by prompt: every record of a prompt goes to the same side.

    A prompt goes to eval when a seeded hash of its `prompt_key` falls below `eval_fraction`, so
    the split is deterministic, independent of record order and of the other prompts, and the
    eval share of *prompts* is close to `eval_fraction` (a binomial draw, not exact). Records keep
    their order within each side; nothing is dropped.
    """
    if not 0.0 <= eval_fraction <= 1.0:
        raise ValueError(f"eval_fraction must be in [0, 1], got {eval_fraction}")
    train, evaluation = [], []
    decided: dict[str, bool] = {}
    for record in records:
        key = prompt_key(record.prompt)
        if key not in decided:
            digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
            decided[key] = int.from_bytes(digest[:8], "big") / 2**64 < eval_fraction
        (evaluation if decided[key] else train).append(record)
    return train, evaluation


def shuffle(records: Iterable, seed: int) -> list:
    """A shuffled copy (`random.Random(seed)`): the same seed gives the same order."""
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)
    return shuffled
