"""metrics.jsonl / summary.json / PNG, and which checkpoint folders count as complete."""

import json

import pytest

from rlhf.runtime.checkpoint import FORMAT, STATE_FILE, CheckpointError, complete_checkpoints, resolve_resume
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


def five_steps() -> bytes:
    return "".join(json.dumps({"step": s, "loss": s / 10}) + "\n" for s in range(1, 6)).encode()


TORN = [
    b'{"step": 6, "loss": 0.',  # cut off mid-write, no newline
    b"\x00" * 24,  # a block the file system extended but never wrote
    b"\xff\xfe garbage\n",  # not even UTF-8
]


@pytest.mark.parametrize("torn", TORN)
@pytest.mark.parametrize("start_step", [3, 5])
def test_a_torn_last_metrics_line_is_dropped_with_a_warning(tmp_path, caplog, torn, start_step):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(five_steps() + torn)
    with caplog.at_level("WARNING", logger="rlhf.runtime.tracking"):
        tracker = Tracker(str(tmp_path), is_main=True, mode="disabled", progress=False, start_step=start_step)
    assert [r.getMessage() for r in caplog.records if str(path) in r.getMessage()] == [
        f"{path}:6: dropped the last line, which is incomplete or damaged (what a crash or a full disk "
        "leaves while it is written)"
    ]
    assert [r["step"] for r in tracker.history] == list(range(1, start_step + 1))
    tracker.log(start_step + 1, {"loss": 0.0})
    # The new record is a line of its own, not glued to the remains of the torn one.
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, start_step + 2))
    assert lines[1] == {"step": 2, "loss": 0.2} and lines[-1] == {"step": start_step + 1, "loss": 0.0}


@pytest.mark.parametrize(
    "damaged, why",
    [
        (b'{"step": 3, "lo\n', "not valid JSON"),
        (b"\xff\xfe\n", "not UTF-8"),
        (b"[3, 0.3]\n", "not a JSON object with a numeric 'step'"),
        (b'{"loss": 0.3}\n', "not a JSON object with a numeric 'step'"),
    ],
)
def test_a_damaged_metrics_line_before_the_last_stops_the_resume_naming_file_and_line(tmp_path, damaged, why):
    from rlhf.runtime.errors import RUN_ERRORS, describe_run_error
    from rlhf.runtime.tracking import MetricsFileError

    path = tmp_path / "metrics.jsonl"
    lines = five_steps().splitlines(keepends=True)
    content = b"".join(lines[:2]) + damaged + b"".join(lines[3:])
    path.write_bytes(content)
    with pytest.raises(MetricsFileError) as caught:
        Tracker(str(tmp_path), is_main=True, mode="disabled", progress=False, start_step=4)
    assert str(caught.value) == (
        f"{path}:3: {why}; only the last line of a metrics log can be torn by a crash. "
        "Repair or delete that line, or start afresh with overwrite=true"
    )
    assert isinstance(caught.value, RUN_ERRORS) and describe_run_error(caught.value) == str(caught.value)
    assert path.read_bytes() == content  # left as it was, for the user to look at


def test_non_main_process_writes_nothing(tmp_path):
    tracker = Tracker(str(tmp_path / "x"), is_main=False, mode="offline", progress=True)
    tracker.log(1, {"loss": 1.0})
    tracker.finish({})
    assert not (tmp_path / "x").exists()


def _write_checkpoint(folder, step):
    folder.mkdir(parents=True)
    (folder / "scheduler.json").write_text("{}")
    state = {"step": step, "format": FORMAT, "files": {"scheduler.json": 2}}
    (folder / STATE_FILE).write_text(json.dumps(state))


def test_only_complete_checkpoints_are_resumed(tmp_path):
    root = tmp_path / "checkpoints"
    for name, complete in [
        ("step-00000002", True),
        ("step-00000010", True),
        ("step-00000012", False),
        (".tmp-step-00000014", True),
    ]:
        if complete:
            _write_checkpoint(root / name, int(name.split("-")[-1]))
        else:
            (root / name).mkdir(parents=True)
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step-00000002", "step-00000010"]
    assert resolve_resume("latest", str(tmp_path)).name == "step-00000010"
    assert resolve_resume(None, str(tmp_path)) is None
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        resolve_resume(str(root / "step-00000012"), str(tmp_path))
    assert resolve_resume("latest", str(tmp_path / "empty")) is None


def test_latest_stops_when_every_checkpoint_is_damaged(tmp_path):
    root = tmp_path / "checkpoints"
    _write_checkpoint(root / "step-00000001", 1)
    _write_checkpoint(root / "step-00000002", 2)
    (root / "step-00000001" / "scheduler.json").write_text("{}   ")  # size differs from the manifest
    (root / "step-00000002" / STATE_FILE).write_text('{"step": 2')
    with pytest.raises(CheckpointError) as caught:
        resolve_resume("latest", str(tmp_path))
    message = str(caught.value)
    assert "step-00000002/trainer_state.json: is empty or damaged" in message
    assert "step-00000001/scheduler.json: has 5 bytes, 2 were written" in message


def test_wandb_offline_writes_a_local_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    tracker = Tracker(str(tmp_path), is_main=True, mode="offline", progress=False, stage="sft")
    tracker.log(1, {"loss": 2.0})
    tracker.finish({"final_loss": 2.0})
    runs = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0


def test_samples_after_the_checkpoint_are_dropped_on_resume_and_a_fresh_run_starts_afresh(tmp_path):
    rows = [{"step": s, "prompt": f"p{s}-{i}", "response": "r", "score": 1.0} for s in (1, 2, 3, 4) for i in (0, 1)]
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 5, "prompt": "to')  # torn by a crash
    tracker = Tracker(str(tmp_path), is_main=True, mode="disabled", progress=False, start_step=2)
    tracker.log_samples(3, [{"prompt": "again", "response": "r", "score": 0.5}])
    got = [json.loads(ln) for ln in path.read_text().splitlines()]
    assert [(r["step"], r["prompt"]) for r in got] == [(1, "p1-0"), (1, "p1-1"), (2, "p2-0"), (2, "p2-1"), (3, "again")]
    Tracker(str(tmp_path), is_main=True, mode="disabled", progress=False, start_step=0)
    assert not path.exists()
