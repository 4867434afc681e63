"""The one place that decides what a valid record is (rule 5 of docs/design.md).

A rejected record is never silently dropped: it is counted in a `ValidationReport` under a
reason *kind* (for the summary), and written with its detailed reason, source file and line to
a `Quarantine` file. Totals reconcile: read == accepted + rejected.
Every message reads `path/file.jsonl:17: field 'completion' is empty`.

This module holds the shared machinery and the SFT checker; the preference kinds (prompt,
pairwise, ranked, rated) and the generic `load_kind` are in `validate_preferences`.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields

from preference_data.readers import iter_rows, type_name
from preference_data.records import ASSISTANT, ROLES, SYSTEM, USER, SFTRecord, message


class DataError(ValueError):
    """The data cannot be used as given: a rejection in strict mode, or nothing valid left.

    `report` is the `ValidationReport` of the load up to that point (None when not known).
    """

    def __init__(self, message: str, report: ValidationReport | None = None):
        super().__init__(message)
        self.report = report


class Rejected(Exception):
    """A record is not valid. `reason` is the detailed message, `kind` the group it is counted in."""

    def __init__(self, reason: str, kind: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.kind = kind or reason_kind(reason)


# Reasons are grouped by the phrase they contain; the first match wins (specific ones first).
_KINDS = (
    ("not valid JSON", "not valid JSON"),
    ("nested too deep", "nested too deep"),
    ("truncated archive", "truncated archive"),
    ("record too large", "record too large"),
    ("not valid CSV", "not valid CSV"),
    ("invalid UTF-8", "invalid UTF-8"),
    ("invalid Unicode", "invalid UTF-8"),
    ("too long", "too long"),
    ("longer than", "too long"),
    ("has both", "ambiguous format"),
    ("several kinds", "ambiguous format"),
    ("record kind", "unknown kind"),
    ("do not share a prompt", "prompt mismatch"),
    ("dialogue", "bad conversation"),
    ("are identical", "identical responses"),
    ("duplicates", "identical responses"),
    ("need at least", "too few responses"),
    (" ranks for ", "count mismatch"),
    (" scores for ", "count mismatch"),
    ("no preference", "no preference"),
    ("scores of a record", "inconsistent scores"),
    ("no numeric rating", "missing score"),
    ("only text parts", "unsupported content"),
    ("not finite", "invalid value"),
    ("float32 range", "invalid value"),
    ("is negative", "invalid value"),
    ("is not a number", "invalid value"),
    ("conversation", "bad conversation"),
    ("only allowed", "bad conversation"),
    ("no assistant turn", "bad conversation"),
    (" is missing", "missing field"),
    (" is empty", "empty field"),
    ("is not one of", "invalid value"),
    ("must be", "wrong type"),
    ("expected a JSON", "wrong type"),
    ("cells, header has", "malformed row"),
)


def reason_kind(reason: str) -> str:
    """The group a detailed reason is counted under in `ValidationReport.reasons`."""
    return next((kind for phrase, kind in _KINDS if phrase in reason), "other")


def where(source: str, line: int) -> str:
    return f"{source}:{line}"


# --- SFT -------------------------------------------------------------------------------------


# The largest finite float32, torch.finfo(torch.float32).max (the standard library spells it
# exactly). Margins and scores become float32 tensors in training, where a larger one is inf.
FLOAT32_MAX = float.fromhex("0x1.fffffep+127")


def finite_float32(number: float, label: str) -> float:
    """``number`` when it is finite and within float32's range; Rejected naming ``label`` if not."""
    if not math.isfinite(number):
        raise Rejected(f"{label} is not finite")
    # Also catches values just above the max that float32 rounds to inf (from max + half a step).
    if abs(number) > FLOAT32_MAX:
        raise Rejected(f"{label} is {number!r}, beyond the float32 range (magnitude at most {FLOAT32_MAX!r})")
    return number


def _text(value: object, label: str, expected: str) -> str:
    if value is None:
        raise Rejected(f"{label} is empty")
    if not isinstance(value, str):
        raise Rejected(f"{label} must be {expected}, got {type_name(value)}")
    if not value.strip():
        raise Rejected(f"{label} is empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # JSON "\ud800" escapes decode to lone surrogates, which tokenizers cannot take later.
        raise Rejected(f"{label} has invalid Unicode (a lone surrogate)") from None
    return value


def _messages(value: object, name: str) -> list[dict]:
    if not isinstance(value, list):
        raise Rejected(f"field '{name}' must be a list of messages, got {type_name(value)}")
    if not value:
        raise Rejected(f"field '{name}' is empty")
    result = []
    for i, item in enumerate(value):
        label = f"{name}[{i}]"
        if not isinstance(item, dict):
            raise Rejected(f"{label} must be an object with 'role' and 'content', got {type_name(item)}")
        for key in ("role", "content"):
            if key not in item:
                raise Rejected(f"{label}.{key} is missing")
        role = item["role"]
        if not isinstance(role, str):
            raise Rejected(f"{label}.role must be a string, got {type_name(role)}")
        if role not in ROLES:
            raise Rejected(f"{label}.role {role!r} is not one of {', '.join(ROLES)}")
        if role == SYSTEM and i > 0:
            raise Rejected(f"{label}.role 'system' is only allowed as the first message")
        result.append(message(role, _text(item["content"], f"{label}.content", "a string")))
    return result


def _prompt_completion(data: dict) -> list[dict]:
    for name in ("prompt", "completion"):
        if name not in data:
            raise Rejected(f"field '{name}' is missing")
    prompt = data["prompt"]
    if isinstance(prompt, list):
        prefix = _messages(prompt, "prompt")
        if prefix[-1]["role"] != USER:
            raise Rejected(f"conversation in 'prompt' must end with a user turn, got {prefix[-1]['role']}")
    else:
        prefix = [message(USER, _text(prompt, "field 'prompt'", "a string or a list of messages"))]
    completion = _text(data["completion"], "field 'completion'", "a string")
    return [*prefix, message(ASSISTANT, completion)]


def check_sft(data: object, source: str = "<memory>", line: int = 0) -> SFTRecord:
    """Validate one SFT record and return it normalised; raise `Rejected(reason)` if invalid.

    Accepted forms: {"prompt": str | [messages], "completion": str} or {"messages": [...]},
    each with an optional "system" string that becomes a leading system message.
    """
    if not isinstance(data, dict):
        raise Rejected(f"expected a JSON object, got {type_name(data)}")
    # A null column (csv/parquet with both schemas mixed) does not count as choosing that form.
    has_messages = data.get("messages") is not None
    if has_messages and (data.get("prompt") is not None or data.get("completion") is not None):
        raise Rejected("record has both 'messages' and 'prompt'/'completion'; give one form")
    if has_messages:
        messages = _messages(data["messages"], "messages")
    elif "prompt" in data or "completion" in data:
        messages = _prompt_completion(data)
    elif "messages" in data:
        raise Rejected("field 'messages' is empty")
    else:
        raise Rejected("field 'messages' is missing (or give 'prompt' and 'completion')")

    system = data.get("system")
    if system is not None and system != "":
        system = _text(system, "field 'system'", "a string")
        if messages[0]["role"] == SYSTEM:
            raise Rejected("record has both a 'system' field and a system message")
        messages.insert(0, message(SYSTEM, system))

    roles = [m["role"] for m in messages]
    if ASSISTANT not in roles:
        raise Rejected("no assistant turn with content")
    first = roles[1] if roles[0] == SYSTEM else roles[0]
    if first != USER:
        raise Rejected(f"conversation must start with a user turn (after an optional system message), got {first}")
    if roles[-1] != ASSISTANT:
        raise Rejected(f"conversation must end with an assistant turn, got {roles[-1]}")
    return SFTRecord(tuple(messages), source, line)


# --- Quarantine and report -------------------------------------------------------------------


class Quarantine:
    """Rejected records as JSON lines: {"source", "line", "reason", "record"}.

    The file is created at the first rejection (a clean run leaves no file) and truncated then,
    so one file describes one run; writes after `close()` reopen it in append mode. Each line
    is flushed, so the file is complete even if the run dies later. `path=None` only counts.
    """

    def __init__(self, path: str | None):
        self.path = None if path is None else os.fspath(path)
        self.count = 0
        self._file = None
        self._created = False

    def add(self, source: str, line: int, reason: str, record: object) -> None:
        self.count += 1
        if self.path is None:
            return
        if self._file is None:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            # backslashreplace: a lone surrogate in a rejected record must not crash the write.
            self._file = open(self.path, "a" if self._created else "w", encoding="utf-8", errors="backslashreplace")
            self._created = True
        entry = {"source": source, "line": line, "reason": reason, "record": record}
        self._file.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> Quarantine:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


@dataclass
class ValidationReport:
    """Counts of one load. `reasons` counts rejections per reason kind; details are in the quarantine."""

    read: int = 0
    accepted: int = 0
    rejected: int = 0
    reasons: Counter = field(default_factory=Counter)
    sources: list[str] = field(default_factory=list)
    quarantine: Quarantine = field(default_factory=lambda: Quarantine(None), repr=False)

    def accept(self) -> None:
        self.read += 1
        self.accepted += 1

    def reject(self, source: str, line: int, reason: str, record: object, *, kind: str | None = None) -> None:
        """Count one rejected row and quarantine it (`record`: the parsed object, or the raw text)."""
        self.read += 1
        self.rejected += 1
        self.reasons[kind or reason_kind(reason)] += 1
        self.quarantine.add(source, line, reason, record)

    def reject_accepted(self, record, reason: str, *, kind: str | None = None) -> None:
        """Move an already-accepted record to rejected (e.g. too long once tokenised)."""
        if self.accepted <= 0:
            raise ValueError("no accepted record left to reject")
        self.accepted -= 1
        self.rejected += 1
        self.reasons[kind or reason_kind(reason)] += 1
        body = {f.name: getattr(record, f.name) for f in fields(record) if f.name not in ("source", "line")}
        self.quarantine.add(record.source, record.line, reason, body)

    def to_dict(self) -> dict:
        assert self.read == self.accepted + self.rejected, (
            f"report does not reconcile: read {self.read} != {self.accepted} accepted + {self.rejected} rejected"
        )
        assert sum(self.reasons.values()) == self.rejected, "reason counts do not add up to rejected"
        return {
            "read": self.read,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "reasons": dict(self.reasons.most_common()),
            "sources": list(self.sources),
            "quarantine": self.quarantine.path,
        }

    def summary(self) -> str:
        sources = ", ".join(self.sources) or "no sources"
        lines = [f"read {self.read} records from {sources}: {self.accepted} accepted, {self.rejected} rejected"]
        width = max((len(str(n)) for n in self.reasons.values()), default=1)
        lines += [f"  {n:>{width}}  {kind}" for kind, n in self.reasons.most_common()]
        if self.rejected:
            lines.append(
                f"rejected records with reasons: {self.quarantine.path}"
                if self.quarantine.path
                else "rejected records were not written (no quarantine path)"
            )
        return "\n".join(lines)


# --- Loading ---------------------------------------------------------------------------------


# Largest record accepted by default (1 MiB of UTF-8 JSON): far above any real conversation, and
# small enough that one bad record cannot exhaust memory in tokenisation or dedup.
DEFAULT_MAX_RECORD_BYTES = 1 << 20


def load_records(
    paths: str | Iterable[str],
    check: Callable[[object, str, int], object],
    *,
    field_map: dict[str, str] | None = None,
    max_record_bytes: int | None = DEFAULT_MAX_RECORD_BYTES,
    quarantine_path: str | None,
    strict: bool = False,
    what: str = "records",
    keep: bool = True,
    progress: bool = False,
) -> tuple[list, ValidationReport]:
    """Read every path, keep what `check` accepts, quarantine the rest.

    strict=True raises DataError at the first rejection (`file:line: reason`). DataError is also
    raised, with the summary, when nothing valid remains; its `report` attribute holds the
    counts so far. A record larger than `max_record_bytes` (None = no limit) is quarantined as
    "record too large" without being parsed (see `readers.iter_rows`).
    """
    paths = [os.fspath(paths)] if isinstance(paths, (str, os.PathLike)) else [os.fspath(p) for p in paths]
    report = ValidationReport(quarantine=Quarantine(quarantine_path))
    records = []
    with report.quarantine:
        for path in paths:
            report.sources.append(path)
            rows = iter_rows(path, field_map=field_map, max_record_bytes=max_record_bytes)
            if progress:
                from tqdm.auto import tqdm  # late: only the command line asks for a bar

                rows = tqdm(rows, desc=os.path.basename(path), unit=" rec", mininterval=0.5)
            for row in rows:
                try:
                    if row.error is not None:
                        raise Rejected(row.error)
                    record = check(row.data, row.source, row.line)
                except Rejected as rejected:
                    if strict:
                        raise DataError(f"{where(row.source, row.line)}: {rejected.reason}", report) from None
                    report.reject(
                        row.source,
                        row.line,
                        rejected.reason,
                        row.data if row.data is not None else row.raw,
                        kind=rejected.kind,
                    )
                    continue
                report.accept()
                if keep:  # keep=False validates in bounded memory: only the counts remain
                    records.append(record)
    if not report.accepted:
        raise DataError(f"no valid {what} in {', '.join(paths) or 'no paths'}\n{report.summary()}", report)
    return records, report


def load_sft(
    paths: str | Iterable[str],
    *,
    field_map: dict[str, str] | None = None,
    quarantine_path: str | None,
    strict: bool = False,
    max_record_bytes: int | None = DEFAULT_MAX_RECORD_BYTES,
) -> tuple[list[SFTRecord], ValidationReport]:
    """Load SFT records from jsonl/json/csv/parquet/dataset folders/builtins; see `load_records`."""
    return load_records(
        paths,
        check_sft,
        field_map=field_map,
        quarantine_path=quarantine_path,
        strict=strict,
        what="SFT records",
        max_record_bytes=max_record_bytes,
    )
