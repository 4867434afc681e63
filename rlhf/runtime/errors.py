"""The errors a run raises for a user's situation, not a bug: shown as a message, not a traceback."""

from __future__ import annotations

import errno

from rlhf.runtime.checkpoint import CheckpointError
from rlhf.runtime.run_folder import RunFolderError
from rlhf.runtime.safe_state import StateFileError
from rlhf.runtime.tracking import MetricsFileError

RUN_ERRORS: tuple[type[BaseException], ...] = (
    RunFolderError,
    CheckpointError,
    StateFileError,
    MetricsFileError,
    OSError,
)


def describe_run_error(err: BaseException) -> str:
    """One paragraph for the user; re-raises OSErrors that are not a full disk (those are bugs)."""
    if isinstance(err, OSError) and not isinstance(err, (RunFolderError, CheckpointError, StateFileError)):
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise err
        return f"{err.strerror or err} (free some space, then resume with checkpoint.resume_from=latest)"
    return str(err)
