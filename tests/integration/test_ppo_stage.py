"""The PPO stage on builtin:tiny with the judge as reward: metrics, references, EOS penalty, resume."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from rlhf.config.loader import load_config
from rlhf.stages.ppo import PPOConfig, run

FAST = [
    "tracking.mode=disabled",
    "tracking.progress=false",
    "model.name_or_path=builtin:tiny",
    "data.prompts=['builtin:judged-prompts?n=200']",
    "rollout.batch_size=16",
    "rollout.max_new_tokens=12",
    "batch.micro_batch_size=8",
    "ppo.epochs=2",
    "checkpoint.save_steps=0",
    "rollout.log_samples_every=1",
]


def ppo(tmp_path, name, *extra):
    cfg = load_config(PPOConfig, "configs/ppo/tiny.yaml", [f"output_dir={tmp_path / name}", *FAST, *extra])
    return run(cfg), tmp_path / name


def rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


EXPECTED = {
    "score",
    "kl",
    "kl_k3",
    "non_score_reward",
    "kl_coef",
    "policy_loss",
    "value_loss",
    "entropy",
    "clipfrac",
    "vf_clipfrac",
    "approx_kl",
    "explained_variance",
    "eos_rate",
    "response_length",
    "rollout_s",
    "update_s",
    "tokens_per_s",
}


def test_metrics_samples_and_zero_kl_at_the_start(tmp_path):
    summary, out = ppo(tmp_path, "run", "max_steps=2")
    log = rows(out)
    assert [r["step"] for r in log] == [1, 2] and EXPECTED <= set(log[0])
    # Step 1 samples from the initial policy, which is the reference: KL is exactly 0, and so
    # is the non-score reward; the update then moves the policy away.
    assert log[0]["kl"] == pytest.approx(0.0, abs=1e-6) and log[0]["non_score_reward"] == pytest.approx(0.0, abs=1e-7)
    assert log[1]["kl"] != 0.0
    assert 0.0 <= log[0]["eos_rate"] <= 1.0 and 0 < log[0]["response_length"] <= 12
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert {s["step"] for s in samples} == {1, 2} and {"prompt", "response", "score"} <= set(samples[0])
    assert (out / "model" / "model.safetensors").is_file() and (out / "curves.png").is_file()
    assert summary["reference"] == "copy" and summary["steps"] == 2


def test_missing_eos_gets_the_penalty_score(tmp_path):
    # A constant reward of 7 for every reply that ends; one that never emits EOS scores -3.5.
    _, out = ppo(
        tmp_path,
        "noeos",
        "max_steps=1",
        "rollout.max_new_tokens=3",
        "rollout.missing_eos_score=-3.5",
        "reward.functions=['helpers:constant_reward']",
    )
    first = rows(out)[0]
    assert first["eos_rate"] < 1.0
    assert first["score"] == pytest.approx(7.0 * first["eos_rate"] - 3.5 * (1 - first["eos_rate"]), abs=1e-6)


def test_lora_reference_is_the_base_with_adapters_disabled(tmp_path):
    summary, out = ppo(
        tmp_path,
        "lora",
        "max_steps=2",
        "model.adapt.strategy=lora",
        "model.adapt.lora_r=4",
        "critic.adapt.strategy=lora",
        "critic.adapt.lora_r=4",
    )
    log = rows(out)
    assert summary["reference"] == "lora_disabled"
    assert log[0]["kl"] == pytest.approx(0.0, abs=1e-6) and log[1]["kl"] != 0.0
    assert summary["trainable_parameters"] < summary["total_parameters"] / 2


def test_kl_in_loss_and_adaptive_controller(tmp_path):
    _, out = ppo(tmp_path, "kl", "max_steps=3", "kl.controller=adaptive", "kl.target=0.01", "kl.horizon=1000")
    log = rows(out)
    # Each step's coefficient follows Ziegler et al.'s rule from the previous step's KL (16 samples a step).
    assert log[0]["kl_coef"] == pytest.approx(0.05)
    for before, after in zip(log, log[1:]):
        error = min(max(before["kl"] / 0.01 - 1, -0.2), 0.2)
        assert after["kl_coef"] == pytest.approx(before["kl_coef"] * (1 + error * 16 / 1000), rel=1e-9)
    assert log[1]["kl_coef"] < 0.05  # KL 0 at the first step pulls the coefficient down
    _, out = ppo(tmp_path, "inloss", "max_steps=2", "kl.in_loss=true")
    assert all(r["non_score_reward"] == 0.0 for r in rows(out))


def test_resume_gives_the_same_result_as_an_uninterrupted_run(tmp_path):
    _, full = ppo(tmp_path, "full", "max_steps=4", "kl.controller=adaptive", "kl.horizon=500")
    _, part = ppo(
        tmp_path, "part", "max_steps=4", "kl.controller=adaptive", "kl.horizon=500", "checkpoint.save_steps=2"
    )
    # Simulate a crash after step 2: drop everything written later, then run the same command.
    shutil.rmtree(part / "checkpoints" / "step-00000004")
    shutil.rmtree(part / "model")
    ppo(
        tmp_path,
        "part",
        "max_steps=4",
        "kl.controller=adaptive",
        "kl.horizon=500",
        "checkpoint.save_steps=2",
        "checkpoint.resume_from=latest",
    )
    a = load_file(str(full / "model" / "model.safetensors"))
    b = load_file(str(part / "model" / "model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=0, rtol=0, msg=key)
    assert [r["kl_coef"] for r in rows(full)] == [r["kl_coef"] for r in rows(part)]
    assert [r["step"] for r in rows(part)] == [1, 2, 3, 4]
    # The generations logged after the checkpoint are dropped too, so none appears twice.
    samples = [json.loads(line) for line in (part / "samples.jsonl").read_text().splitlines()]
    assert [s["step"] for s in samples] == [step for step in (1, 2, 3, 4) for _ in range(4)]
    full_samples = [json.loads(line) for line in (full / "samples.jsonl").read_text().splitlines()]
    assert samples == full_samples


def test_bad_batch_geometry_is_refused(tmp_path):
    with pytest.raises(ValueError, match="multiple of the mini-batch"):
        ppo(tmp_path, "bad", "max_steps=1", "rollout.batch_size=12")
    assert not (tmp_path / "bad").exists()  # refused when the config is built, before config.yaml


@pytest.mark.parametrize("key", ["model.name_or_path", "critic.init_from", "reward.model"])
def test_missing_model_folder_is_named_before_anything_is_written(tmp_path, key):
    missing = tmp_path / "sft-tiny" / "model"  # e.g. the output of a stage that has not run yet
    with pytest.raises(
        FileNotFoundError,
        match=rf"^{key}: model folder {missing} does not exist "
        r"\(is it the output of a stage that has not run yet\?\)",
    ):
        ppo(tmp_path, "out", "max_steps=1", f"{key}={missing}")
    assert not (tmp_path / "out").exists()


def test_log_every_logs_every_nth_step_and_the_first_and_last(tmp_path):
    summary, out = ppo(tmp_path, "sparse", "max_steps=4", "tracking.log_every=3")
    log = rows(out)
    assert [r["step"] for r in log] == [1, 3, 4]
    assert summary["first_score"] == log[0]["score"] and summary["final_score"] == log[-1]["score"]


def test_setup_leaves_no_dropout_on_after_lora_adaptation(tmp_path):
    from rlhf.stages import ppo as stage

    lora = ["model.adapt.strategy=lora", "model.adapt.lora_r=4", "model.adapt.lora_dropout=0.5"]
    critic = ["critic.adapt.strategy=lora", "critic.adapt.lora_r=4", "critic.adapt.lora_dropout=0.5"]
    cfg = load_config(
        PPOConfig, "configs/ppo/tiny.yaml", [f"output_dir={tmp_path / 'drop'}", *FAST, "max_steps=1", *lora, *critic]
    )
    r = stage._setup(cfg)
    try:
        model = r.backend.unwrap(r.model)
        assert [n for n, m in model.named_modules() if isinstance(m, torch.nn.Dropout) and m.p > 0] == []
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_()  # a trained adapter, whose dropout would change the outputs
            ids = torch.tensor([[5, 6, 7, 8, 9]])
            mask = torch.ones_like(ids)
            expected = model.eval()(ids, mask, 2)
            got = model.train()(ids, mask, 2)
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    finally:
        r.backend.end()


def test_copy_reference_runs_under_the_policy_precision(tmp_path):
    # Under bf16 the policy's forward runs under autocast; a reference that did not would give
    # other log-probs for the same weights, and the first step's KL would not be 0.
    summary, out = ppo(tmp_path, "bf16", "max_steps=1", "precision.mixed_precision=bf16", "reference=copy")
    first = rows(out)[0]
    assert summary["reference"] == "copy" and summary["mixed_precision"] == "bf16"
    assert first["kl"] == 0.0 and first["kl_k3"] == 0.0 and first["non_score_reward"] == 0.0
