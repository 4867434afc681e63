"""Who owns an output folder: one run of one stage, held by one launch at a time.

A stage's output folder holds ``run.json`` (which stage, when it started) next to its
``config.yaml``. Before a stage writes anything, :func:`check_run_folder` decides from the
folder alone (so every process decides alike):

- absent or empty: a fresh run;
- another stage's run, or files that are not a run: refused (``overwrite=true`` replaces a run,
  never a folder of other files);
- this stage's run: continued only when resuming (``checkpoint.resume_from``) with the same
  training keys (see :data:`rlhf.config.diff.RESUME_SAFE` for those that may change), replaced
  with ``overwrite=true``, and refused otherwise, so a finished run is never silently retrained.

:func:`acquire_lock` then takes an exclusive ``flock`` on ``.rlhf.lock`` in the folder for the
whole run, so a second launch into the same folder stops at once instead of logging twice.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import IO, Any

import yaml

from rlhf.config.diff import RESUME_SAFE, config_changes, shown

RUN_FILE = "run.json"
LOCK_FILE = ".rlhf.lock"
_HELD: dict[str, IO[str]] = {}  # folder -> open lock file, one per folder in this process


class RunFolderError(RuntimeError):
    """The output folder holds something this run must not touch (message says what to do)."""


STAGES = ("sft", "rm", "dpo", "ppo")
# What a stage writes into its folder: all that overwrite=true may delete.
RUN_ENTRIES = {
    RUN_FILE,
    "config.yaml",
    "summary.json",
    "metrics.jsonl",
    "samples.jsonl",
    "quarantine.jsonl",
    "curves.png",
    "reward_margins.png",
    "checkpoints",
    "model",
    "wandb",
    "reference_logps.safetensors",
    "reference_logps.pt",
}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _owner(out: Path) -> str | None:
    """The stage whose run the folder holds, None if it holds none: ``run.json`` names it, and a
    folder from before run.json existed is recognised by its summary.json and config.yaml, or by
    its checkpoints' trainer state."""
    for record in (_read_json(out / RUN_FILE), _legacy_summary(out)):
        if isinstance(record, dict) and record.get("stage") in STAGES:
            return record["stage"]
    for state_file in sorted((out / "checkpoints").glob("step-*/trainer_state.json"), reverse=True):
        state = _read_json(state_file)
        if isinstance(state, dict) and state.get("stage") in STAGES:
            return state["stage"]
    return None


def _legacy_summary(out: Path) -> Any:
    return _read_json(out / "summary.json") if (out / "config.yaml").is_file() else None


def _is_run_entry(name: str) -> bool:
    return name in RUN_ENTRIES or name.startswith((".tmp-", f".{RUN_FILE}"))


def _inside(path: str, folder: Path) -> bool:
    try:
        return Path(path).resolve().is_relative_to(folder.resolve())
    except (OSError, ValueError):
        return False


def _recorded_inputs(out: Path) -> dict[str, Any] | None:
    try:
        inputs = json.loads((out / RUN_FILE).read_text(encoding="utf-8")).get("inputs")
    except (OSError, ValueError, AttributeError):
        return None
    return inputs if isinstance(inputs, dict) else None


def input_changes(recorded: dict[str, Any] | None, current: dict[str, Any] | None) -> list[str]:
    """``role: old -> new`` for each input model whose fingerprint differs from the recorded one."""
    if not recorded or not current:
        return []
    changes = []
    for role in sorted(set(recorded) | set(current)):
        old = (recorded.get(role) or {}).get("fingerprint")
        new = (current.get(role) or {}).get("fingerprint")
        if old != new:
            changes.append(f"{role}: {str(old)[:19]} -> {str(new)[:19]}")
    return changes


def check_run_folder(
    output_dir: str,
    stage: str,
    config: dict[str, Any],
    *,
    resume: bool,
    overwrite: bool,
    inputs: dict[str, Any] | None = None,
    resume_from: str | None = None,
) -> str:
    """'fresh', 'continue' or 'replace' for a stage about to run into ``output_dir`` (reads only).

    ``inputs`` (role -> {name_or_path, fingerprint}) are the models the stage starts from; a run
    continued from checkpoints must have started from the same ones."""
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"output_dir {out} is a file, not a folder")
    entries = sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE) if out.is_dir() else []
    if not entries:
        return "fresh"
    owner = _owner(out)
    if owner is None:
        listed = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
        raise RunFolderError(
            f"output_dir {out} holds files that are not an rlhf run ({listed}); give the stage an empty or new folder"
        )
    if overwrite:
        foreign = [name for name in entries if not _is_run_entry(name)]
        if foreign:
            raise RunFolderError(
                f"overwrite=true: output_dir {out} holds a {owner} run and also files no stage writes "
                f"({', '.join(foreign[:5])}); they are not deleted. Move them out, or choose another output_dir"
            )
        used = [
            str(v.get("name_or_path")) for v in (inputs or {}).values() if isinstance(v, dict) and v.get("name_or_path")
        ]
        used += [resume_from] if resume_from and resume_from != "latest" else []
        inside = sorted({path for path in used if _inside(path, out)})
        if inside:
            raise RunFolderError(
                f"overwrite=true would delete {', '.join(inside)}, which this run starts from; "
                "copy it out of output_dir first"
            )
        return "replace"
    what = f"a {owner} run"
    if owner != stage:
        raise RunFolderError(
            f"output_dir {out} holds {what}, not a {stage} run; give this stage another output_dir, "
            "or set overwrite=true to replace that run"
        )
    finished = (out / "summary.json").is_file()
    if not resume:
        raise RunFolderError(
            f"output_dir {out} already holds a {'finished ' if finished else ''}{stage} run; set "
            "checkpoint.resume_from=latest to continue it, or overwrite=true to replace it"
        )
    saved_file = out / "config.yaml"
    try:
        saved = yaml.safe_load(saved_file.read_text(encoding="utf-8")) if saved_file.is_file() else None
    except (OSError, yaml.YAMLError) as err:
        raise RunFolderError(f"{saved_file}: cannot be read ({err}); set overwrite=true to replace the run") from err
    if saved is not None and not isinstance(saved, dict):
        raise RunFolderError(f"{saved_file}: is not a config (a mapping); set overwrite=true to replace the run")
    if isinstance(saved, dict):
        changes = config_changes(saved, config, RESUME_SAFE)
        if changes:
            raise RunFolderError(
                f"output_dir {out} holds a {stage} run with another config ({shown(changes)}); resuming "
                "would mix the two. Put the keys back, give the run another output_dir, or set "
                "overwrite=true to replace it"
            )
    changed = input_changes(_recorded_inputs(out), inputs)
    if changed:
        raise RunFolderError(
            f"output_dir {out} holds a {stage} run that started from other models ({'; '.join(changed)}): "
            "its checkpoints would continue from weights the new inputs never produced. Set overwrite=true "
            "to train afresh from the current models"
        )
    return "continue"


def acquire_lock(output_dir: str) -> bool:
    """Takes the folder's exclusive lock for this process; False if another process holds it."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    key = str(out.resolve())
    release_lock(output_dir)  # a run that ended by an exception in this process left it behind
    handle = open(out / LOCK_FILE, "a+", encoding="utf-8")  # noqa: SIM115 - held for the run
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held by another process, or a file system without locks
        handle.close()
        return False
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    _HELD[key] = handle
    return True


def lock_holder(output_dir: str) -> str:
    """The process id written by the process holding the lock, for the error message."""
    try:
        return (Path(output_dir) / LOCK_FILE).read_text(encoding="utf-8").strip() or "?"
    except OSError:
        return "?"


def release_lock(output_dir: str) -> None:
    handle = _HELD.pop(str(Path(output_dir).resolve()), None)
    if handle is not None:
        handle.close()


def replace_run(output_dir: str) -> None:
    """Removes a run's files (``overwrite=true``; :func:`check_run_folder` has made sure nothing
    else is there), ``run.json`` last so that a replace cut short is still known as a run."""
    out = Path(output_dir)
    for entry in sorted(out.iterdir(), key=lambda p: p.name == RUN_FILE):
        if entry.name == LOCK_FILE or not _is_run_entry(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def write_run_file(output_dir: str, stage: str, inputs: dict[str, Any] | None = None) -> None:
    """``run.json``: the stage, when and by which process it started, and its input models."""
    payload = {
        "stage": stage,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "pid": os.getpid(),
        "inputs": inputs or {},
    }
    tmp = Path(output_dir) / f".{RUN_FILE}.tmp"
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, Path(output_dir) / RUN_FILE)
