"""Static combination checks in stage configs: refused when the config is built, naming the keys,
before a run writes output_dir/config.yaml; and docs of inherited keys that a stage does not use."""

from __future__ import annotations

import dataclasses
import sys
import types
from pathlib import Path

import pytest

from rlhf.config.loader import ConfigError, load_config
from rlhf.config.sections import TrackingConfig
from rlhf.runtime.tracking import Tracker
from rlhf.stages.ppo_config import PPOConfig

REPO = Path(__file__).resolve().parents[4]


def ppo_error(*overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(PPOConfig, None, list(overrides))
    return str(info.value)


def test_defaults_and_shipped_ppo_configs_pass_the_checks():
    assert load_config(PPOConfig, None).max_steps == 100
    for path in sorted((REPO / "configs" / "ppo").glob("*.yaml")):
        load_config(PPOConfig, str(path))


def test_max_steps_must_be_positive_for_ppo():
    assert "max_steps must be > 0 for PPO, got 0" in ppo_error("max_steps=0")
    assert "got -1" in ppo_error("max_steps=-1")


def test_rollout_batch_must_be_a_multiple_of_the_mini_batch():
    err = ppo_error("rollout.batch_size=12", "batch.micro_batch_size=4", "batch.grad_accum=2")
    assert "rollout.batch_size=12 x rollout.group_size=1 = 12 samples must be a multiple of the mini-batch" in err
    assert "batch.micro_batch_size x batch.grad_accum = 8" in err
    assert (
        load_config(
            PPOConfig, None, ["rollout.batch_size=16", "batch.micro_batch_size=4", "batch.grad_accum=2"]
        ).rollout.batch_size
        == 16
    )


@pytest.mark.parametrize(
    "key", ["rollout.batch_size", "rollout.generation_batch_size", "batch.micro_batch_size", "batch.grad_accum"]
)
def test_sizes_must_be_positive(key):
    assert f"{key} must be >= 1, got 0" in ppo_error(f"{key}=0")


def test_temperature_must_be_positive():
    assert "rollout.temperature must be > 0" in ppo_error("rollout.temperature=0")


def test_lora_disabled_reference_needs_lora():
    err = ppo_error("reference=lora_disabled")
    assert "reference=lora_disabled needs model.adapt.strategy lora or qlora, got 'full'" in err
    for strategy in ("lora", "qlora"):
        cfg = load_config(PPOConfig, None, ["reference=lora_disabled", f"model.adapt.strategy={strategy}"])
        assert cfg.reference == "lora_disabled"


def test_reward_weights_need_one_entry_per_source():
    err = ppo_error("reward.model=rm", "reward.functions=['m:f']", "reward.weights=[1.0]")
    assert "reward.weights has 1 entries for 2 reward source(s)" in err and "reward.model=rm, m:f" in err
    assert "for 0 reward source(s)" in ppo_error("reward.weights=[1.0]")
    cfg = load_config(PPOConfig, None, ["reward.model=rm", "reward.functions=['m:f']", "reward.weights=[1.0, 0.5]"])
    assert cfg.reward.weights == [1.0, 0.5]


def test_adaptive_kl_horizon_must_exceed_a_fifth_of_the_rollout_batch():
    # AdaptiveKLController.update(kl, batch_size) refuses 0.2 * batch_size / horizon >= 1.
    err = ppo_error("kl.controller=adaptive", "rollout.batch_size=64", "batch.micro_batch_size=8", "kl.horizon=12")
    assert "kl.horizon=12 is too small for 64 samples per step" in err and "kl.horizon > 12.8" in err
    assert (
        load_config(
            PPOConfig,
            None,
            ["kl.controller=adaptive", "rollout.batch_size=64", "batch.micro_batch_size=8", "kl.horizon=13"],
        ).kl.horizon
        == 13
    )
    # A fixed controller never uses the horizon.
    assert load_config(PPOConfig, None, ["kl.horizon=1"]).kl.horizon == 1


@pytest.mark.parametrize("key", ["kl.coef", "kl.target", "kl.horizon"])
def test_adaptive_kl_needs_positive_settings(key):
    assert f"{key} must be > 0 with kl.controller=adaptive" in ppo_error("kl.controller=adaptive", f"{key}=0")


def test_fixed_kl_coef_must_not_be_negative():
    assert "kl.coef must be >= 0" in ppo_error("kl.coef=-0.1")


def test_tracking_log_every_must_be_positive():
    assert "section 'tracking': log_every must be >= 1, got 0" in ppo_error("tracking.log_every=0")


def test_ppo_has_no_keys_it_does_not_use():
    names = {f.name for f in dataclasses.fields(PPOConfig)}
    assert not names & {"epochs", "eval_steps"}
    assert "unknown key 'epochs'" in ppo_error("epochs=2")
    assert "unknown key 'eval_steps'" in ppo_error("eval_steps=5")


def test_reference_is_one_key_with_the_same_values_in_ppo_and_dpo():
    from rlhf.stages.dpo import DPOConfig

    ppo_field = next(f for f in dataclasses.fields(PPOConfig) if f.name == "reference")
    dpo_field = next(f for f in dataclasses.fields(DPOConfig) if f.name == "reference")
    assert ppo_field.type == dpo_field.type and ppo_field.metadata["doc"] == dpo_field.metadata["doc"]
    assert "reference=precompute is not available in PPO" in ppo_error("reference=precompute")
    assert "reference=none is not available in PPO" in ppo_error("reference=none")
    lora = ["model.adapt.strategy=lora"]
    assert load_config(PPOConfig, None, lora).resolved_reference() == "lora_disabled"
    assert load_config(PPOConfig, None).resolved_reference() == "copy"
    assert load_config(DPOConfig, None, ["reference=auto", *lora]).resolved_reference() == "lora_disabled"
    assert load_config(DPOConfig, None, ["reference=auto"]).resolved_reference() == "precompute"
    assert load_config(DPOConfig, None).resolved_reference() == "precompute"
    with pytest.raises(ConfigError, match="reference=lora_disabled needs model.adapt.strategy lora or qlora"):
        load_config(DPOConfig, None, ["reference=lora_disabled"])
    with pytest.raises(ConfigError, match="key 'dpo.reference' has moved to 'reference'"):
        load_config(DPOConfig, None, ["dpo.reference=copy"])


def test_run_name_doc_matches_the_tracker_default(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=lambda **kwargs: seen.update(kwargs)))
    Tracker(str(tmp_path / "ppo-tiny"), is_main=True, mode="offline", progress=False, stage="ppo")
    assert seen["name"] == "ppo-tiny-ppo"
    doc = {f.name: f.metadata["doc"] for f in dataclasses.fields(TrackingConfig)}["run_name"]
    assert "'<output folder name>-<stage>'" in doc and "'ppo-tiny-ppo' for output_dir runs/ppo-tiny" in doc
