"""A launch that cannot go on ends: a peer that stopped answering, a launcher that died.

Two ways a multi-process run can hang or outlive its launch:

- a process freezes (or dies without its peers noticing): the others wait in a collective
  call until the process-group timeout (``runtime.collective_timeout_s``), whose error
  :func:`describe_collective_failure` turns into one paragraph naming the stage and step;
- the launcher is killed (``kill -9`` of its process group): its ranks run in sessions of their
  own and would train on. :func:`exit_with_launcher` makes the kernel send SIGTERM to a rank
  when its parent dies (``PR_SET_PDEATHSIG``), and a watcher thread ends the rank if its parent
  is already gone (the signal is only armed for a parent alive at the time of the call).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

_PARENT = os.getppid()  # the launcher, recorded as early as this module is imported
_PR_SET_PDEATHSIG = 1
EXIT_CODE = 4  # of a command whose collective call failed or timed out
_POSITION: dict[str, object] = {"stage": None, "step": None, "timeout_s": None}
_WATCHING = False


def exit_with_launcher(poll_s: float = 1.0) -> None:
    """Ends this process when the process that launched it dies (Linux; once per process)."""
    global _WATCHING
    if _WATCHING or not sys.platform.startswith("linux"):
        return
    _WATCHING = True
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        pass  # the watcher below still ends the process
    threading.Thread(target=_watch_parent, args=(poll_s,), name="rlhf-launcher-watch", daemon=True).start()


def _watch_parent(poll_s: float) -> None:
    while os.getppid() == _PARENT:
        time.sleep(poll_s)
    print(
        f"rlhf: the launcher of this process (pid {_PARENT}) is gone; ending rank "
        f"{os.environ.get('RANK', '?')} ({_where()}).",
        file=sys.stderr,
        flush=True,
    )
    os.kill(os.getpid(), signal.SIGTERM)


def set_timeout(timeout_s: float) -> None:
    """Records the timeout of the launch's process group (set up once, by its first stage)."""
    if _POSITION["timeout_s"] is None:
        _POSITION["timeout_s"] = timeout_s


def at_step(stage: str | None, step: int) -> None:
    """Records where the run is, for the message of a collective that fails."""
    _POSITION["stage"] = stage
    _POSITION["step"] = step
    _freeze_for_tests(step)


def _freeze_for_tests(step: int) -> None:
    # RLHF_TEST_FREEZE=RANK:STEP stops that rank with SIGSTOP when it starts that step, to test
    # what its peers do when a process stops answering.
    spec = os.environ.get("RLHF_TEST_FREEZE")
    if spec and spec == f"{os.environ.get('RANK', '0')}:{step}":
        os.kill(os.getpid(), signal.SIGSTOP)


def _where() -> str:
    stage, step = _POSITION["stage"], _POSITION["step"]
    if step is None:
        return f"stage {stage or '?'}, before the first step"
    return f"stage {stage or '?'}, step {step}"


_COLLECTIVE_MARKERS = ("timed out", "timeout", "connection closed by peer", "connection reset by peer", "broken pipe")


def is_collective_failure(err: BaseException) -> bool:
    """Whether ``err`` is a collective call that failed because a peer stopped answering or died."""
    import torch.distributed as dist

    if isinstance(err, getattr(dist, "DistError", ())) and not isinstance(err, getattr(dist, "DistStoreError", ())):
        return True
    text = str(err).lower()
    return (
        isinstance(err, RuntimeError)
        and ("gloo" in text or "nccl" in text or "process group" in text)
        and any(marker in text for marker in _COLLECTIVE_MARKERS)
    )


def describe_collective_failure(err: BaseException) -> str:
    """One paragraph for a collective that failed: where, why, and what to do."""
    timeout_s = _POSITION["timeout_s"]
    first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    limit = f" (runtime.collective_timeout_s={timeout_s:g})" if timeout_s else ""
    return (
        f"rank {os.environ.get('RANK', '0')} stopped at {_where()}: a collective call across the "
        f"processes failed or waited past the process-group timeout{limit}, so another process "
        f"froze, died or fell out of step. Nothing of this step was saved; resume from the last "
        f"checkpoint with checkpoint.resume_from=latest. ({first_line})"
    )
