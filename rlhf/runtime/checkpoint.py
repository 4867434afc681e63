"""Atomic checkpoints: a checkpoint folder exists under its final name only once it is complete.

Layout: ``<output_dir>/checkpoints/step-00000040/`` holding the backend state (model, optimizer,
scheduler, RNG of every process) and ``trainer_state.json`` (step, data position, extra state).
It is written into ``.tmp-step-...`` and renamed when every process has finished writing, so a
crash while saving leaves only a temporary folder that resume ignores.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^step-(\d{8})$")


def checkpoints_root(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / "checkpoints"


def complete_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoints_root(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def resolve_resume(resume_from: str | None, output_dir: str) -> Path | None:
    """The checkpoint to resume from: None, 'latest' (None if there is none yet) or a folder."""
    if not resume_from:
        return None
    if resume_from == "latest":
        found = complete_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume_from)
    if not (path / STATE_FILE).is_file():
        raise FileNotFoundError(
            f"resume_from={resume_from}: not a complete checkpoint (no {STATE_FILE}); "
            f"complete ones in {checkpoints_root(output_dir)}: "
            f"{[p.name for p in complete_checkpoints(output_dir)] or 'none'}"
        )
    return path


def save_checkpoint(backend, output_dir: str, step: int, state: dict[str, Any], keep_last: int = 0) -> Path:
    """Writes a checkpoint atomically (all processes call this). Returns its final path."""
    root = checkpoints_root(output_dir)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    if backend.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    backend.barrier()
    backend.save_state(str(tmp))
    backend.barrier()
    if backend.is_main:
        payload = json.dumps({"step": step, **state}, indent=2)
        (tmp / STATE_FILE).write_text(payload + "\n", encoding="utf-8")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _prune(output_dir, keep_last)
    backend.barrier()
    return final


def read_checkpoint_state(path: Path) -> dict[str, Any]:
    """The trainer state saved with a checkpoint (step, data position, controllers, ...)."""
    return json.loads((Path(path) / STATE_FILE).read_text(encoding="utf-8"))


def load_checkpoint(backend, path: Path) -> dict[str, Any]:
    """Restores the backend state and returns the trainer state (step, data position, ...)."""
    backend.load_state(str(path))
    return json.loads((path / STATE_FILE).read_text(encoding="utf-8"))


def _prune(output_dir: str, keep_last: int) -> None:
    if keep_last <= 0:
        return
    for old in complete_checkpoints(output_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
