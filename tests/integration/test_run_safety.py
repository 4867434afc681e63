"""Resume that runs no code from checkpoints, survives damaged files, and never mixes two runs in a folder."""

import json
import pickle
import shutil
import subprocess
import sys
import time

import pytest
import torch
from helpers import sft_overrides
from safetensors.torch import load_file

from rlhf.cli.main import main as cli
from rlhf.config.loader import load_config
from rlhf.runtime.checkpoint import CheckpointError
from rlhf.runtime.run_folder import LOCK_FILE, RunFolderError
from rlhf.stages.sft import SFTConfig, run


def sft(out, *extra):
    return run(load_config(SFTConfig, "configs/sft/tiny.yaml", sft_overrides(out, *extra)))


def weights(out):
    return load_file(str(out / "model" / "model.safetensors"))


def crash_after(out, step):
    """The folder as a crash after checkpoint ``step`` leaves it: no model, summary or later checkpoints."""
    shutil.rmtree(out / "model")
    (out / "summary.json").unlink()
    for ckpt in (out / "checkpoints").iterdir():
        if int(ckpt.name.split("-")[1]) > step:
            shutil.rmtree(ckpt)


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """An uninterrupted 4-step run with a checkpoint every step."""
    out = tmp_path_factory.mktemp("full") / "run"
    sft(out, "max_steps=4", "checkpoint.save_steps=1", "checkpoint.keep_last=0")
    return out


def copy_run(finished, tmp_path, step):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    crash_after(out, step)
    return out


def test_pickles_planted_beside_the_state_are_ignored(finished, tmp_path):
    out = copy_run(finished, tmp_path, 2)
    marker = tmp_path / "code-ran"
    for name in (
        "custom_checkpoint_0.pkl",
        "random_states_0.pkl",
        "optimizer.bin",
        "scheduler.bin",
        "pytorch_model.bin",
    ):
        (out / "checkpoints" / "step-00000002" / name).write_bytes(pickle.dumps(Payload(marker)))
    sft(out, "max_steps=4", "checkpoint.save_steps=1", "checkpoint.keep_last=0", "checkpoint.resume_from=latest")
    assert not marker.exists()
    for key, value in weights(finished).items():
        assert torch.equal(weights(out)[key], value), key


@pytest.mark.parametrize(
    "name", ["model.safetensors", "optimizer.safetensors", "scheduler.json", "rng-0.json", "trainer_state.json"]
)
def test_a_pickle_in_place_of_a_state_file_is_refused_and_runs_nothing(finished, tmp_path, name):
    out = copy_run(finished, tmp_path, 1)
    marker = tmp_path / "code-ran"
    (out / "checkpoints" / "step-00000001" / name).write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        sft(out, "max_steps=4", "checkpoint.save_steps=1", "checkpoint.keep_last=0", "checkpoint.resume_from=latest")
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncate model.safetensors", "truncate optimizer.safetensors", "empty state"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(finished, tmp_path, capsys, damage):
    out = copy_run(finished, tmp_path, 3)
    newest = out / "checkpoints" / "step-00000003"
    if damage == "empty state":
        (newest / "trainer_state.json").write_text("")
        damaged = "trainer_state.json"
    else:
        damaged = damage.split()[1]
        data = (newest / damaged).read_bytes()
        (newest / damaged).write_bytes(data[: len(data) // 2])
    sft(out, "max_steps=4", "checkpoint.save_steps=1", "checkpoint.keep_last=0", "checkpoint.resume_from=latest")
    err = capsys.readouterr().err
    assert "skipping a damaged checkpoint" in err and damaged in err and "resuming from step-00000002" in err
    for key, value in weights(finished).items():
        assert torch.equal(weights(out)[key], value), key


def test_a_checkpoint_of_the_old_pickled_format_is_not_loaded(finished, tmp_path):
    out = copy_run(finished, tmp_path, 1)
    state_file = out / "checkpoints" / "step-00000001" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state_file.write_text(json.dumps({"step": state["step"], "data_position": 16}))
    with pytest.raises(CheckpointError, match="older version that pickled"):
        sft(out, "max_steps=4", "checkpoint.resume_from=latest")


def test_another_stage_config_into_a_finished_run_is_refused_before_writing(finished, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != LOCK_FILE}
    code = cli(["dpo", "--config", "configs/sft/tiny.yaml", f"output_dir={out}", "tracking.mode=disabled"])
    assert code == 2
    assert "holds a sft run, not a dpo run" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and p.name != LOCK_FILE} == before


def test_a_finished_run_is_not_retrained_unless_overwrite(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    with pytest.raises(RunFolderError, match="already holds a finished sft run.*overwrite=true"):
        sft(out, "max_steps=4")
    sft(out, "max_steps=2", "overwrite=true")
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert sorted(set(steps)) == [1, 2]  # the old run's lines are gone with it
    assert not (out / "checkpoints" / "step-00000004").exists()


def test_resume_with_a_changed_training_key_is_refused_with_the_diff(finished, tmp_path):
    out = copy_run(finished, tmp_path, 2)
    with pytest.raises(RunFolderError, match=r"optim\.lr: 0\.003 -> 10000000000\.0"):
        sft(out, "max_steps=4", "checkpoint.resume_from=latest", "optim.lr=1e10")
    # The checkpoint's own copy of the config is checked too (resume_from another folder).
    other = tmp_path / "other"
    with pytest.raises(CheckpointError, match=r"another config \(optim\.lr"):
        sft(other, "max_steps=4", f"checkpoint.resume_from={out / 'checkpoints' / 'step-00000002'}", "optim.lr=1e10")
    # max_steps may change on resume.
    summary = sft(
        out, "max_steps=5", "checkpoint.resume_from=latest", "checkpoint.save_steps=1", "checkpoint.keep_last=0"
    )
    assert summary["steps"] == 5


def test_a_second_run_into_a_locked_folder_stops_at_once(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); "
            "f.write('4242'); f.flush(); print('locked', flush=True); time.sleep(60)",
            str(out / LOCK_FILE),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.time()
        with pytest.raises(RunFolderError, match=r"in use by another run \(process 4242\)"):
            sft(out, "max_steps=1")
        assert time.time() - started < 30
        assert not (out / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_folder_of_other_files_is_refused_even_with_overwrite(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    for extra in ([], ["overwrite=true"]):
        with pytest.raises(RunFolderError, match="not an rlhf run"):
            sft(out, "max_steps=1", *extra)
    assert (out / "notes.txt").read_text() == "keep me"


def test_a_full_disk_while_checkpointing_names_the_file_and_keeps_the_last_checkpoint(
    finished, tmp_path, monkeypatch, capsys
):
    import errno
    import os

    out = tmp_path / "run"
    real_fsync, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) > 12:  # the first checkpoint fits, the disk fills during the second
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    code = cli(
        ["sft", "--config", "configs/sft/tiny.yaml", *sft_overrides(out, "max_steps=4", "checkpoint.save_steps=1")]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"no space left on device while writing {out / 'checkpoints'}" in err
    complete = [
        p.name
        for p in (out / "checkpoints").iterdir()
        if (p / "trainer_state.json").is_file() and not p.name.startswith(".")
    ]
    assert complete and not (out / "model").exists()


def test_resume_after_the_input_model_changed_is_refused(finished, tmp_path):
    base = tmp_path / "base"
    shutil.copytree(finished / "model", base)
    out = tmp_path / "run"
    sft(out, f"model.name_or_path={base}", "max_steps=2", "checkpoint.save_steps=1", "checkpoint.keep_last=0")
    crash_after(out, 1)
    # The folder the run started from is retrained in place (another model, same path).
    sft(tmp_path / "other", f"model.name_or_path={base}", "max_steps=1", "optim.lr=1e-2")
    shutil.rmtree(base)
    shutil.copytree(tmp_path / "other" / "model", base)
    with pytest.raises(RunFolderError, match="started from other models .*model: sha256:"):
        sft(out, f"model.name_or_path={base}", "max_steps=2", "checkpoint.resume_from=latest")


def test_overwrite_deletes_only_what_a_stage_writes(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    (out / "notes.md").write_text("mine")
    with pytest.raises(RunFolderError, match=r"also files no stage writes \(notes\.md\)"):
        sft(out, "max_steps=1", "overwrite=true")
    assert (out / "notes.md").read_text() == "mine" and (out / "summary.json").is_file()
    # A folder with a config.yaml of its own is not a run: never replaced.
    project = tmp_path / "project"
    project.mkdir()
    (project / "config.yaml").write_text("a: 1\n")
    (project / "main.py").write_text("print(1)\n")
    with pytest.raises(RunFolderError, match="not an rlhf run"):
        sft(project, "max_steps=1", "overwrite=true")
    assert sorted(p.name for p in project.iterdir()) == ["config.yaml", "main.py"]


def test_overwrite_refuses_to_delete_the_model_it_starts_from(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    with pytest.raises(RunFolderError, match="which this run starts from"):
        sft(out, f"model.name_or_path={out / 'model'}", "max_steps=1", "overwrite=true")
    assert (out / "model" / "model.safetensors").is_file()


def test_a_same_size_pickle_in_the_newest_checkpoint_falls_back_and_runs_nothing(finished, tmp_path, capsys):
    out = copy_run(finished, tmp_path, 3)
    marker = tmp_path / "code-ran"
    target = out / "checkpoints" / "step-00000003" / "scheduler.json"
    payload = pickle.dumps(Payload(marker))
    size = target.stat().st_size
    assert len(payload) <= size
    target.write_bytes(payload + b" " * (size - len(payload)))  # passes the manifest's size check
    sft(out, "max_steps=4", "checkpoint.save_steps=1", "checkpoint.keep_last=0", "checkpoint.resume_from=latest")
    assert not marker.exists()
    assert "scheduler.json: is damaged" in capsys.readouterr().err
    for key, value in weights(finished).items():
        assert torch.equal(weights(out)[key], value), key


def test_resuming_an_earlier_checkpoint_sets_the_newer_ones_aside(finished, tmp_path, capsys):
    out = copy_run(finished, tmp_path, 3)
    sft(
        out,
        "max_steps=4",
        "checkpoint.save_steps=0",
        f"checkpoint.resume_from={out / 'checkpoints' / 'step-00000001'}",
    )
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names[0].startswith("abandoned-") and names[1:] == ["step-00000001", "step-00000004"]
    assert sorted(p.name for p in (out / "checkpoints" / names[0]).iterdir()) == ["step-00000002", "step-00000003"]
    assert "moved 2 checkpoint(s) newer than step-00000001" in capsys.readouterr().err


def test_resume_under_another_launch_is_refused(finished, tmp_path):
    out = copy_run(finished, tmp_path, 2)
    state_file = out / "checkpoints" / "step-00000002" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    assert state["launch"]["world_size"] == 1
    state["launch"]["world_size"] = 2
    state_file.write_text(json.dumps(state))
    with pytest.raises(CheckpointError, match="another launch .*world_size 2 -> 1"):
        sft(out, "max_steps=4", "checkpoint.resume_from=latest")
