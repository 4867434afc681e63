"""NaN and inf stop a run, or drop the optimizer step they appear in (``nonfinite.policy``).

Every optimizer step goes through :meth:`NonFiniteGuard.optimizer_step`: it clips the gradients,
asks all processes at once whether this step's loss and gradient norm are finite (one all-reduce,
``Backend.nonfinite_names``), then applies the step, drops it, or stops the run. PPO also checks
each rollout (:meth:`NonFiniteGuard.check_rollout`). Checkpoints are written through
:meth:`NonFiniteGuard.save_checkpoint`, which checks the parameters first, so every checkpoint on
disk is finite, and keep_last pruning (done once the new checkpoint is complete) never removes the
last good one.

A stop writes summary.json (status "stopped", the reason, the last good checkpoint), no model
folder, releases the backend and raises :class:`RunStopped` on every process.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn

from rlhf.config.loader import ConfigError
from rlhf.runtime.backend import Backend
from rlhf.runtime.checkpoint import read_checkpoint_state, save_checkpoint
from rlhf.stages import common
from rlhf.stages.stopped import RunStopped

STATE_KEY = "nonfinite"  # the guard's counters in a checkpoint's trainer state


def _shown(value: Any) -> str:
    """A value for a stop or skip message: numbers as they are, tensors by their bad entries."""
    if value is None:
        return "unknown"
    if hasattr(value, "numel") and value.numel() != 1:
        import torch

        bad = int((~torch.isfinite(value)).sum())
        return f"{bad} of {value.numel()} entries non-finite here" if bad else "finite here, not on another process"
    number = float(value)
    return repr(number) if not math.isfinite(number) else "finite here, not on another process"


class NonFiniteGuard:
    """The ``nonfinite`` policy of one stage run. Build it right after ``common.start`` (it
    refuses skip under DeepSpeed before any model is loaded), then call :meth:`begin` once the
    tracker exists."""

    def __init__(self, cfg, backend: Backend, stage: str, *, rollouts: bool = False) -> None:
        self.policy = cfg.nonfinite.policy
        self.max_skips = cfg.nonfinite.max_consecutive_skips
        if self.policy == "skip" and not backend.can_skip_steps:
            backend.end()  # nothing was trained; the output folder's lock is released
            raise ConfigError(
                f"nonfinite.policy=skip (stage {stage}) is not available under DeepSpeed: its engine "
                "clips and applies the update inside the backward pass, before the loss and gradient "
                "norm can be checked, so a bad step cannot be dropped. Use nonfinite.policy=stop (the "
                "default), or launch without DeepSpeed."
            )
        self.cfg, self.backend, self.stage, self.rollouts = cfg, backend, stage, rollouts
        self.skipped_steps = 0  # optimizer steps without an update (this guard's or a loss scaler's)
        self.skipped_rollouts = 0  # PPO steps dropped for a bad rollout
        self.consecutive = 0  # bad steps / rollouts since the last good optimizer step
        self.last_good: Path | None = None
        self.tracker = None
        self.started = time.time()
        self.plot_keys: tuple[str, ...] = ("loss",)

    # ------------------------------------------------------------------ set-up
    def begin(self, model, tracker, resumed: Path | None, *, started: float, plot_keys: Iterable[str]) -> None:
        """Restores the counters saved with the checkpoint resumed from, whose parameters must be finite."""
        self.tracker, self.started, self.plot_keys = tracker, started, tuple(plot_keys)
        if resumed is None:
            return
        state = read_checkpoint_state(resumed)
        saved = state.get(STATE_KEY, {})
        self.skipped_steps = int(saved.get("skipped_steps", 0))
        self.skipped_rollouts = int(saved.get("skipped_rollouts", 0))
        self.consecutive = int(saved.get("consecutive", 0))
        if not self.backend.parameters_finite(model):
            self.stop(int(state.get("step", 0)), f"the checkpoint resumed from, {resumed}, holds non-finite parameters")
        self.last_good = Path(resumed)

    # ---------------------------------------------------------------- training
    def optimizer_step(
        self, step: int, model, optimizer, scheduler, loss: float, *, where: str = ""
    ) -> tuple[float, bool]:
        """Finishes an optimizer step after the backward of its last micro-batch.

        ``loss``: this process's share of the step's loss (what was back-propagated). Returns the
        pre-clip gradient norm (NaN when the engine does not report one) and whether the update
        was applied. A dropped step leaves parameters, optimizer and scheduler as they were.
        """
        backend = self.backend
        norm = backend.clip_gradients(model)
        values = {"loss": loss, "grad_norm": norm}
        bad = backend.nonfinite_names(values)
        # Under fp16 loss scaling, overflowing gradients are routine: the scaler skips that update
        # and lowers its scale, and the step is counted as skipped.
        overflow = bad == ["grad_norm"] and backend.loss_scaling
        if bad and not overflow:
            self._bad(step, bad, values, where)
            backend.skip_step(optimizer)
        elif backend.apply_step(optimizer):
            if overflow:  # an engine applied an update whose gradients were not finite
                self.stop(step, f"non-finite grad_norm ({_shown(norm)}) at step {step}{where} was applied")
            scheduler.step()
            self.consecutive = 0
            return (float("nan") if norm is None else norm), True
        self.skipped_steps += 1
        return (float("nan") if norm is None else norm), False

    def check_rollout(self, step: int, values: Mapping[str, Any]) -> bool:
        """Whether every process's rollout ``values`` (named tensors) are finite; a bad rollout
        stops the run, or (skip) is dropped with its whole step."""
        bad = self.backend.nonfinite_names(values)
        if not bad:
            return True
        self._bad(step, bad, values, " (rollout)")
        self.skipped_rollouts += 1
        return False

    def _bad(self, step: int, bad: list[str], values: Mapping[str, Any], where: str) -> None:
        """Stops the run, or counts one more bad step in a row when it may be skipped."""
        detail = ", ".join(f"{name} ({_shown(values[name])})" for name in bad)
        reason = f"non-finite {detail} at step {step}{where}"
        if self.policy == "stop":
            self.stop(step, reason, bad)
        if self.consecutive >= self.max_skips:
            self.stop(
                step, f"{reason}, after {self.consecutive} skipped in a row (nonfinite.max_consecutive_skips)", bad
            )
        self.consecutive += 1
        self.tracker.write(f"{self.stage}: {reason}; dropped ({self.consecutive} in a row, at most {self.max_skips})")

    # ---------------------------------------------------------------- saving
    def save_checkpoint(self, step: int, model, state: dict[str, Any]) -> Path:
        """A checkpoint of finite parameters (checked on all processes first) with this guard's counters."""
        if not self.backend.parameters_finite(model):
            self.stop(step, f"non-finite parameters before the checkpoint of step {step}", ["parameters"])
        path = save_checkpoint(
            self.backend,
            self.cfg.output_dir,
            step,
            {**state, STATE_KEY: {**self.counts(), "consecutive": self.consecutive}},
            self.cfg.checkpoint.keep_last,
        )
        self.last_good = path
        return path

    def counts(self) -> dict[str, int]:
        """What metrics rows and the summary report about dropped steps."""
        counts = {"skipped_steps": self.skipped_steps}
        if self.rollouts:
            counts["skipped_rollouts"] = self.skipped_rollouts
        return counts

    def finished(self) -> dict[str, Any]:
        """The summary keys of a run that reached its last step."""
        return {"status": "finished", **self.counts()}

    def stop(self, step: int, reason: str, names: list[str] | None = None) -> NoReturn:
        """Writes the stopped run's summary, releases the backend and raises :class:`RunStopped`
        (all processes call it together: every decision here is taken on all-reduced flags)."""
        last_good = str(self.last_good) if self.last_good else None
        summary = {
            "stage": self.stage,
            "status": "stopped",
            "stopped_at_step": step,
            "reason": reason,
            "nonfinite": list(names or []),
            "last_good_checkpoint": last_good,
            **self.counts(),
            **common.run_facts(self.backend, self.started),
        }
        self.tracker.write(f"{self.stage}: stopped at step {step}: {reason}")
        self.tracker.finish(summary, plot_keys=self.plot_keys)
        self.backend.end()
        raise RunStopped(self.stage, step, reason, last_good, str(Path(self.cfg.output_dir) / "summary.json"))
