"""Whether a stage's run in its folder was made from the models its upstream stages hand on now.

A finished stage records in ``summary.json`` the fingerprints of the models it started from
(``inputs``, by role: see ``rlhf.stages.inputs``), and every stage's model folder carries its
own (``fingerprint.json``, see ``rlhf.models.fingerprint``). A run is stale when an upstream
stage runs again, or when a recorded fingerprint differs from that of the upstream model
folder now (or none was recorded). Reads files only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlhf.models.fingerprint import model_fingerprint
from rlhf.stages.registry import input_models


def _short(fingerprint: str) -> str:
    return fingerprint[: len("sha256:") + 12]


def _recorded(output_dir: Path, finished: bool) -> dict[str, Any]:
    """The inputs a finished run's summary records, or those an interrupted run's ``run.json``
    recorded when it started."""
    try:
        source = output_dir / ("summary.json" if finished else "run.json")
        inputs = json.loads(source.read_text(encoding="utf-8")).get("inputs")
    except (OSError, ValueError, AttributeError):
        return {}
    return inputs if isinstance(inputs, dict) else {}


def _fingerprint(recorded: dict[str, Any], role: str) -> str | None:
    entry = recorded.get(role)
    return entry.get("fingerprint") if isinstance(entry, dict) else None


def input_changes(
    stage_cfg: Any, output_dir: Path, upstream: dict[str, tuple[str, str]], *, finished: bool
) -> list[str]:
    """Why the run in ``output_dir`` no longer matches its inputs, one reason per upstream stage
    (empty: it matches). ``upstream`` maps each earlier stage to (the model folder it hands on,
    its planned action). An interrupted run (``finished`` false) has no summary yet: it is stale
    when an upstream stage runs again, or when its ``run.json`` records other inputs."""
    used = input_models(stage_cfg)
    recorded = _recorded(output_dir, finished)
    reasons = []
    for name, (handoff, action) in upstream.items():
        roles = [role for role, path in used.items() if path == handoff]
        if not roles:
            continue
        if action != "done":
            reasons.append(f"its input {name} model changed ({name} runs again)")
            continue
        found = {_fingerprint(recorded, role) for role in roles}
        if not finished and None in found:
            continue  # an interrupted run from before run.json recorded inputs
        current = model_fingerprint(handoff)
        if None in found:
            reasons.append(f"its summary records no fingerprint of its input {name} model")
        elif found != {current}:
            old = ", ".join(sorted(_short(f) for f in found))
            reasons.append(f"its input {name} model changed (trained from {old}, now {_short(current)})")
    return reasons
