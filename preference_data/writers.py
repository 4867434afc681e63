"""Records back to canonical JSON lines (what the readers and validators accept)."""

from __future__ import annotations

import dataclasses
import json
import os
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


def write_jsonl(records: Iterable, path: str) -> int:
    """Writes atomically (temporary file, then rename); returns the number of records written."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp"
    count = 0
    with open(tmp, "w", encoding="utf-8") as handle:
        for record in records:
            payload = record if isinstance(record, dict) else record_to_dict(record)
            handle.write(json.dumps(payload, ensure_ascii=False) + "\n")
            count += 1
    os.replace(tmp, path)
    return count
