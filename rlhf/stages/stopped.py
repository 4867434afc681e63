"""The exception a stage raises when it stops a run on a value it cannot trust (NaN / inf).

Kept free of model code so that the commands can catch it without importing a stage.
"""

from __future__ import annotations


class RunStopped(RuntimeError):
    """A run stopped early on a non-finite value; nothing non-finite was saved.

    By the time it is raised the stage has written summary.json (status "stopped", the reason, the
    last good checkpoint), written no model folder, and released its backend. The commands turn it
    into one paragraph on stderr and :attr:`EXIT_CODE`.
    """

    EXIT_CODE = 3

    def __init__(self, stage: str, step: int, reason: str, last_good_checkpoint: str | None, summary: str) -> None:
        self.stage = stage
        self.step = step
        self.reason = reason
        self.last_good_checkpoint = last_good_checkpoint
        self.summary = summary
        super().__init__(
            f"stopped at step {step}: {reason}. Nothing non-finite was saved and no model folder was "
            f"written; the last good checkpoint is {last_good_checkpoint or 'none (no checkpoint was written)'}. "
            f"The reason is also in {summary}. Start afresh with a lower optim.lr (overwrite=true), or "
            "continue from the last good checkpoint with checkpoint.resume_from=latest, e.g. with "
            "nonfinite.policy=skip to drop bad steps."
        )
