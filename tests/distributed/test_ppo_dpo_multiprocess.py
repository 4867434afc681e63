"""PPO and DPO on 2 CPU processes (DDP over gloo, DeepSpeed ZeRO-3) match 1 process.

PPO: each generation chunk's seed is a function of its place in the global batch, so 2 processes
sample exactly what 1 process samples; with one mini-batch per step the update sees the same
global batch, whitening statistics and token counts, so the weights must agree. Under ZeRO-3 the
policy's sharded weights are gathered for generation. DPO: the reference log-probs are
precomputed under ZeRO-3 too.
"""

import json

import pytest
import torch
from helpers import REPO, launch
from safetensors.torch import load_file

from rlhf.config.loader import load_config
from rlhf.stages.dpo import DPOConfig
from rlhf.stages.dpo import run as run_dpo
from rlhf.stages.ppo import PPOConfig
from rlhf.stages.ppo import run as run_ppo

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

PPO_ARGS = [
    "tracking.mode=disabled",
    "tracking.progress=false",
    "model.name_or_path=builtin:tiny",
    "data.prompts=['builtin:judged-prompts?n=100']",
    "rollout.batch_size=16",
    "rollout.max_new_tokens=10",
    "rollout.generation_batch_size=8",
    "ppo.epochs=2",
    "checkpoint.save_steps=0",
    "max_steps=2",
    "kl.controller=adaptive",
    "kl.horizon=200",
]
DPO_ARGS = [
    "tracking.mode=disabled",
    "tracking.progress=false",
    "eval_steps=0",
    "data.max_length=96",
    "checkpoint.save_steps=0",
    "max_steps=3",
    "model.name_or_path=builtin:tiny",
    "data.train=['builtin:judged-pairwise?n=120']",
    "data.eval=['builtin:judged-pairwise?n=30&seed=9']",
]


def launch_stage(tmp_path, name, engine, port, stage, config, args):
    launch(engine, port, [stage, "--config", config, f"output_dir={tmp_path / name}", *args])
    return json.loads((tmp_path / name / "summary.json").read_text())


def assert_same_weights(a_dir, b_dir, atol=5e-6):
    name = (
        "adapter_model.safetensors"
        if (a_dir / "model" / "adapter_model.safetensors").is_file()
        else "model.safetensors"
    )
    a = load_file(str(a_dir / "model" / name))
    b = load_file(str(b_dir / "model" / name))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=1e-4, msg=key)


def rl_one_vs_two(tmp_path, engine, port, args, keys):
    """The RL stage on 1 process (micro-batch 16) and on 2 (4 x 2 accumulation): the same metrics
    ``keys`` at every step and the same weights; returns the 2-process summary."""
    run_ppo(
        load_config(
            PPOConfig,
            str(REPO / "configs/ppo/tiny.yaml"),
            [f"output_dir={tmp_path / 'single'}", *args, "batch.micro_batch_size=16"],
        )
    )
    summary = launch_stage(
        tmp_path,
        engine,
        engine,
        port,
        "ppo",
        "configs/ppo/tiny.yaml",
        [*args, "batch.micro_batch_size=4", "batch.grad_accum=2"],
    )
    single = [json.loads(ln) for ln in (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()]
    multi = [json.loads(ln) for ln in (tmp_path / engine / "metrics.jsonl").read_text().splitlines()]
    assert len(single) == len(multi) == 2
    for a, b in zip(single, multi):
        for key in keys:
            assert a[key] == pytest.approx(b[key], abs=1e-4), key
    assert_same_weights(tmp_path / "single", tmp_path / engine, atol=2e-5)
    return summary


def test_grpo_two_processes_match_one(tmp_path):
    """Groups of 4 responses, the group statistics all-reduced: 2 DDP processes train what 1 does."""
    grpo = [
        *PPO_ARGS,
        "ppo.advantage=grpo",
        "rollout.group_size=4",
        "rollout.batch_size=4",
        "kl.controller=fixed",
        "kl.in_loss=true",
        "ppo.loss_aggregation=sequence_mean",
        "ppo.clip_eps_high=0.28",
    ]
    keys = ("score", "response_length", "kl", "group_reward_std", "zero_advantage_groups")
    summary = rl_one_vs_two(tmp_path, "ddp", 29559, grpo, keys)
    assert summary["world_size"] == 2 and summary["advantage"] == "grpo"


@pytest.mark.parametrize("engine", ["ddp", "zero3"])
def test_ppo_two_processes_match_one(tmp_path, engine):
    keys = ("score", "response_length", "eos_rate", "kl", "kl_coef")
    summary = rl_one_vs_two(tmp_path, engine, 29551 if engine == "ddp" else 29552, PPO_ARGS, keys)
    assert summary["world_size"] == 2 and summary["zero_stage"] == (3 if engine == "zero3" else None)


def test_dpo_zero3_with_precomputed_reference_matches_one_process(tmp_path):
    run_dpo(
        load_config(
            DPOConfig,
            str(REPO / "configs/dpo/tiny.yaml"),
            [f"output_dir={tmp_path / 'single'}", *DPO_ARGS, "batch.micro_batch_size=8"],
        )
    )
    summary = launch_stage(
        tmp_path,
        "zero3",
        "zero3",
        29553,
        "dpo",
        "configs/dpo/tiny.yaml",
        [*DPO_ARGS, "batch.micro_batch_size=2", "batch.grad_accum=2"],
    )
    single = json.loads((tmp_path / "single" / "summary.json").read_text())
    assert summary["zero_stage"] == 3 and summary["first_loss"] == pytest.approx(0.6931472, abs=1e-4)
    assert summary["eval_accuracy"] == pytest.approx(single["eval_accuracy"])
    ref_single = load_file(tmp_path / "single" / "reference_logps.safetensors")
    ref_zero = load_file(tmp_path / "zero3" / "reference_logps.safetensors")
    torch.testing.assert_close(ref_single["train"], ref_zero["train"], atol=1e-4, rtol=1e-5)
    assert_same_weights(tmp_path / "single", tmp_path / "zero3")


def test_dpo_ddp_lora_in_shared_prompt_rows_matches_one_process_in_separate_rows(tmp_path):
    lora = ["model.adapt.strategy=lora", "model.adapt.lora_r=4", "reference=lora_disabled"]
    run_dpo(
        load_config(
            DPOConfig,
            str(REPO / "configs/dpo/tiny.yaml"),
            [
                f"output_dir={tmp_path / 'single'}",
                *DPO_ARGS,
                *lora,
                "batch.micro_batch_size=8",
                "data.shared_prompt=false",
            ],
        )
    )
    summary = launch_stage(
        tmp_path,
        "ddp",
        "ddp",
        29558,
        "dpo",
        "configs/dpo/tiny.yaml",
        [*DPO_ARGS, *lora, "batch.micro_batch_size=2", "batch.grad_accum=2", "data.shared_prompt=true"],
    )
    single = json.loads((tmp_path / "single" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["first_loss"] == pytest.approx(0.6931472, abs=1e-4)
    assert summary["eval_loss"] == pytest.approx(single["eval_loss"], abs=1e-5)
    assert_same_weights(tmp_path / "single", tmp_path / "ddp")
