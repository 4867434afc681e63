"""What a checkpoint restores (weights, optimizer, scheduler, loss scaler, RNG), written without pickle.

Files in a checkpoint folder:

- ``model.safetensors``, ``optimizer.safetensors``: the trained model's state dict and its
  optimizer's state (single process and DDP; written by the main process).
- ``engine/``: under DeepSpeed, the engine's own checkpoint (every process writes its shard),
  written through :class:`SafeCheckpointEngine`, so those files are safetensors state trees too.
- ``scheduler.json``, ``grad_scaler.json`` (fp16 without DeepSpeed), ``rng-<rank>.json``.

Every file is read with :mod:`rlhf.runtime.safe_state`, which never unpickles: a file of another
kind (a planted pickle, say) is refused as damaged, and any other file in the folder is ignored.
"""

from __future__ import annotations

import functools
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhf.runtime.safe_state import StateFileError, dump_json_tree, load_json_tree, load_tree, save_tree

ENGINE_TAG = "engine"


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()  # this process's device only
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].to(torch.uint8))
    if torch.cuda.is_available() and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"].to(torch.uint8))


@functools.cache
def _safe_engine_class():
    from deepspeed.runtime.checkpoint_engine.checkpoint_engine import CheckpointEngine

    class SafeCheckpointEngine(CheckpointEngine):
        """DeepSpeed's checkpoint files as safetensors state trees instead of torch.save pickles."""

        def __init__(self) -> None:
            super().__init__(None)
            self.name = "SafeCheckpointEngine"

        def create(self, info) -> None:
            pass

        def save(self, state_dict, path: str) -> None:
            save_tree(state_dict, path)

        def load(self, path: str, map_location=None):
            return load_tree(path)

        def commit(self, info) -> bool:
            return True

    return SafeCheckpointEngine


def save_training_state(backend, folder: Path) -> None:
    """Writes the registered model / optimizer / scheduler and this process's RNG (all ranks call)."""
    model, optimizer, scheduler = backend.trained
    if backend.uses_deepspeed:
        model.checkpoint_engine = _safe_engine_class()()
        model.save_checkpoint(str(folder), tag=ENGINE_TAG, save_latest=False)
    elif backend.is_main:
        save_tree(backend.unwrap(model).state_dict(), folder / "model.safetensors")
        save_tree(optimizer.state_dict(), folder / "optimizer.safetensors")
    if backend.is_main:
        if scheduler is not None:
            dump_json_tree(scheduler.state_dict(), folder / "scheduler.json")
        scaler = backend.accelerator.scaler
        if scaler is not None:
            dump_json_tree(scaler.state_dict(), folder / "grad_scaler.json")
    dump_json_tree(rng_state(), folder / f"rng-{backend.rank}.json")


def load_training_state(backend, folder: Path) -> None:
    """Restores what :func:`save_training_state` wrote; a damaged file raises StateFileError."""
    model, optimizer, scheduler = backend.trained
    if backend.uses_deepspeed:
        if model.load_universal_checkpoint():
            # DeepSpeed reads universal checkpoints with torch.load, past any checkpoint engine.
            raise StateFileError(
                folder / ENGINE_TAG,
                "cannot be resumed with the DeepSpeed option checkpoint.load_universal: DeepSpeed loads "
                "those files with pickle. Remove the option from the DeepSpeed config",
            )
        model.checkpoint_engine = _safe_engine_class()()
        path, _ = model.load_checkpoint(
            str(folder), tag=ENGINE_TAG, load_module_strict=True, load_optimizer_states=True
        )
        if path is None:
            raise StateFileError(folder / ENGINE_TAG, "holds no DeepSpeed checkpoint")
    else:
        try:
            backend.unwrap(model).load_state_dict(load_tree(folder / "model.safetensors"), strict=True)
            optimizer.load_state_dict(load_tree(folder / "optimizer.safetensors"))
        except StateFileError:
            raise
        except (KeyError, ValueError, RuntimeError) as err:
            raise StateFileError(folder, f"does not fit this model or optimizer ({err})") from err
    if scheduler is not None:
        saved = load_json_tree(folder / "scheduler.json")
        expected = set(scheduler.state_dict())
        if not isinstance(saved, dict) or set(saved) != expected:
            # torch copies a scheduler state onto the scheduler object, so only its own keys may come in
            raise StateFileError(
                folder / "scheduler.json", f"does not hold the keys of this scheduler ({sorted(expected)})"
            )
        scheduler.load_state_dict(saved)
    scaler = backend.accelerator.scaler
    if scaler is not None:
        scaler.load_state_dict(load_json_tree(folder / "grad_scaler.json"))
    set_rng_state(load_json_tree(folder / f"rng-{backend.rank}.json"))
