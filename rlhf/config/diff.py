"""Which keys of two resolved configs differ, for refusing to mix two runs in one folder."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

# Keys that may change when a run is resumed without making it another run: how long it goes
# on, how it logs and checkpoints, what to do on a non-finite value and how long its processes
# wait for each other. A longer max_steps also stretches the learning-rate decay from the
# resumed step on.
RESUME_SAFE = (
    "max_steps",
    "epochs",
    "eval_steps",
    "output_dir",
    "overwrite",
    "checkpoint.",
    "tracking.",
    "nonfinite.",
    "runtime.",
)


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _ignored(key: str, ignore: Iterable[str]) -> bool:
    return any(key == v or (v.endswith(".") and key.startswith(v)) for v in ignore)


def _same(a: Any, b: Any) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and a != a and b != b)  # NaN == NaN


def config_changes(saved: dict, planned: dict, ignore: Iterable[str] = ()) -> list[str]:
    """``key: old -> new`` for every key that differs, those in ``ignore`` aside (a name ending
    in '.' ignores the whole section)."""
    old, new = flatten(saved), flatten(planned)
    ignore = tuple(ignore)
    changes = []
    for key in sorted(set(old) | set(new)):
        if _ignored(key, ignore):
            continue
        if not _same(old.get(key, "<absent>"), new.get(key, "<absent>")):
            changes.append(f"{key}: {old.get(key, '<absent>')!r} -> {new.get(key, '<absent>')!r}")
    return changes


def shown(changes: list[str], limit: int = 6) -> str:
    """The first ``limit`` changes on one line."""
    more = f"; and {len(changes) - limit} more" if len(changes) > limit else ""
    return "; ".join(changes[:limit]) + more
