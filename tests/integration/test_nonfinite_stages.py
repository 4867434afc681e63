"""NaN / inf in real stage runs on builtin:tiny (seconds each): a stop keeps the last good
checkpoint and writes no model, skip drops exactly the bad step, one bad step too many stops;
through the CLI a stop is exit code 3 without a traceback, and a pipeline ends at that stage.

Bad steps come from optim.lr=1e10 (every step after the first is NaN) or from a loss function
wrapped to return NaN at chosen calls (each stage here makes one such call per optimizer step).
"""

import json
import math

import pytest
import torch
from helpers import PIPELINE_SHORT
from safetensors.torch import load_file

from rlhf.cli.main import main
from rlhf.config.loader import load_config
from rlhf.stages.registry import config_class, run_function
from rlhf.stages.stopped import RunStopped

QUIET = ["tracking.mode=disabled", "tracking.progress=false", "checkpoint.save_steps=1"]
FAST = {
    "sft": ["eval_steps=0", "data.train=['builtin:judged-sft?n=200']", "data.max_length=96"],
    "rm": [
        "eval_steps=0",
        "data.train=['builtin:judged-pairwise?n=200']",
        "data.eval=['builtin:judged-pairwise?n=20&seed=99']",
        "normalize.data=null",
        "batch.micro_batch_size=8",
        "data.max_length=96",
    ],
    "dpo": [
        "eval_steps=0",
        "model.name_or_path=builtin:tiny",
        "data.train=['builtin:judged-pairwise?n=200']",
        "data.eval=['builtin:judged-pairwise?n=20&seed=9']",
        "batch.micro_batch_size=8",
        "data.max_length=96",
    ],
    "ppo": [
        "model.name_or_path=builtin:tiny",
        "data.prompts=['builtin:judged-prompts?n=200']",
        "reward.functions=['helpers:constant_reward']",
        "rollout.batch_size=16",
        "rollout.max_new_tokens=8",
        "batch.micro_batch_size=16",  # one optimizer update per PPO step
        "ppo.epochs=1",
        "rollout.log_samples_every=0",
        "rollout.missing_eos_score=null",  # a NaN score stays NaN in every row
    ],
}
# The loss each stage calls once per optimizer step, as (module, name).
LOSS = {
    "sft": ("rlhf.stages.sft", "sft_loss_on_targets"),
    "rm": ("rlhf.stages.rm", "_objective"),
    "dpo": ("rlhf.stages.dpo", "dpo_loss"),
    "ppo": ("rlhf.stages.ppo_update", "ppo_policy_loss"),
}


def run_stage(stage, out, *extra):
    cfg = load_config(
        config_class(stage), f"configs/{stage}/tiny.yaml", [f"output_dir={out}", *QUIET, *FAST[stage], *extra]
    )
    return run_function(stage)(cfg)


def nan_loss_at(monkeypatch, stage, calls):
    """The stage's loss returns NaN (with its graph, so the gradients are NaN too) at ``calls`` (1-based)."""
    module, name = LOSS[stage]
    original = getattr(__import__(module, fromlist=[name]), name)
    seen = []

    def wrapped(*args, **kwargs):
        seen.append(1)
        loss, metrics = original(*args, **kwargs)
        return (loss * float("nan") if len(seen) in calls else loss), metrics

    monkeypatch.setattr(f"{module}.{name}", wrapped)


def nan_score_at(monkeypatch, calls, source="helpers:constant_reward"):
    """PPO's reward ``source`` scores NaN at rollouts ``calls`` (1-based)."""
    from rlhf.rollout.rewards import Scorer

    original, seen = Scorer.score_by_source, []

    def wrapped(self, prompts, responses, records=None):
        seen.append(1)
        scores = original(self, prompts, responses, records)
        if len(seen) in calls:
            scores[source] = torch.full_like(scores[source], float("nan"))
        return scores

    monkeypatch.setattr(Scorer, "score_by_source", wrapped)


def checkpoints(out):
    return sorted(p.name for p in (out / "checkpoints").iterdir())


def weights(out, step):
    return load_file(str(out / "checkpoints" / f"step-{step:08d}" / "model.safetensors"))


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def all_finite(folder):
    """Every tensor of every safetensors file in ``folder`` (weights and optimizer state)."""
    files = sorted(folder.glob("*.safetensors"))
    assert files
    return all(torch.isfinite(t).all() for f in files for t in load_file(str(f)).values())


def rows(out):
    """metrics.jsonl by step (a step's training and evaluation lines merged)."""
    by_step: dict = {}
    for row in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()):
        by_step.setdefault(row["step"], {}).update(row)
    return by_step


def assert_stopped(out, summary_step, last_good_step, kept):
    saved = json.loads((out / "summary.json").read_text())
    assert saved["status"] == "stopped" and saved["stopped_at_step"] == summary_step
    assert saved["last_good_checkpoint"] == str(out / "checkpoints" / f"step-{last_good_step:08d}")
    assert checkpoints(out) == [f"step-{s:08d}" for s in kept]
    assert all(all_finite(out / "checkpoints" / name) for name in checkpoints(out))
    assert not (out / "model").exists() and not (out / ".tmp-model").exists()
    return saved


@pytest.mark.parametrize("stage,keep_last", [("sft", 1), ("rm", 2), ("dpo", 1), ("ppo", 2)])
def test_stop_keeps_the_last_good_checkpoint_and_writes_no_model(tmp_path, monkeypatch, stage, keep_last):
    # Steps 1-3 are good and checkpointed; step 4 is not.
    if stage == "ppo":
        nan_score_at(monkeypatch, {4})
    else:
        nan_loss_at(monkeypatch, stage, {4})
    out = tmp_path / stage
    with pytest.raises(RunStopped) as info:
        run_stage(stage, out, "max_steps=6", f"checkpoint.keep_last={keep_last}")
    assert info.value.step == 4 and info.value.stage == stage
    kept = [3] if keep_last == 1 else [2, 3]
    saved = assert_stopped(out, 4, 3, kept)
    if stage == "ppo":  # the reward function is named
        assert saved["nonfinite"] == ["score from helpers:constant_reward", "score", "advantages"]
        assert saved["reason"].startswith("non-finite score from helpers:constant_reward (16 of 16 entries")
    else:
        assert saved["nonfinite"][0] == "loss" and "at step 4" in saved["reason"]
    assert max(rows(out)) == 3  # nothing was logged for the bad step


@pytest.mark.parametrize("stage", ["sft", "rm", "dpo", "ppo"])
def test_skip_drops_exactly_the_bad_step_and_finishes(tmp_path, monkeypatch, stage):
    nan_loss_at(monkeypatch, stage, {3})
    out = tmp_path / stage
    summary = run_stage(stage, out, "max_steps=5", "checkpoint.keep_last=0", "nonfinite.policy=skip")
    assert summary["status"] == "finished" and summary["skipped_steps"] == 1
    assert (out / "model").is_dir()
    assert same(weights(out, 2), weights(out, 3))  # no update at step 3
    assert not same(weights(out, 3), weights(out, 4)) and not same(weights(out, 1), weights(out, 2))
    log = rows(out)
    assert log[3]["skipped_steps"] == 1 and "loss" not in log[3]
    assert log[2]["skipped_steps"] == 0 and log[4]["skipped_steps"] == 1 and math.isfinite(log[4]["loss"])
    assert json.loads((out / "summary.json").read_text())["status"] == "finished"


def test_skip_keeps_the_schedule_and_moves_on_in_the_data(tmp_path, monkeypatch):
    clean = tmp_path / "clean"
    run_stage("sft", clean, "max_steps=5", "checkpoint.save_steps=0")
    nan_loss_at(monkeypatch, "sft", {3})
    out = tmp_path / "skip"
    run_stage("sft", out, "max_steps=5", "checkpoint.save_steps=0", "nonfinite.policy=skip")
    a, b = rows(clean), rows(out)
    # The dropped step did not advance the scheduler: warm-up is 10 steps at peak 3e-3 (tiny.yaml),
    # so after k scheduler steps the LR is 3e-3 x (k + 1) / 10; step 4 follows only 3 of them.
    assert b[2]["lr"] == pytest.approx(3e-3 * 3 / 10) and b[4]["lr"] == pytest.approx(3e-3 * 4 / 10)
    assert a[4]["lr"] == pytest.approx(3e-3 * 5 / 10)
    # Steps 4 and 5 train on the same rows as in the clean run: the data position advanced.
    assert [b[s]["target_tokens"] for s in (4, 5)] == [a[s]["target_tokens"] for s in (4, 5)]
    assert b[1]["loss"] == a[1]["loss"] and b[2]["loss"] == a[2]["loss"]


@pytest.mark.parametrize("stage", ["sft", "rm", "dpo", "ppo"])
def test_one_bad_step_more_than_max_consecutive_skips_stops(tmp_path, monkeypatch, stage):
    out = tmp_path / stage
    if stage == "ppo":  # bad rollouts at steps 2 and 3, at most 1 in a row
        nan_score_at(monkeypatch, {2, 3})
        extra, stop_step = ["nonfinite.max_consecutive_skips=1"], 3
    else:  # after the first update at lr 1e10 every step is NaN: 2 and 3 are dropped, 4 stops
        extra, stop_step = ["optim.lr=1e10", "nonfinite.max_consecutive_skips=2"], 4
    with pytest.raises(RunStopped) as info:
        run_stage(stage, out, "max_steps=6", "checkpoint.keep_last=2", "nonfinite.policy=skip", *extra)
    assert info.value.step == stop_step
    kept = list(range(stop_step - 2, stop_step))
    saved = assert_stopped(out, stop_step, stop_step - 1, kept)
    skips = stop_step - 2
    assert f"after {skips} skipped in a row (nonfinite.max_consecutive_skips)" in saved["reason"]
    key = "skipped_rollouts" if stage == "ppo" else "skipped_steps"
    assert saved[key] == skips
    assert same(weights(out, kept[0]), weights(out, kept[1]))  # the dropped steps changed nothing


def test_cli_stop_is_exit_code_3_with_one_paragraph(tmp_path, capsys):
    out = tmp_path / "sft"
    args = ["sft", "--config", "configs/sft/tiny.yaml", f"output_dir={out}", *QUIET, *FAST["sft"]]
    code = main([*args, "max_steps=4", "optim.lr=1e10", "checkpoint.keep_last=1"])
    err = capsys.readouterr().err
    assert code == 3
    assert "Traceback" not in err
    message = [line for line in err.splitlines() if line.startswith("rlhf sft: ")]
    assert len(message) == 1 and message[0].startswith(
        "rlhf sft: stopped at step 2: non-finite loss (nan), grad_norm (nan) at step 2."
    )
    assert str(out / "checkpoints" / "step-00000001") in message[0]
    saved = assert_stopped(out, 2, 1, [1])
    assert saved["reason"] == "non-finite loss (nan), grad_norm (nan) at step 2"


def test_pipeline_ends_at_the_stopped_stage(tmp_path, capsys):
    out = tmp_path / "p"
    args = ["pipeline", "--config", "configs/pipeline/tiny.yaml", f"output_dir={out}", *PIPELINE_SHORT]
    code = main([*args, "stages=[sft,dpo]", "sft.max_steps=3", "sft.optim.lr=1e10"])
    err = capsys.readouterr().err
    assert code == 3 and "Traceback" not in err
    assert "rlhf pipeline: stage sft stopped at step 2: non-finite " in err
    assert json.loads((out / "sft" / "summary.json").read_text())["status"] == "stopped"
    assert not (out / "dpo").exists() and not (out / "pipeline.json").exists()


def test_ppo_with_a_diverged_policy_stops_on_its_sampling_logits(tmp_path, capsys):
    """At lr 1e10 the first update leaves huge finite weights (checkpoint 1 is kept) whose logits
    are NaN: sampling must not crash inside generate, the rollout check names the logits."""
    out = tmp_path / "ppo"
    args = ["ppo", "--config", "configs/ppo/tiny.yaml", f"output_dir={out}", *QUIET, *FAST["ppo"]]
    code = main([*args, "max_steps=4", "optim.lr=1e10", "checkpoint.keep_last=1"])
    err = capsys.readouterr().err
    assert code == 3 and "Traceback" not in err
    assert "policy logits while sampling (nan)" in err
    assert (out / "checkpoints" / "step-00000001").is_dir() and not (out / "model").exists()
