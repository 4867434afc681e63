"""The one module that knows about accelerate, DeepSpeed and process groups.

Stages build a :class:`Backend` and call its methods; they never ask which engine runs them.
Single process, DDP (gloo on CPU, NCCL on GPU) and DeepSpeed ZeRO 1/2/3 are chosen by the
``accelerate launch`` configuration (see configs/accelerate/), not by the stage config.

Loss convention: a stage passes a loss that is already its exact share of the global
objective (e.g. sum of token losses on this micro-batch / tokens in the whole global batch).
DDP and DeepSpeed average gradients over processes, and accelerate / DeepSpeed divide by the
accumulation steps; :meth:`Backend.backward` multiplies those factors back, so gradients do not
depend on how the global batch is split across processes and micro-batches.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import os
import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhf.runtime import liveness


class LaunchError(RuntimeError):
    """The processes were launched differently from what was asked."""


def _deepspeed_requested() -> bool:
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() in ("1", "true", "yes")


def _resolve_mixed_precision(requested: str) -> str:
    if requested != "auto":
        return requested
    launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if launcher != "no":
        return launcher
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


_SHARED_DEPTH = 0  # > 0 inside shared_process_group()


def launched_as_main() -> bool:
    """Whether this is the main process of the launch (rank 0), known before any Backend exists."""
    return int(os.environ.get("RANK", "0")) == 0


@contextlib.contextmanager
def shared_process_group() -> Iterator[None]:
    """Stages run inside share one process group, destroyed when the outermost block ends.

    A launcher's rendezvous sets a process group up once per launch, so a pipeline (or a sweep
    of pipelines) runs all its stages on the first one. Blocks may nest.
    """
    global _SHARED_DEPTH
    _SHARED_DEPTH += 1
    try:
        yield
    finally:
        _SHARED_DEPTH -= 1
        if _SHARED_DEPTH == 0:
            from accelerate.state import AcceleratorState, GradientState, PartialState

            if PartialState._shared_state:
                PartialState().destroy_process_group()
            AcceleratorState._reset_state(reset_partial_state=True)
            GradientState._reset_state()


@contextlib.contextmanager
def unpartitioned_loading() -> Iterator[None]:
    """Models loaded inside are whole on this process, even under ZeRO-3.

    For work one process does alone (the main process scoring with a model it just saved):
    under ZeRO-3, transformers' ``from_pretrained`` would otherwise partition the weights with
    collective calls that the other processes never join.
    """
    from transformers.integrations import deepspeed as hf_deepspeed

    saved = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


class Backend:
    """Wraps one ``accelerate.Accelerator`` for a stage.

    Args:
        seed: base seed; process ``rank`` is seeded with ``seed + rank`` after model creation.
        mixed_precision: 'auto' | 'no' | 'bf16' | 'fp16'.
        grad_accum: micro-batches per optimizer step on each process.
        micro_batch_size: sequences per forward pass (DeepSpeed needs it in its config).
        max_grad_norm: global grad-norm clipping threshold, 0 disables.
        collective_timeout_s: seconds a collective call waits for the other processes before it
            fails (the process-group timeout; the first stage of a launch sets it).
        stage: the stage's name, for messages.
    """

    def __init__(
        self,
        *,
        seed: int,
        mixed_precision: str = "auto",
        grad_accum: int = 1,
        micro_batch_size: int = 1,
        max_grad_norm: float = 1.0,
        collective_timeout_s: float = 1800.0,
        stage: str | None = None,
    ) -> None:
        if collective_timeout_s <= 0:
            raise ValueError(f"collective_timeout_s must be > 0, got {collective_timeout_s}")
        if os.environ.get("LOCAL_RANK") is not None:
            liveness.exit_with_launcher()  # a rank does not outlive its launcher
        if not torch.cuda.is_available():
            # DeepSpeed otherwise probes for a CUDA accelerator and fails at import.
            os.environ.setdefault("DS_ACCELERATOR", "cpu")
        from accelerate import Accelerator
        from accelerate.utils import DistributedType, InitProcessGroupKwargs

        handlers = []
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            # The timeout reaches torch.distributed and, for DeepSpeed launches, deepspeed's
            # init_distributed alike. accelerate defaults to a backend that does not exist on CPU
            # for DeepSpeed launches; gloo is the CPU collective backend.
            timeout = datetime.timedelta(seconds=collective_timeout_s)
            if not torch.distributed.is_initialized():  # later stages reuse the group and its timeout
                liveness.set_timeout(collective_timeout_s)
            if torch.cuda.is_available():
                handlers.append(InitProcessGroupKwargs(timeout=timeout))
            else:
                handlers.append(InitProcessGroupKwargs(backend="gloo", timeout=timeout))
        self.stage = stage
        self.collective_timeout_s = collective_timeout_s
        self.seed = seed
        self.grad_accum = grad_accum
        self.max_grad_norm = max_grad_norm
        self.accelerator = Accelerator(
            mixed_precision=_resolve_mixed_precision(mixed_precision),
            gradient_accumulation_steps=grad_accum,
            kwargs_handlers=handlers,
        )
        acc = self.accelerator
        self._deepspeed = acc.distributed_type == DistributedType.DEEPSPEED
        self.trained: tuple[Any, Any, Any] | None = None
        self._at_end: list[Any] = []
        if _deepspeed_requested() and not self._deepspeed:
            raise LaunchError(
                "DeepSpeed was requested by the launcher but accelerate set up "
                f"{acc.distributed_type.value}: on CPU, do not combine ACCELERATE_USE_CPU=1 / --cpu "
                "with --use_deepspeed; launch with the configs/accelerate/zero*.yaml files instead."
            )
        if os.environ.get("WORLD_SIZE") and int(os.environ["WORLD_SIZE"]) != acc.num_processes:
            raise LaunchError(
                f"{os.environ['WORLD_SIZE']} processes were launched but accelerate sees "
                f"{acc.num_processes}; use --multi_gpu --num_processes N (not --cpu) on CPU."
            )
        if self._deepspeed:
            ds_config = acc.state.deepspeed_plugin.deepspeed_config
            ds_config["train_micro_batch_size_per_gpu"] = micro_batch_size
            ds_config["gradient_accumulation_steps"] = grad_accum
            ds_config["train_batch_size"] = micro_batch_size * grad_accum * acc.num_processes
            ds_config["gradient_clipping"] = max_grad_norm
        seed_everything(seed)

    def at_step(self, step: int) -> None:
        """Marks the start of optimizer step ``step`` (named if a collective call fails)."""
        liveness.at_step(self.stage, step)

    # ----------------------------------------------------------------- who am I
    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world_size(self) -> int:
        return self.accelerator.num_processes

    @property
    def device(self) -> torch.device:
        return self.accelerator.device

    @property
    def distributed_type(self) -> str:
        return self.accelerator.distributed_type.value

    @property
    def uses_deepspeed(self) -> bool:
        return self._deepspeed

    @property
    def mixed_precision(self) -> str:
        return self.accelerator.mixed_precision

    @property
    def zero_stage(self) -> int | None:
        if not self._deepspeed:
            return None
        return int(self.accelerator.state.deepspeed_plugin.zero_stage)

    # ------------------------------------------------------------------ set-up
    def prepare(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any = None):
        """Wraps model and optimizer for the engine. The scheduler is stepped by the stage
        (once per optimizer step) and is only registered here for checkpointing."""
        model, optimizer = self.accelerator.prepare(model, optimizer)
        self.trained = (model, optimizer, scheduler)  # what a checkpoint saves and restores
        seed_everything(self.seed + self.rank)
        return model, optimizer

    def prepare_frozen(self, model: torch.nn.Module) -> torch.nn.Module:
        """A model that only runs forward passes (a reference policy, a reward model).

        Under ZeRO-3 the weights were partitioned when the model was loaded, so it gets an engine
        of its own without an optimizer: its shards stay spread over the processes and each
        forward gathers them layer by layer (every process must then run the same number of
        forward passes). Otherwise it is simply moved to the device.
        """
        model.eval().requires_grad_(False)
        if self.zero_stage != 3:
            return model.to(self.device)
        import deepspeed

        config = copy.deepcopy(self.accelerator.state.deepspeed_plugin.deepspeed_config)
        for key in ("optimizer", "scheduler"):
            config.pop(key, None)
        engine, *_ = deepspeed.initialize(model=model, config=config)
        engine.eval()
        return engine

    def unwrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return self.accelerator.unwrap_model(model)

    @contextlib.contextmanager
    def generation_model(self, model: torch.nn.Module) -> Iterator[torch.nn.Module]:
        """The unwrapped model with whole weights for ``generate``.

        Under ZeRO-3 each process holds a shard of every weight; token-by-token generation through
        the engine would gather every layer at every token, and a process that finishes its
        sequences early would stop joining those gathers and hang the others. So the weights are
        gathered once for the whole generation (read-only) and released afterwards.
        """
        unwrapped = self.unwrap(model)
        if self.zero_stage != 3:
            yield unwrapped
            return
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(unwrapped.parameters()), modifier_rank=None):
            yield unwrapped

    # ---------------------------------------------------------------- training
    @contextlib.contextmanager
    def accumulate(self, model: torch.nn.Module) -> Iterator[None]:
        """Context for one micro-batch: skips the gradient all-reduce until the last one."""
        with self.accelerator.accumulate(model), self.accelerator.autocast():
            yield

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """The mixed precision that ``prepare``'d models run their forward passes under, for a
        frozen copy (``prepare_frozen``) that must compute exactly what the policy computes."""
        with self.accelerator.autocast():
            yield

    @property
    def sync_gradients(self) -> bool:
        """True inside the context of the last micro-batch of an optimizer step."""
        return self.accelerator.sync_gradients

    def backward(self, loss: torch.Tensor) -> None:
        """Back-propagates a loss that is this micro-batch's exact share of the global objective."""
        self.accelerator.backward(loss * (self.grad_accum * self.world_size))

    def optimizer_step(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> float:
        """Clips the global grad norm, steps and zeroes; returns the pre-clip grad norm (NaN if unknown).

        Call after the backward of the last micro-batch. Under DeepSpeed the engine has already
        clipped and stepped inside that backward; only the norm is read here.
        """
        norm = self.clip_gradients(model)
        self.apply_step(optimizer)
        return float("nan") if norm is None else norm

    def clip_gradients(self, model: torch.nn.Module) -> float | None:
        """Clips the global grad norm to ``max_grad_norm`` (0: no clipping) and returns the norm
        before clipping, the same on every process; None when the engine does not report it.

        Call after the backward of the last micro-batch, then :meth:`apply_step` or :meth:`skip_step`.
        Under DeepSpeed the engine has already clipped and stepped; only its norm is read.
        """
        if self._deepspeed:
            norm = self.accelerator.clip_grad_norm_(model.parameters(), self.max_grad_norm)
            return None if norm is None else float(norm)
        if self.max_grad_norm > 0:
            norm = self.accelerator.clip_grad_norm_(model.parameters(), self.max_grad_norm)
        else:
            self.accelerator.unscale_gradients()  # the norm of the gradients, not of the fp16-scaled ones
            norm = torch.sqrt(
                sum((p.grad.detach().float() ** 2).sum() for p in model.parameters() if p.grad is not None)
            )
        return float(norm)

    def apply_step(self, optimizer: torch.optim.Optimizer) -> bool:
        """Steps and zeroes the gradients; False when a loss scaler skipped the update (fp16
        gradients that overflowed; the scaler then lowers its scale)."""
        optimizer.step()
        skipped = bool(getattr(optimizer, "step_was_skipped", False))
        optimizer.zero_grad(set_to_none=True)
        return not skipped

    @property
    def can_skip_steps(self) -> bool:
        """Whether :meth:`skip_step` can drop a step: not under DeepSpeed, whose engine has
        already stepped inside the backward pass by the time the step can be judged."""
        return not self._deepspeed

    @property
    def loss_scaling(self) -> bool:
        """fp16 with a dynamic loss scaler, which skips updates with overflowing gradients itself."""
        return self.mixed_precision == "fp16" and (self._deepspeed or self.accelerator.scaler is not None)

    def skip_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Drops this step's gradients: the parameters and the optimizer state stay as they are."""
        if not self.can_skip_steps:
            raise RuntimeError("skip_step under DeepSpeed: the engine has already applied the step")
        optimizer.zero_grad(set_to_none=True)
        if self.accelerator.scaler is not None:
            # The scaler must finish the step it unscaled (or the next unscale fails); with no
            # gradients left the optimizer updates nothing, its state included.
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    # ----------------------------------------------------------- collectives
    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()

    def all_reduce_sum(self, value: float | torch.Tensor) -> torch.Tensor:
        tensor = torch.as_tensor(value, dtype=torch.float64, device=self.device).clone()
        if self.world_size > 1:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor

    def all_reduce_sums(self, sums: Mapping[str, float]) -> dict[str, float]:
        """Each named value summed over processes, in one float64 all-reduce.

        The stages keep what they sum over micro-batches in a dict by name (loss, tokens,
        counts, ...) and reduce it here, instead of positions in a tensor."""
        names = list(sums)
        totals = self.all_reduce_sum(torch.tensor([float(sums[name]) for name in names], dtype=torch.float64))
        return dict(zip(names, totals.tolist()))

    def nonfinite_names(self, values: Mapping[str, float | torch.Tensor | None]) -> list[str]:
        """The names in ``values`` that are NaN or infinite on any process, in their order and
        the same on every process (one all-reduce of a flag per name; every process passes the
        same names). A tensor counts if any entry does; None (not known) counts as finite."""
        flags = {
            name: 0.0 if value is None or bool(torch.isfinite(torch.as_tensor(value)).all()) else 1.0
            for name, value in values.items()
        }
        return [name for name, seen in self.all_reduce_sums(flags).items() if seen > 0]

    def all_finite(self, values: Mapping[str, float | torch.Tensor | None]) -> bool:
        """Whether every process saw only finite ``values`` (see :meth:`nonfinite_names`)."""
        return not self.nonfinite_names(values)

    def parameters_finite(self, model: torch.nn.Module) -> bool:
        """Whether every parameter of ``model`` is finite on every process (under ZeRO-3: every
        process's shard). All processes call it."""
        bad = torch.zeros((), dtype=torch.float64, device=self.device)
        for p in model.parameters():
            local = getattr(p, "ds_tensor", p)  # ZeRO-3 keeps the real values in the shard
            if local.numel():
                bad = bad + (~torch.isfinite(local.detach())).sum().to(bad)
        return float(self.all_reduce_sum(bad)) == 0

    def mean_over_processes(self, value: float) -> float:
        return float(self.all_reduce_sum(value)) / self.world_size

    def max_over_processes(self, value: float) -> float:
        tensor = torch.tensor(float(value), dtype=torch.float64, device=self.device)
        if self.world_size > 1:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
        return float(tensor)

    def gather_objects(self, items: list) -> list:
        """Concatenation of every process's ``items`` (picklable), on every process."""
        if self.world_size == 1:
            return list(items)
        gathered: list = [None] * self.world_size
        torch.distributed.all_gather_object(gathered, list(items))
        return [item for part in gathered for item in part]

    # ------------------------------------------------------------ state on disk
    def full_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The model's full state dict on the main process (gathers ZeRO-3 shards; call on all ranks)."""
        return self.accelerator.get_state_dict(model)

    def save_state(self, folder: str) -> None:
        """Model, optimizer, scheduler and every process's RNG, without pickle (all ranks call)."""
        from rlhf.runtime.training_state import save_training_state

        if self.trained is None:
            raise RuntimeError("save_state before prepare(): nothing to save")
        save_training_state(self, Path(folder))

    def load_state(self, folder: str) -> None:
        """Restores what :meth:`save_state` wrote; a damaged or foreign file raises StateFileError."""
        from rlhf.runtime.training_state import load_training_state

        if self.trained is None:
            raise RuntimeError("load_state before prepare(): nothing to restore into")
        load_training_state(self, Path(folder))

    def at_end(self, callback) -> None:
        """Calls ``callback()`` in :meth:`end` (e.g. to release the output folder's lock)."""
        self._at_end.append(callback)

    def end(self) -> None:
        # Every process reaches the end before the process group is torn down: a process that
        # destroys it while another still uses it (the main one writing summaries) can abort.
        self.barrier()
        for callback in self._at_end:
            callback()
        self.accelerator.free_memory()  # drop the references to models, optimizers and engines
        from accelerate.state import AcceleratorState, GradientState

        if _SHARED_DEPTH:
            # Another stage follows in this process (a pipeline): keep the process group, which
            # cannot be set up a second time over the launcher's rendezvous, and let the next
            # Backend build a new accelerator (its own precision, accumulation, ZeRO config) on it.
            for tracker in self.accelerator.trackers:
                tracker.finish()
            AcceleratorState._reset_state(reset_partial_state=False)
        else:
            self.accelerator.end_training()  # destroys the process group
            AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()

    def peak_memory_bytes(self) -> int:
        if torch.cuda.is_available():
            return int(torch.cuda.max_memory_allocated())
        try:
            import resource

            return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
        except (ImportError, OSError):
            return 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
