"""2 CPU processes: a frozen rank stops its peer within collective_timeout_s, and the ranks end
when their launcher is killed."""

import os
import signal
import subprocess
import time

import psutil
import pytest
from helpers import REPO, launch_command, sft_overrides

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def start_launch(port: int, args: list[str], **env_extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "WORLD_SIZE", "RANK", "LOCAL_RANK"))}
    env.update(OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1", **env_extra)
    cmd = launch_command(None, 2, port) + ["sft", "--config", "configs/sft/tiny.yaml", *args]
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def status(pid: int) -> str | None:
    try:
        return psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return None


def alive(pid: int) -> bool:
    return status(pid) not in (None, psutil.STATUS_ZOMBIE)


def kill_all(pids) -> None:
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_frozen_rank_stops_its_peer_naming_the_step(tmp_path):
    proc = start_launch(
        29561, sft_overrides(tmp_path / "run", "max_steps=50", "runtime.collective_timeout_s=5"), RLHF_TEST_FREEZE="1:3"
    )
    ranks: set[int] = set()
    frozen_at = peer_gone_at = None
    started = time.monotonic()
    try:
        while proc.poll() is None and time.monotonic() - started < 150:
            ranks |= {child.pid for child in psutil.Process(proc.pid).children(recursive=True)}
            states = {pid: status(pid) for pid in ranks}
            if frozen_at is None and psutil.STATUS_STOPPED in states.values():
                frozen_at = time.monotonic()
            if frozen_at and peer_gone_at is None and any(s in (None, psutil.STATUS_ZOMBIE) for s in states.values()):
                peer_gone_at = time.monotonic()
            time.sleep(0.2)
        output = proc.stdout.read() if proc.poll() is not None else ""
    finally:
        kill_all(ranks | ({proc.pid} if proc.poll() is None else set()))
    assert proc.returncode not in (None, 0), output[-4000:]
    # The peer stops about collective_timeout_s after the freeze, not after the library's default.
    assert frozen_at is not None and peer_gone_at is not None and peer_gone_at - frozen_at < 20, output[-4000:]
    assert "rank 0 stopped at stage sft, step 3" in output, output[-4000:]
    assert "runtime.collective_timeout_s=5" in output
    assert not (tmp_path / "run" / "summary.json").exists()


def test_the_ranks_end_when_their_launcher_is_killed(tmp_path):
    out = tmp_path / "run"
    proc = start_launch(29562, sft_overrides(out, "max_steps=3000", "tracking.log_every=1"))
    ranks: list[int] = []
    try:
        started = time.monotonic()
        while not (out / "metrics.jsonl").exists():
            assert proc.poll() is None and time.monotonic() - started < 120, proc.stdout.read()[-4000:]
            time.sleep(0.2)
        ranks = [child.pid for child in psutil.Process(proc.pid).children(recursive=True)]
        assert len(ranks) == 2
        os.killpg(proc.pid, signal.SIGKILL)  # the ranks run in sessions of their own: only the launcher dies
        proc.wait(10)
        deadline = time.monotonic() + 20
        while any(alive(pid) for pid in ranks) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [pid for pid in ranks if alive(pid)]
    finally:
        kill_all(ranks)
    assert left == []
    time.sleep(1)
    assert not (out / "summary.json").exists() and not (out / "model").exists()
