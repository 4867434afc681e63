"""Records back to canonical JSON lines (what the readers and validators accept)."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Iterable

from preference_data.records import SFTRecord


def record_to_dict(record) -> dict:
    """Canonical fields of a record; `source` / `line` and unset optional fields are left out."""
    if isinstance(record, SFTRecord):
        return {"messages": [dict(m) for m in record.messages]}
    out = {}
    for field in dataclasses.fields(record):
        if field.name in ("source", "line"):
            continue
        value = getattr(record, field.name)
        if value is None:
            continue
        if isinstance(value, tuple):
            value = [dict(v) if isinstance(v, dict) else v for v in value]
        out[field.name] = value
    return out


def _write(records: Iterable, handle) -> int:
    count = 0
    for record in records:
        payload = record if isinstance(record, dict) else record_to_dict(record)
        handle.write(json.dumps(payload, ensure_ascii=False) + "\n")
        count += 1
    return count


def write_jsonl(records: Iterable, path: str) -> int:
    """Writes the records as JSON lines; returns the number written.

    A regular file (or a new path) is written atomically: a temporary file, then a rename.
    `-` is standard output, and an existing symlink, device or FIFO (`/dev/stdout`, a named
    pipe) is opened and written through, never replaced.
    """
    path = os.fspath(path)
    if path == "-":
        count = _write(records, sys.stdout)
        sys.stdout.flush()
        return count
    if os.path.islink(path) or (os.path.exists(path) and not os.path.isfile(path)):
        with open(path, "w", encoding="utf-8") as handle:
            return _write(records, handle)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        count = _write(records, handle)
    os.replace(tmp, path)
    return count
