"""Set-up and wrap-up shared by the stage loops (backend, output folder, tracker, resume, summary)."""

from __future__ import annotations

import errno
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from preference_data.readers import BUILTIN_PREFIX
from preference_data.sampling import batched, mixture_stream
from rlhf.config.diff import RESUME_SAFE, config_changes, shown
from rlhf.config.loader import ConfigError, save_config, to_dict
from rlhf.models.fingerprint import write_fingerprint
from rlhf.models.loading import save_model
from rlhf.runtime import run_folder
from rlhf.runtime.backend import Backend
from rlhf.runtime.checkpoint import (
    CheckpointError,
    load_checkpoint,
    resume_candidates,
    set_aside_newer,
    verify_checkpoint,
)
from rlhf.runtime.safe_state import StateFileError
from rlhf.runtime.tracking import Tracker
from rlhf.stages.inputs import input_fingerprints


def stage_name(cfg) -> str:
    """'sft', 'rm', 'dpo' or 'ppo', from the config's class (SFTConfig -> 'sft')."""
    return type(cfg).__name__.removesuffix("Config").lower()


# The data keys of each stage config that name files to read.
_DATA_KEYS = ("train", "eval", "prompts")


def check_data_paths(cfg) -> None:
    """ConfigError naming the key for a data file or folder that does not exist (builtin:NAME
    sources are generated, not read), so a run is refused before it writes anything."""
    data = getattr(cfg, "data", None)
    for key in _DATA_KEYS:
        for path in getattr(data, key, None) or ():
            if not str(path).startswith(BUILTIN_PREFIX) and not os.path.exists(os.path.expanduser(path)):
                raise ConfigError(
                    f"data.{key}: {path}: no such file or folder; expected a jsonl / json / csv / "
                    "parquet file, a datasets folder or builtin:NAME"
                )


def start(cfg) -> Backend:
    """The backend for a stage config, once the output folder is this run's: checked (see
    :mod:`rlhf.runtime.run_folder`), locked, and holding the run file and resolved config."""
    from transformers.utils import logging as hf_logging

    from rlhf.models.loading import check_model_path

    check_model_path(cfg.model.name_or_path)  # before anything is written
    check_data_paths(cfg)
    hf_logging.disable_progress_bar()  # per-shard load/save bars would bury the training bar
    backend = Backend(
        seed=cfg.seed,
        mixed_precision=cfg.precision.mixed_precision,
        grad_accum=cfg.batch.grad_accum,
        micro_batch_size=cfg.batch.micro_batch_size,
        max_grad_norm=cfg.optim.max_grad_norm,
        collective_timeout_s=cfg.runtime.collective_timeout_s,
        stage=stage_name(cfg),
    )
    stage = stage_name(cfg)
    inputs = input_fingerprints(cfg)

    def check() -> str:
        return run_folder.check_run_folder(
            cfg.output_dir,
            stage,
            to_dict(cfg),
            resume=bool(cfg.checkpoint.resume_from),
            overwrite=cfg.overwrite,
            inputs=inputs,
            resume_from=cfg.checkpoint.resume_from,
        )

    # Every process reads the folder, so all decide alike (or all raise): once before taking the
    # lock (nothing, not even the lock file, goes into a folder that is refused), and again
    # holding it (another launch may have finished in between).
    check()
    backend.barrier()
    locked = run_folder.acquire_lock(cfg.output_dir) if backend.is_main else True
    if backend.all_reduce_sum(0.0 if locked else 1.0).item() > 0:
        raise run_folder.RunFolderError(
            f"output_dir {cfg.output_dir} is in use by another run (process "
            f"{run_folder.lock_holder(cfg.output_dir)}), or its file system cannot lock; wait for "
            "that run to end or choose another output_dir"
        )
    backend.at_end(lambda: run_folder.release_lock(cfg.output_dir))
    action = check()
    backend.barrier()
    failure: OSError | None = None
    if backend.is_main:
        try:
            if action == "replace":
                run_folder.replace_run(cfg.output_dir)
            run_folder.write_run_file(cfg.output_dir, stage, inputs)
            save_config(cfg, Path(cfg.output_dir) / "config.yaml")
        except OSError as err:  # raised on every process below, so none waits for the others
            failure = err
    if backend.all_reduce_sum(1.0 if failure else 0.0).item() > 0:
        run_folder.release_lock(cfg.output_dir)
        raise failure or run_folder.RunFolderError(f"output_dir {cfg.output_dir}: the main process could not write it")
    return backend


def total_steps(cfg, rows: int, global_batch: int) -> int:
    """``max_steps``, or enough steps for ``epochs`` passes over ``rows`` when it is <= 0."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    return max(1, math.ceil(cfg.epochs * rows / global_batch))


def resume(cfg, backend: Backend) -> tuple[int, Path | None]:
    """(first step to run from, checkpoint used) after restoring the backend state if asked.

    The checkpoint must have been made with the same training keys as ``cfg`` (those in
    :data:`rlhf.config.diff.RESUME_SAFE` may differ); otherwise the run stops with the diff."""
    candidates = resume_candidates(cfg.checkpoint.resume_from, cfg.output_dir)
    for number, path in enumerate(candidates):
        saved = verify_checkpoint(path).get("config")
        if saved is not None and not isinstance(saved, dict):
            raise CheckpointError(f"checkpoint {path}: its config is not a mapping; start afresh with overwrite=true")
        changes = config_changes(saved, to_dict(cfg), RESUME_SAFE) if saved else []
        if changes:
            raise CheckpointError(
                f"checkpoint {path} was made with another config ({shown(changes)}); resuming would "
                "continue with the checkpoint's state under the new keys. Put the keys back, or start "
                "afresh with overwrite=true"
            )
        try:
            step = int(load_checkpoint(backend, path)["step"])
        except StateFileError as err:
            if number + 1 == len(candidates):
                raise CheckpointError(f"resume: no checkpoint could be loaded; the last one tried: {err}") from err
            if backend.is_main:
                print(f"warning: {err}; trying {candidates[number + 1].name}", file=sys.stderr, flush=True)
            continue
        if backend.is_main:
            set_aside_newer(cfg.output_dir, path)
        backend.barrier()
        return step, path
    return 0, None


def tracker(cfg, backend: Backend, *, steps: int, start_step: int, stage: str) -> Tracker:
    return Tracker(
        cfg.output_dir,
        is_main=backend.is_main,
        mode=cfg.tracking.mode,
        project=cfg.tracking.project,
        run_name=cfg.tracking.run_name,
        group=cfg.tracking.group,
        config=to_dict(cfg),
        total_steps=steps,
        start_step=start_step,
        progress=cfg.tracking.progress,
        stage=stage,
    )


def run_facts(backend: Backend, started: float) -> dict:
    """What every summary.json reports about how the run was executed."""
    return {
        "world_size": backend.world_size,
        "distributed_type": backend.distributed_type,
        "zero_stage": backend.zero_stage,
        "mixed_precision": backend.mixed_precision,
        "peak_memory_bytes": backend.max_over_processes(backend.peak_memory_bytes()),
        "wall_time_s": round(time.time() - started, 3),
    }


def write_folder_atomically(backend: Backend, folder: Path, write: Callable[[Path], None]) -> Path:
    """Main process writes into a temporary sibling, records its content fingerprint in it
    (``fingerprint.json``, see ``rlhf.models.fingerprint``), then renames it into place; all
    processes wait."""
    tmp = folder.with_name(f".tmp-{folder.name}")
    if backend.is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            write(tmp)
        except Exception as err:  # safetensors' and torch's writers report a full disk in their own words
            if getattr(err, "errno", None) == errno.ENOSPC or "No space left on device" in str(err):
                raise OSError(errno.ENOSPC, f"no space left on device while writing {tmp}") from err
            raise
        write_fingerprint(tmp)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    backend.barrier()
    return folder


def save_final_model(backend: Backend, model, tokenizer, folder: Path, *, merge: bool) -> Path:
    """save_pretrained folder written to a temporary name and renamed when complete."""
    state_dict = backend.full_state_dict(model)
    unwrapped = backend.unwrap(model)
    return write_folder_atomically(
        backend, folder, lambda tmp: save_model(unwrapped, tokenizer, str(tmp), merge=merge, state_dict=state_dict)
    )


def shuffled_stream(items: Sequence, seed: int) -> Iterator:
    """``items`` in an endless seeded order, reshuffled every epoch."""
    return (items[i] for _, i in mixture_stream([len(items)], None, seed))


def global_batches(stream: Iterator, global_batch: int, start_step: int) -> Iterator[list]:
    """The run's global batches (the same on every process) from step ``start_step + 1`` on.

    The order is a pure function of the seed, so a resumed run regenerates it and skips ahead.
    """
    batches = batched(stream, global_batch)
    for _ in range(start_step):
        next(batches)
    return batches


def micro_batches(batch: list, backend: Backend, micro_batch_size: int, grad_accum: int) -> list[list]:
    """This process's slice of a global batch, cut into its ``grad_accum`` micro-batches."""
    per_process = micro_batch_size * grad_accum
    mine = batch[backend.rank * per_process : (backend.rank + 1) * per_process]
    return [mine[m * micro_batch_size : (m + 1) * micro_batch_size] for m in range(grad_accum)]


def eval_shards(n: int, backend: Backend, micro_batch_size: int) -> list[list[int]]:
    """This process's share of ``n`` eval items as micro-batches of indices.

    Every process gets the same number of micro-batches (some possibly empty): under ZeRO-3 each
    forward pass gathers weights collectively, so a process that stopped early would hang the others.
    """
    mine = list(range(backend.rank, n, backend.world_size))
    passes = int(backend.max_over_processes(math.ceil(len(mine) / micro_batch_size)))
    return [mine[p * micro_batch_size : (p + 1) * micro_batch_size] for p in range(passes)]
