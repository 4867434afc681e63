"""metrics.jsonl / summary.json / PNG, and which checkpoint folders count as complete."""

import json

import pytest

from rlhf.runtime.checkpoint import STATE_FILE, complete_checkpoints, resolve_resume
from rlhf.runtime.tracking import Tracker


def test_tracker_writes_metrics_summary_and_plot(tmp_path):
    tracker = Tracker(str(tmp_path), is_main=True, mode="disabled", progress=False, total_steps=3)
    for step in (1, 2, 3):
        tracker.log(step, {"loss": 1.0 / step, "lr": 0.1})
    tracker.finish({"final_loss": 1 / 3, "nan": float("nan")})
    lines = [json.loads(ln) for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [ln["step"] for ln in lines] == [1, 2, 3] and lines[1]["loss"] == 0.5
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["final_loss"] == pytest.approx(1 / 3) and summary["nan"] == "nan" and "wall_time_s" in summary
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_tracker_on_resume_drops_lines_after_the_checkpoint(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": s}) + "\n" for s in range(1, 6)))
    tracker = Tracker(str(tmp_path), is_main=True, mode="disabled", progress=False, start_step=3)
    tracker.log(4, {"loss": 0.0})
    steps = [json.loads(ln)["step"] for ln in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_non_main_process_writes_nothing(tmp_path):
    tracker = Tracker(str(tmp_path / "x"), is_main=False, mode="offline", progress=True)
    tracker.log(1, {"loss": 1.0})
    tracker.finish({})
    assert not (tmp_path / "x").exists()


def test_only_complete_checkpoints_are_resumed(tmp_path):
    root = tmp_path / "checkpoints"
    for name, complete in [
        ("step-00000002", True),
        ("step-00000010", True),
        ("step-00000012", False),
        (".tmp-step-00000014", True),
    ]:
        (root / name).mkdir(parents=True)
        if complete:
            (root / name / STATE_FILE).write_text("{}")
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step-00000002", "step-00000010"]
    assert resolve_resume("latest", str(tmp_path)).name == "step-00000010"
    assert resolve_resume(None, str(tmp_path)) is None
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        resolve_resume(str(root / "step-00000012"), str(tmp_path))
    assert resolve_resume("latest", str(tmp_path / "empty")) is None


def test_wandb_offline_writes_a_local_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    tracker = Tracker(str(tmp_path), is_main=True, mode="offline", progress=False, stage="sft")
    tracker.log(1, {"loss": 2.0})
    tracker.finish({"final_loss": 2.0})
    runs = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0
