"""Atomic, verified checkpoints: a checkpoint folder exists under its final name only once it is complete.

Layout: ``<output_dir>/checkpoints/step-00000040/`` holding the training state (see
:mod:`rlhf.runtime.training_state`: weights, optimizer, scheduler, RNG of every process, all
safetensors or JSON) and ``trainer_state.json`` (step, data position, extra state, the config the
run trained with, and a manifest of every file with its size). It is written into
``.tmp-step-...``, every file and the folder are fsynced, and it is renamed when every process has
finished writing, so a crash while saving leaves only a temporary folder that resume ignores.

Resume checks a checkpoint before loading it: the state file must parse, be of this format, and
every file in the manifest must be there with its size and a readable header. ``latest`` falls
back to the newest intact checkpoint, with a warning naming what was damaged.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from rlhf.runtime.safe_state import TREE_KEY, StateFileError, fsync_path, write_bytes_durably

STATE_FILE = "trainer_state.json"
FORMAT = 2  # 1: accelerate's save_state (pickled RNG / scheduler), never loaded
_NAME = re.compile(r"^step-(\d{8})$")


class CheckpointError(RuntimeError):
    """No checkpoint can be resumed as asked (message names the folders and files)."""


def checkpoints_root(output_dir: str | os.PathLike) -> Path:
    return Path(output_dir) / "checkpoints"


def complete_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints (renamed into place), oldest first; not yet checked for damage."""
    root = checkpoints_root(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))


def read_checkpoint_state(path: str | os.PathLike) -> dict[str, Any]:
    """The trainer state saved with a checkpoint (step, data position, controllers, config, ...)."""
    state_file = Path(path) / STATE_FILE
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise StateFileError(state_file, "is missing") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StateFileError(state_file, f"is empty or damaged ({err})") from err
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise StateFileError(state_file, "holds no step number")
    return state


def verify_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The trainer state of an intact checkpoint; raises StateFileError naming the damaged file."""
    path = Path(path)
    state = read_checkpoint_state(path)
    if state.get("format") != FORMAT:
        raise StateFileError(
            path / STATE_FILE,
            "was written by an older version that pickled part of the state; it is not loaded "
            "(loading a pickle can run code). Start the stage afresh, or resume from a newer checkpoint",
        )
    manifest = state.get("files")
    if not isinstance(manifest, dict) or not manifest:
        raise StateFileError(path / STATE_FILE, "has no manifest of the checkpoint's files")
    for name, size in manifest.items():
        file = path / name
        if not file.is_file():
            raise StateFileError(file, "is missing")
        if file.stat().st_size != size:
            raise StateFileError(file, f"has {file.stat().st_size} bytes, {size} were written (truncated?)")
        if file.suffix in (".safetensors", ".pt"):  # .pt: DeepSpeed's names for our state files
            _check_header(file)
        elif file.suffix == ".json":
            try:
                json.loads(file.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError) as err:
                raise StateFileError(file, f"is damaged ({err})") from err
    return state


def _check_header(file: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as handle:
            json.loads((handle.metadata() or {})[TREE_KEY])
    except Exception as err:  # safetensors raises its own error type for bad headers
        raise StateFileError(file, f"is damaged ({err})") from err


def _warn(message: str) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"warning: {message}", file=sys.stderr, flush=True)


def resume_candidates(resume_from: str | None, output_dir: str) -> list[Path]:
    """The checkpoints to try, best first: none; for 'latest' every intact checkpoint, newest
    first (damaged newer ones skipped with a warning naming the file); or the one folder given.

    If checkpoints exist but none is intact, the run stops rather than silently starting afresh.
    """
    if not resume_from:
        return []
    if resume_from == "latest":
        found = complete_checkpoints(output_dir)
        problems, intact = [], []
        for path in reversed(found):
            try:
                verify_checkpoint(path)
            except StateFileError as err:
                problems.append(str(err))
                continue
            intact.append(path)
        if intact:
            for problem in problems:
                _warn(f"skipping a damaged checkpoint: {problem}; resuming from {intact[0].name}")
            return intact
        if problems:
            raise CheckpointError(
                f"resume_from=latest: no intact checkpoint in {checkpoints_root(output_dir)}:\n  "
                + "\n  ".join(problems)
            )
        return []
    path = Path(resume_from)
    if not (path / STATE_FILE).is_file():
        raise CheckpointError(
            f"resume_from={resume_from}: not a complete checkpoint (no {STATE_FILE}); "
            f"complete ones in {checkpoints_root(output_dir)}: "
            f"{[p.name for p in complete_checkpoints(output_dir)] or 'none'}"
        )
    try:
        verify_checkpoint(path)
    except StateFileError as err:
        raise CheckpointError(f"resume_from={resume_from}: {err}") from err
    return [path]


def resolve_resume(resume_from: str | None, output_dir: str) -> Path | None:
    """The checkpoint to resume from: None, 'latest' (None if there is none yet) or a folder."""
    found = resume_candidates(resume_from, output_dir)
    return found[0] if found else None


def set_aside_newer(output_dir: str, resumed: Path) -> list[Path]:
    """Moves the checkpoints newer than ``resumed`` (damaged ones, or those of a run resumed from
    an earlier point) into ``checkpoints/abandoned-<time>/``, so that a later 'latest' or
    keep_last never mixes them with this run's. Main process only; returns where they went."""
    match = _NAME.match(Path(resumed).name)
    root = checkpoints_root(output_dir)
    if match is None or Path(resumed).parent.resolve() != root.resolve():
        return []
    newer = [
        p for p in root.iterdir() if _NAME.match(p.name) and int(_NAME.match(p.name).group(1)) > int(match.group(1))
    ]
    if not newer:
        return []
    aside = root / time.strftime("abandoned-%Y%m%d-%H%M%S")
    aside.mkdir(parents=True, exist_ok=True)
    moved = []
    for path in sorted(newer):
        os.replace(path, aside / path.name)
        moved.append(aside / path.name)
    _warn(f"moved {len(moved)} checkpoint(s) newer than {Path(resumed).name} to {aside}")
    return moved


def _fsync_tree(folder: Path) -> None:
    for dirpath, _, files in os.walk(folder):
        for name in files:
            fsync_path(Path(dirpath) / name)
        fsync_path(dirpath)


def save_checkpoint(
    backend,
    output_dir: str,
    step: int,
    state: dict[str, Any],
    keep_last: int = 0,
    config: dict[str, Any] | None = None,
) -> Path:
    """Writes a checkpoint atomically (all processes call this). Returns its final path.

    ``config`` (the stage config as a dict) is kept so that a resume can refuse a changed key.
    Older checkpoints beyond ``keep_last`` are removed only after this one is complete.
    """
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
        files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
        if config is None:
            config = _run_config(output_dir)
        stage = _run_stage(output_dir)
        payload = {
            "step": step,
            "format": FORMAT,
            "stage": stage,
            "launch": launch_facts(backend),
            **state,
            "config": config,
            "files": files,
        }
        write_bytes_durably(tmp / STATE_FILE, (json.dumps(payload, indent=2) + "\n").encode("utf-8"))
        _fsync_tree(tmp)
        old = root / f".old-step-{step:08d}"
        if final.exists():  # re-saved (e.g. the last step after a resume): keep it until replaced
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
        fsync_path(root)
        _prune(output_dir, keep_last, keep=final)
    backend.barrier()
    return final


def _run_config(output_dir: str) -> dict[str, Any] | None:
    """The config the run in ``output_dir`` trains with (its config.yaml), kept with each checkpoint."""
    import yaml

    path = Path(output_dir) / "config.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None


def launch_facts(backend) -> dict[str, Any]:
    """How the run was launched, which a resume must match (the state files are per process and
    per engine, and the precision changes the numbers)."""
    return {
        "world_size": backend.world_size,
        "distributed_type": backend.distributed_type,
        "zero_stage": backend.zero_stage,
        "mixed_precision": backend.mixed_precision,
    }


def _run_stage(output_dir: str) -> str | None:
    path = Path(output_dir) / "run.json"
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("stage") if path.is_file() else None
    except (OSError, ValueError, AttributeError):
        return None


def load_checkpoint(backend, path: Path) -> dict[str, Any]:
    """Restores the backend state and returns the trainer state (step, data position, ...).

    The launch must match the one that wrote it. A file found damaged while loading on any
    process raises StateFileError on every process (none is left waiting for the others)."""
    state = verify_checkpoint(path)
    saved, current = state.get("launch"), launch_facts(backend)
    if isinstance(saved, dict) and saved != current:
        diff = ", ".join(f"{k} {saved.get(k)!r} -> {current[k]!r}" for k in current if saved.get(k) != current[k])
        raise CheckpointError(
            f"checkpoint {path} was written by another launch ({diff}); its state files are per process and "
            "per engine. Resume with the launch that wrote it (same accelerate config, process count and precision)"
        )
    failure: StateFileError | None = None
    try:
        backend.load_state(str(path))
    except StateFileError as err:
        failure = err
    if backend.all_reduce_sum(1.0 if failure else 0.0).item() > 0:
        raise failure or StateFileError(path, "could not be loaded on another process (its message names the file)")
    return state


def _prune(output_dir: str, keep_last: int, keep: Path) -> None:
    if keep_last <= 0:
        return
    for old in complete_checkpoints(output_dir)[:-keep_last]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)
