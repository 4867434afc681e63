"""rlhf.stages.ppo_advantages: each estimator's advantages on a hand-built rollout, KL as reward
or in the loss, and the group metrics."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from rlhf.config.loader import load_config
from rlhf.stages.ppo_advantages import compute_advantages
from rlhf.stages.ppo_config import PPOConfig


class OneProcess:
    def all_reduce_sum(self, value):
        return value


def cfg_for(advantage: str, *overrides: str) -> PPOConfig:
    return load_config(
        PPOConfig,
        None,
        [f"ppo.advantage={advantage}", "rollout.group_size=4", "rollout.batch_size=2", "batch.micro_batch_size=4"]
        + list(overrides),
    )


# Two prompts x 4 responses; group 0 rewards [1, 0, 0, 1], group 1 all equal (no signal).
MASK = torch.tensor([[1, 1, 0]] * 4 + [[1, 0, 0]] * 4, dtype=torch.float32)
ROLLOUT = SimpleNamespace(
    mask=MASK,
    scores=torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0]),
    group_ids=torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]),
    old_values=torch.zeros_like(MASK),
)
NO_KL = torch.zeros_like(MASK)


@pytest.mark.parametrize(
    ("advantage", "value"), [("grpo", 0.5 / (math.sqrt(1 / 3) + 1e-4)), ("dr_grpo", 0.5), ("rloo", 2 / 3)]
)
def test_sequence_estimators_put_the_group_advantage_on_every_token(advantage, value):
    out = compute_advantages(cfg_for(advantage), ROLLOUT, NO_KL, 0.05, OneProcess())
    signs = [1, -1, -1, 1]
    expected = [[s * value, s * value, 0.0] for s in signs] + [[0.0, 0.0, 0.0]] * 4
    assert out.advantages.tolist() == [pytest.approx(row, abs=1e-6) for row in expected]
    assert out.returns.abs().sum() == 0
    assert out.metrics == pytest.approx(
        {"group_reward_mean": (0.5 + 2.0) / 2, "group_reward_std": math.sqrt(1 / 3) / 2, "zero_advantage_groups": 0.5}
    )


def test_kl_as_reward_comes_off_the_score_before_the_group_mean():
    kl = torch.zeros_like(MASK)
    kl[0] = torch.tensor([0.3, 0.2, 0.0])  # summed: 0.5 (0 outside the mask, as kl_penalty gives it)
    out = compute_advantages(cfg_for("dr_grpo"), ROLLOUT, kl, 1.0, OneProcess())
    # scores [0.5, 0, 0, 1], mean 0.375
    assert out.advantages[:4, 0].tolist() == pytest.approx([0.125, -0.375, -0.375, 0.625])
    assert out.non_score[0].tolist() == pytest.approx([-0.3, -0.2, 0.0])
    in_loss = compute_advantages(cfg_for("dr_grpo", "kl.in_loss=true"), ROLLOUT, kl, 1.0, OneProcess())
    assert in_loss.advantages[:4, 0].tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5])
    assert in_loss.non_score.abs().sum() == 0


def _whitened(values, mask):
    flat = values[mask.bool()]
    mean, var = flat.mean(), flat.var(unbiased=False)
    return torch.where(mask.bool(), (values - mean) / torch.sqrt(var + 1e-8), torch.zeros_like(values))


def test_reinforce_pp_whitens_the_token_returns_over_the_batch():
    out = compute_advantages(cfg_for("reinforce_pp"), ROLLOUT, NO_KL, 0.0, OneProcess())
    # No KL: each valid token's return is its response's score.
    returns = ROLLOUT.scores[:, None] * MASK
    torch.testing.assert_close(out.advantages, _whitened(returns, MASK))


def test_reinforce_pp_baseline_subtracts_the_group_mean_first():
    out = compute_advantages(cfg_for("reinforce_pp_baseline"), ROLLOUT, NO_KL, 0.0, OneProcess())
    centred = torch.tensor([0.5, -0.5, -0.5, 0.5, 0.0, 0.0, 0.0, 0.0])[:, None] * MASK
    torch.testing.assert_close(out.advantages, _whitened(centred, MASK))


def test_group_estimators_need_groups_and_gae_keeps_its_critic():
    with pytest.raises(ValueError, match="group_size >= 2"):
        load_config(PPOConfig, None, ["ppo.advantage=grpo"])
    assert load_config(PPOConfig, None, ["ppo.advantage=reinforce_pp"]).has_critic is False
    assert load_config(PPOConfig, None, []).has_critic is True
