"""The RL loop with the critic-free estimators (GRPO, Dr. GRPO, RLOO, REINFORCE++) on builtin:tiny
with the judge as reward: no value model, group metrics, zero-advantage groups, resume."""

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
    "rollout.batch_size=4",
    "rollout.group_size=4",
    "rollout.max_new_tokens=12",
    "batch.micro_batch_size=8",
    "ppo.epochs=2",
    "checkpoint.save_steps=0",
    "rollout.log_samples_every=0",
]


def rl(tmp_path, name, *extra):
    cfg = load_config(PPOConfig, "configs/ppo/tiny.yaml", [f"output_dir={tmp_path / name}", *FAST, *extra])
    return run(cfg), tmp_path / name


def rows(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("advantage", ["grpo", "dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline"])
def test_critic_free_estimators_train_without_a_value_model(tmp_path, advantage):
    summary, out = rl(tmp_path, advantage, f"ppo.advantage={advantage}", "max_steps=2")
    gae, _ = rl(tmp_path, "gae", "max_steps=1")
    # The policy's parameters only: no critic was built (gae trains the policy and a critic).
    assert summary["trainable_parameters"] == summary["total_parameters"]
    assert gae["trainable_parameters"] > 1.5 * summary["trainable_parameters"]
    metrics = rows(out)
    assert [m["step"] for m in metrics] == [1, 2]
    for key in ("group_reward_mean", "group_reward_std", "zero_advantage_groups", "clipfrac_low", "clipfrac_high"):
        assert key in metrics[-1], key
    assert not {"value_loss", "vf_clipfrac", "explained_variance"} & metrics[-1].keys()
    assert summary["advantage"] == advantage and summary["group_size"] == 4


def test_all_equal_groups_leave_the_policy_unchanged(tmp_path):
    # A constant reward: every group is degenerate, every advantage 0, no KL in the reward at the
    # first step (policy == reference), so no gradient at all.
    summary, out = rl(
        tmp_path,
        "flat",
        "ppo.advantage=grpo",
        "max_steps=1",
        "reward.functions=['helpers:constant_reward']",
        "rollout.missing_eos_score=null",
    )
    assert rows(out)[0]["zero_advantage_groups"] == 1.0
    trained = load_file(str(out / "model" / "model.safetensors"))
    from helpers import load_tiny_lm

    start = load_tiny_lm().state_dict()
    for key, value in trained.items():
        torch.testing.assert_close(value, start[key], atol=0, rtol=0, msg=key)


def test_grpo_resume_gives_the_same_result_as_an_uninterrupted_run(tmp_path):
    extra = ("ppo.advantage=grpo", "max_steps=4", "ppo.clip_eps_high=0.28", "ppo.loss_aggregation=sequence_mean")
    _, full = rl(tmp_path, "full", *extra)
    _, part = rl(tmp_path, "part", *extra, "checkpoint.save_steps=2")
    shutil.rmtree(part / "checkpoints" / "step-00000004")
    shutil.rmtree(part / "model")
    rl(tmp_path, "part", *extra, "checkpoint.save_steps=2", "checkpoint.resume_from=latest")
    a = load_file(str(full / "model" / "model.safetensors"))
    b = load_file(str(part / "model" / "model.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=0, rtol=0, msg=key)
    assert [r["score"] for r in rows(full)] == [r["score"] for r in rows(part)]


def test_reward_functions_get_the_prompt_record_with_its_metadata(tmp_path):
    # helpers:answer_length scores each response by the length of its prompt's answer: only
    # the record's metadata can give it, and a group's responses all get their prompt's value.
    summary, out = rl(
        tmp_path,
        "arith",
        "ppo.advantage=rloo",
        "max_steps=1",
        "data.prompts=['builtin:arithmetic-prompts?n=40&split=train&seed=5']",
        "reward.functions=['helpers:answer_length']",
        "rollout.missing_eos_score=null",
        "rollout.log_samples_every=1",
        "rollout.log_samples=16",
    )
    from preference_data.arithmetic import arithmetic_records

    lengths = {r["prompt"]: len(r["metadata"]["answer"]) for r in arithmetic_records(40, seed=5, split="train")}
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 16
    for sample in samples:
        assert sample["score"] == lengths[sample["prompt"]]
    assert rows(out)[0]["zero_advantage_groups"] == 1.0  # equal within each group
