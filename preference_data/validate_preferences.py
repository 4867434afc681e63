"""Validation of the preference record kinds, and `load_kind`, the one loader for every kind.

Same contract as `validate.check_sft`: a checker takes `(data, source, line)`, returns the
normalised record or raises `Rejected(reason)`; `load_kind` quarantines what is rejected, so
read == accepted + rejected. A prompt is plain text or a conversation prefix (a list of
messages, validated like an SFT conversation) ending with a user turn.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import fields

from preference_data.adapters import ADAPTERS
from preference_data.readers import type_name
from preference_data.records import (
    ASSISTANT,
    SYSTEM,
    USER,
    PairwiseRecord,
    PromptRecord,
    RankedRecord,
    RatedRecord,
    SFTRecord,
)
from preference_data.text_budget import char_budget
from preference_data.validate import (
    DEFAULT_MAX_RECORD_BYTES,
    Rejected,
    ValidationReport,
    _messages,
    _text,
    check_sft,
    finite_float32,
    load_records,
    where,
)


def _require(data: object, *names: str) -> dict:
    if not isinstance(data, dict):
        raise Rejected(f"expected a JSON object, got {type_name(data)}")
    for name in names:
        if name not in data:
            raise Rejected(f"field '{name}' is missing")
    return data


def _prompt(value: object) -> str | tuple[dict, ...]:
    if not isinstance(value, (list, tuple)):
        return _text(value, "field 'prompt'", "a string or a list of messages")
    messages = _messages(list(value), "prompt")
    roles = [m["role"] for m in messages]
    if roles[-1] != USER:
        raise Rejected(f"conversation in 'prompt' must end with a user turn, got {roles[-1]}")
    first = roles[1] if roles[0] == SYSTEM else roles[0]
    if first != USER:
        raise Rejected(
            f"conversation in 'prompt' must start with a user turn (after an optional system message), got {first}"
        )
    return tuple(messages)


def _response(value: object, label: str, path: str) -> str:
    """A response as text. `label` names it in messages ("field 'chosen'"), `path` prefixes its
    parts ("chosen.content")."""
    # Conversational datasets (TRL style) store a completion as [{"role": "assistant", ...}].
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0]
    if isinstance(value, dict):
        role = value.get("role")
        if role != ASSISTANT:
            raise Rejected(f"{label} must be an assistant message, got role {role!r}")
        if "content" not in value:
            raise Rejected(f"{path}.content is missing")
        return _text(value["content"], f"{path}.content", "a string")
    if isinstance(value, list):
        if not value:
            raise Rejected(f"{label} is empty")
        raise Rejected(f"{label} must be a string or one assistant message, got a list of {len(value)} items")
    return _text(value, label, "a string or an assistant message")


def _number(value: object, label: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Rejected(f"{label} must be a number, got {type_name(value)}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range
        number = math.inf
    return finite_float32(number, label)


def _optional_string(data: dict, name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise Rejected(f"field '{name}' must be a string, got {type_name(value)}")
    # An empty cell means "not given" (csv exports), not an annotator called "".
    return value.strip() or None


def _responses(data: dict, minimum: int) -> tuple[str, ...]:
    value = data["responses"]
    if not isinstance(value, (list, tuple)):
        raise Rejected(f"field 'responses' must be a list, got {type_name(value)}")
    if not value:
        raise Rejected("field 'responses' is empty")
    if len(value) < minimum:
        raise Rejected(f"K < {minimum}: need at least {minimum} responses")
    responses = tuple(_response(item, f"responses[{i}]", f"responses[{i}]") for i, item in enumerate(value))
    # Whitespace-only differences are the same answer: as a pair they would teach nothing.
    first_index: dict[str, int] = {}
    for i, text in enumerate(responses):
        j = first_index.setdefault(text.strip(), i)
        if j != i:
            raise Rejected(f"responses[{i}] duplicates responses[{j}]")
    return responses


# --- Checkers --------------------------------------------------------------------------------


def check_prompt(data: object, source: str = "<memory>", line: int = 0) -> PromptRecord:
    """{"prompt": str | [messages ending with a user turn], "metadata"?: {...}} -> PromptRecord."""
    data = _require(data, "prompt")
    metadata = data.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise Rejected(f"field 'metadata' must be a JSON object, got {type_name(metadata)}")
    return PromptRecord(_prompt(data["prompt"]), source, line, metadata)


def check_pairwise(data: object, source: str = "<memory>", line: int = 0) -> PairwiseRecord:
    """{"prompt", "chosen", "rejected", "margin"?, "annotator"?, "group"?} -> PairwiseRecord.

    chosen / rejected are strings, or an assistant message (alone or in a 1-element list).
    """
    data = _require(data, "prompt", "chosen", "rejected")
    prompt = _prompt(data["prompt"])
    chosen = _response(data["chosen"], "field 'chosen'", "chosen")
    rejected = _response(data["rejected"], "field 'rejected'", "rejected")
    if chosen.strip() == rejected.strip():
        raise Rejected("chosen and rejected are identical")
    margin = data.get("margin")
    margin = None if margin is None else _number(margin, "field 'margin'")
    return PairwiseRecord(
        prompt,
        chosen,
        rejected,
        margin,
        _optional_string(data, "annotator"),
        _optional_string(data, "group"),
        source,
        line,
    )


def check_ranked(data: object, source: str = "<memory>", line: int = 0) -> RankedRecord:
    """{"prompt", "responses": [K >= 2], "ranks": [K ints >= 0, 0 = best], "annotator"?}."""
    data = _require(data, "prompt", "responses", "ranks")
    prompt = _prompt(data["prompt"])
    responses = _responses(data, minimum=2)
    ranks = data["ranks"]
    if not isinstance(ranks, (list, tuple)):
        raise Rejected(f"field 'ranks' must be a list of integers, got {type_name(ranks)}")
    if len(ranks) != len(responses):
        raise Rejected(f"{len(ranks)} ranks for {len(responses)} responses")
    for i, rank in enumerate(ranks):
        # 1.0 is refused too: a fractional rank in the file means the column is not what we think.
        if isinstance(rank, bool) or not isinstance(rank, int):
            raise Rejected(f"ranks[{i}] must be an integer, got {type_name(rank)}")
        if rank < 0:
            raise Rejected(f"ranks[{i}] is negative ({rank}); 0 is the best rank")
    if len(set(ranks)) == 1:
        raise Rejected("all ranks are equal: no preference to learn")
    return RankedRecord(prompt, responses, tuple(ranks), _optional_string(data, "annotator"), source, line)


def _score(value: object, label: str) -> float | dict[str, float]:
    if isinstance(value, dict):
        if not value:
            raise Rejected(f"{label} is empty")
        return {str(name): _number(v, f"{label}.{name}") for name, v in value.items()}
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Rejected(f"{label} must be a number or an object of numbers, got {type_name(value)}")
    return _number(value, label)


def check_rated(data: object, source: str = "<memory>", line: int = 0) -> RatedRecord:
    """{"prompt", "responses": [K >= 1], "scores": [K numbers | K objects of named numbers]}.

    K = 1 is accepted (usable for regression); transforms that need pairs skip it.
    """
    data = _require(data, "prompt", "responses", "scores")
    prompt = _prompt(data["prompt"])
    responses = _responses(data, minimum=1)
    raw = data["scores"]
    if not isinstance(raw, (list, tuple)):
        raise Rejected(f"field 'scores' must be a list, got {type_name(raw)}")
    if len(raw) != len(responses):
        raise Rejected(f"{len(raw)} scores for {len(responses)} responses")
    scores = tuple(_score(value, f"scores[{i}]") for i, value in enumerate(raw))
    # Pairs and regression compare scores across responses: mixed kinds or attribute sets
    # would compare different things.
    first = scores[0]
    for i, score in enumerate(scores[1:], start=1):
        if isinstance(score, dict) != isinstance(first, dict):
            kinds = ("an object" if isinstance(s, dict) else "a number" for s in (score, first))
            raise Rejected(
                "scores[{}] is {} but scores[0] is {}; all scores of a record must be of one kind".format(i, *kinds)
            )
        if isinstance(score, dict) and score.keys() != first.keys():
            raise Rejected(
                f"scores[{i}] has keys {', '.join(sorted(score))} but scores[0] has "
                f"{', '.join(sorted(first))}; all scores of a record must have the same keys"
            )
    return RatedRecord(prompt, responses, scores, _optional_string(data, "annotator"), source, line)


KINDS: dict[str, Callable[[object, str, int], object]] = {
    "sft": check_sft,
    "pairwise": check_pairwise,
    "ranked": check_ranked,
    "rated": check_rated,
    "prompt": check_prompt,
}

# The fields that identify each kind (a null column, as in mixed csv/parquet schemas, is absent).
_SIGNATURES = (
    ("pairwise", ("chosen", "rejected")),
    ("ranked", ("responses", "ranks")),
    ("rated", ("responses", "scores")),
    ("sft", ("messages",)),
    ("sft", ("completion",)),
)


def detect_kind(data: object) -> str:
    """The record kind its fields say (for `--kind auto`); raise `Rejected` if none or several.

    A record with only a prompt is a "prompt" record.
    """
    if not isinstance(data, dict):
        raise Rejected(f"expected a JSON object, got {type_name(data)}")
    present = {name for name, value in data.items() if value is not None}
    found = sorted({kind for kind, names in _SIGNATURES if present.issuperset(names)})
    if len(found) > 1:
        raise Rejected(f"record has fields of several kinds ({', '.join(found)}); pass the kind")
    if found:
        return found[0]
    if "prompt" in present:
        return "prompt"
    raise Rejected(
        f"cannot tell the record kind from fields {', '.join(sorted(data)) or '(none)'}; "
        "expected chosen/rejected, responses/ranks, responses/scores, messages, "
        "prompt/completion or prompt"
    )


# --- Loading ---------------------------------------------------------------------------------


def content_key(record) -> bytes:
    """A 16-byte digest of what a record says: every field but `source` and `line`.

    The annotator stays in: several annotators judging the same item are not duplicates.
    """
    body = {f.name: getattr(record, f.name) for f in fields(record) if f.name not in ("source", "line")}
    text = json.dumps([type(record).__name__, body], sort_keys=True)
    return hashlib.blake2b(text.encode("ascii"), digest_size=16).digest()


def _prompt_and_responses(record) -> tuple[list[str], list[str]]:
    if isinstance(record, SFTRecord):
        return [m["content"] for m in record.prompt], [record.completion]
    prompt = record.prompt
    prompt_texts = [prompt] if isinstance(prompt, str) else [m["content"] for m in prompt]
    if isinstance(record, PairwiseRecord):
        return prompt_texts, [record.chosen, record.rejected]
    if isinstance(record, PromptRecord):
        return prompt_texts, []
    return prompt_texts, list(record.responses)


def longest_tokens(record, tokenizer, max_tokens: int | None = None) -> int:
    """Tokens of the prompt plus its longest response (message contents, no special tokens).

    `tokenizer` follows the transformers call convention:
    `tokenizer(list_of_texts, add_special_tokens=False)["input_ids"]`. Chat-template tokens are
    not counted: this is an early filter, and collation still checks the exact length.
    With `max_tokens`, each text is cut to `text_budget.char_budget(max_tokens)` characters
    first, so the count is exact up to max_tokens and only "more than max_tokens" beyond it.
    """
    prompt_texts, responses = _prompt_and_responses(record)
    texts = prompt_texts + responses
    if max_tokens is not None:
        budget = char_budget(max_tokens)
        texts = [text[:budget] for text in texts]
    counts = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    return sum(counts[: len(prompt_texts)]) + max(counts[len(prompt_texts) :], default=0)


def load_kind(
    paths: str | Iterable[str],
    kind: str,
    *,
    field_map: dict[str, str] | None = None,
    quarantine_path: str | None,
    strict: bool = False,
    dedup: bool = True,
    max_tokens: int | None = None,
    tokenizer=None,
    adapter: str | None = None,
    keep: bool = True,
    progress: bool = False,
    max_record_bytes: int | None = DEFAULT_MAX_RECORD_BYTES,
) -> tuple[list, ValidationReport]:
    """Load records of one kind ("sft", "pairwise", "ranked", "rated", "prompt", or "auto").

    Each row goes: field_map -> adapter (see `adapters.ADAPTERS`) -> the kind's checker ->
    dedup -> length limit; any failure is quarantined with `file:line` (see `load_records`).
    kind="auto" takes the adapter's kind, else the kind `detect_kind` finds in the first row
    that parses; later rows must be of that kind.
    dedup=True rejects a record whose content equals an earlier accepted one ("duplicate of
    file:line"); only 16-byte digests are kept for it, rows are not.
    max_tokens with a tokenizer rejects records whose prompt + longest response is longer.
    """
    if (max_tokens is None) != (tokenizer is None):
        raise ValueError("max_tokens and tokenizer go together: give both or neither")
    convert = None
    if adapter is not None:
        if adapter not in ADAPTERS:
            raise ValueError(f"unknown adapter {adapter!r}; known: {', '.join(sorted(ADAPTERS))}")
        convert, adapter_kind = ADAPTERS[adapter]
        if kind == "auto":
            kind = adapter_kind
        elif kind != adapter_kind:
            raise ValueError(f"adapter {adapter!r} gives {adapter_kind} records, not {kind}")
    if kind != "auto" and kind not in KINDS:
        raise ValueError(f"unknown record kind {kind!r}; expected auto or one of {', '.join(KINDS)}")

    resolved = None if kind == "auto" else kind
    first_seen: dict[bytes, tuple[str, int]] = {}

    def check(data: object, source: str, line: int):
        nonlocal resolved
        if convert is not None:
            data = convert(data)
        if resolved is None:
            resolved = detect_kind(data)
        record = KINDS[resolved](data, source, line)
        key = content_key(record) if dedup else None
        if key in first_seen:
            raise Rejected(f"duplicate of {where(*first_seen[key])}", "duplicate")
        if tokenizer is not None:
            length = longest_tokens(record, tokenizer, max_tokens)
            if length > max_tokens:
                raise Rejected(f"too long: {length} tokens > max_tokens {max_tokens}")
        # Registered only once accepted, so "duplicate of" always points at a kept record.
        if key is not None:
            first_seen[key] = (source, line)
        return record

    what = "SFT records" if kind == "sft" else "records" if kind == "auto" else f"{kind} records"
    return load_records(
        paths,
        check,
        field_map=field_map,
        quarantine_path=quarantine_path,
        strict=strict,
        what=what,
        keep=keep,
        progress=progress,
        max_record_bytes=max_record_bytes,
    )
