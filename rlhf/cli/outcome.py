"""How a command that runs stages ends: an exit code and one paragraph, never a traceback for a
situation that is not a bug (a stopped run, a refused folder, a full disk, a frozen peer)."""

from __future__ import annotations

import sys
from collections.abc import Callable


def run_reporting(command: str, work: Callable[[], object], user_errors: tuple[type[BaseException], ...] = ()) -> int:
    """Calls ``work()`` and returns the exit code: 0, 2 for ``user_errors`` and run errors, 3 for
    a run stopped on a non-finite value, 4 for a collective that failed (a peer froze or died)."""
    from rlhf.runtime.backend import launched_as_main
    from rlhf.runtime.errors import RUN_ERRORS, describe_run_error
    from rlhf.runtime.liveness import EXIT_CODE, describe_collective_failure, is_collective_failure
    from rlhf.stages.stopped import RunStopped

    prefix = f"rlhf {command}:"
    try:
        work()
    except RunStopped as stopped:  # the stage kept what was good and says why
        if launched_as_main():  # every process of a launch stops alike; one says so
            stage = "" if command == stopped.stage else f" stage {stopped.stage}"
            print(f"{prefix}{stage} {stopped}", file=sys.stderr)
        return RunStopped.EXIT_CODE
    except user_errors as err:
        print(f"{prefix} {err}", file=sys.stderr)
        return 2
    except RUN_ERRORS as err:
        print(f"{prefix} {describe_run_error(err)}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # every process that notices a frozen or dead peer stops here
        if not is_collective_failure(err):
            raise
        print(f"{prefix} {describe_collective_failure(err)}", file=sys.stderr)
        return EXIT_CODE
    return 0
