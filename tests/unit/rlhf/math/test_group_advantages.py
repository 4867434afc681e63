"""Critic-free advantages and loss aggregation: hand-computed values, and a plain per-group loop."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from rlhf.math.group_advantages import (
    broadcast_to_tokens,
    degenerate_groups,
    group_mean_baseline,
    group_moments,
    sequence_advantages,
    token_returns,
)
from rlhf.math.losses import aggregate_token_loss, ppo_policy_loss


def _advantages(rewards, groups, estimator, eps=1e-4):
    r = torch.tensor(rewards, dtype=torch.float64)
    g = torch.tensor(groups)
    moments = group_moments(r, g, int(g.max()) + 1)
    return sequence_advantages(r, g, moments, estimator, eps=eps)


@pytest.mark.parametrize(
    ("estimator", "eps", "value"),
    [("grpo", 0.0, 0.866025), ("dr_grpo", 1e-4, 0.5), ("rloo", 1e-4, 0.666667)],
)
def test_design_numbers_for_rewards_1_0_0_1(estimator, eps, value):
    out = _advantages([1.0, 0.0, 0.0, 1.0], [0, 0, 0, 0], estimator, eps=eps)
    assert out.tolist() == pytest.approx([value, -value, -value, value], abs=1e-6)


def test_grpo_std_epsilon_is_1e_4_as_in_trl():
    # std of [1, 0, 0, 1] (unbiased) = sqrt(1/3); 0.5 / (sqrt(1/3) + 1e-4)
    out = _advantages([1.0, 0.0, 0.0, 1.0], [0, 0, 0, 0], "grpo")
    assert float(out[0]) == pytest.approx(0.5 / (math.sqrt(1 / 3) + 1e-4), rel=1e-12)


def _plain(rewards, groups, estimator, eps=1e-4):
    """A loop over groups with the statistics module: independent of the moments code."""
    out = []
    for r, g in zip(rewards, groups):
        mine = [x for x, h in zip(rewards, groups) if h == g]
        mean = statistics.fmean(mine)
        if estimator == "grpo":
            out.append((r - mean) / (statistics.stdev(mine) + eps))
        elif estimator == "dr_grpo":
            out.append(r - mean)
        else:
            others = list(mine)
            others.remove(r)
            out.append(r - statistics.fmean(others))
    return out


@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo", "rloo"])
def test_ragged_interleaved_groups_match_a_plain_loop(estimator):
    generator = torch.Generator().manual_seed(0)
    groups = [2, 0, 1, 0, 2, 1, 0, 2, 2, 1, 0]  # sizes 4, 3, 4, interleaved
    rewards = torch.randn(len(groups), generator=generator, dtype=torch.float64).tolist()
    got = _advantages(rewards, groups, estimator)
    assert got.tolist() == pytest.approx(_plain(rewards, groups, estimator), abs=1e-12)


@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo", "rloo"])
def test_groups_split_across_processes_agree_with_one_process(estimator):
    generator = torch.Generator().manual_seed(1)
    groups = torch.tensor([0, 0, 1, 1, 0, 0, 1, 1])
    rewards = torch.randn(8, generator=generator, dtype=torch.float64)
    whole = sequence_advantages(rewards, groups, group_moments(rewards, groups, 2), estimator)
    halves = [slice(0, 3), slice(3, 8)]  # each group has samples on both "processes"
    summed = sum(group_moments(rewards[h], groups[h], 2) for h in halves)  # the all-reduce
    split = torch.cat([sequence_advantages(rewards[h], groups[h], summed, estimator) for h in halves])
    torch.testing.assert_close(split, whole, atol=1e-12, rtol=0)


@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo", "rloo"])
@pytest.mark.parametrize("value", [2.0, 0.1, -7.3])
def test_all_equal_groups_give_exactly_zero_and_are_flagged(estimator, value):
    rewards = [value, value, value, 1.0, 0.0]
    groups = [0, 0, 0, 1, 1]
    out = _advantages(rewards, groups, estimator)
    assert out[:3].tolist() == [0.0, 0.0, 0.0]
    assert out[3] > 0 > out[4]
    moments = group_moments(torch.tensor(rewards), torch.tensor(groups), 3)
    assert degenerate_groups(moments).tolist() == [True, False, False]  # group 2 has no sample


def test_rloo_refuses_a_group_of_one():
    with pytest.raises(ValueError, match="at least 2"):
        _advantages([1.0, 0.0, 3.0], [0, 0, 1], "rloo")


def test_unknown_estimator_and_bad_group_ids_are_refused():
    with pytest.raises(ValueError, match="unknown sequence estimator"):
        _advantages([1.0, 0.0], [0, 0], "gae")
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        group_moments(torch.tensor([1.0]), torch.tensor([2]), 2)


def test_broadcast_puts_each_advantage_on_its_valid_tokens():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    out = broadcast_to_tokens(torch.tensor([0.5, -2.0], dtype=torch.float64), mask)
    assert out.tolist() == [[0.5, 0.5, 0.0], [-2.0, 0.0, 0.0]]


def test_reinforce_pp_returns_by_hand():
    # Row 0: rewards -0.5 * [0.1, 0.2, 0.3] + score 1 at the end = [-0.05, -0.1, 0.85]
    #        returns (gamma 1) = [0.7, 0.75, 0.85].
    # Row 1: valid tokens 2, rewards [-0.05, -0.1 + 2] -> returns [1.85, 1.9, 0].
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.1, 0.2, 99.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    out = token_returns(torch.tensor([1.0, 2.0]), kl, mask, kl_coef=0.5)
    torch.testing.assert_close(out, torch.tensor([[0.7, 0.75, 0.85], [1.85, 1.9, 0.0]]))
    # gamma 0.5, row 1: [-0.05 + 0.5 * 1.9, 1.9]
    half = token_returns(torch.tensor([1.0, 2.0]), kl, mask, kl_coef=0.5, gamma=0.5)
    torch.testing.assert_close(half[1], torch.tensor([0.9, 1.9, 0.0]))


def test_reinforce_pp_refuses_a_mask_with_a_hole():
    with pytest.raises(ValueError, match="prefix"):
        token_returns(torch.tensor([1.0]), torch.zeros(1, 3), torch.tensor([[1, 0, 1]]), kl_coef=0.1)


def test_group_mean_baseline_by_hand():
    scores = torch.tensor([1.0, 3.0, 5.0])
    groups = torch.tensor([0, 0, 1])
    out = group_mean_baseline(scores, groups, group_moments(scores, groups, 2))
    assert out.tolist() == [-1.0, 1.0, 0.0]


# ---------- loss aggregation and the asymmetric clip ----------

PER_TOKEN = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0]])
MASK = torch.tensor([[1, 1, 1], [1, 0, 0]])


@pytest.mark.parametrize(
    ("aggregation", "expected"),
    [("token_mean", 10 / 4), ("sequence_mean", (2 + 4) / 2), ("constant", 10 / (2 * 4))],
)
def test_aggregations_by_hand_and_split_into_micro_batches(aggregation, expected):
    kwargs = {"constant_length": 4}
    whole = aggregate_token_loss(PER_TOKEN, MASK, aggregation, **kwargs)
    assert float(whole) == pytest.approx(expected)
    # Two micro-batches with the global counts add up to the whole batch's loss.
    parts = sum(
        aggregate_token_loss(
            PER_TOKEN[i : i + 1], MASK[i : i + 1], aggregation, num_tokens=4, num_sequences=2, **kwargs
        )
        for i in range(2)
    )
    assert float(parts) == pytest.approx(expected)


def test_constant_aggregation_needs_a_length_and_unknown_names_are_refused():
    with pytest.raises(ValueError, match="constant_length"):
        aggregate_token_loss(PER_TOKEN, MASK, "constant")
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        aggregate_token_loss(PER_TOKEN, MASK, "sum")


@pytest.mark.parametrize(
    ("ratio", "advantage", "loss", "low", "high"),
    [
        (1.5, 1.0, -1.28, 0.0, 1.0),  # clipped at 1 + 0.28 (clip-higher)
        (1.2, 1.0, -1.2, 0.0, 0.0),  # inside [0.8, 1.28]: not clipped, though past 1 + 0.2
        (0.5, -1.0, 0.8, 1.0, 0.0),  # clipped at 1 - 0.2
        (0.5, 1.0, -0.5, 0.0, 0.0),  # the pessimistic branch is the unclipped one
    ],
)
def test_asymmetric_clip_by_hand(ratio, advantage, loss, low, high):
    old = torch.zeros(1, 1)
    new = torch.full((1, 1), math.log(ratio))
    out, metrics = ppo_policy_loss(new, old, torch.full((1, 1), advantage), torch.ones(1, 1), 0.2, clip_eps_high=0.28)
    assert float(out) == pytest.approx(loss, abs=1e-6)
    assert float(metrics["clipfrac_low"]) == low and float(metrics["clipfrac_high"]) == high
    assert float(metrics["clipfrac"]) == low + high


def test_policy_loss_sequence_mean_weighs_each_response_once():
    # Ratio 1 everywhere: per-token loss = -A. Row 0 has 3 tokens of A = 1, row 1 one of A = 3.
    zeros = torch.zeros(2, 3)
    advantages = torch.tensor([[1.0, 1.0, 1.0], [3.0, 0.0, 0.0]])
    token, _ = ppo_policy_loss(zeros, zeros, advantages, MASK)
    sequence, _ = ppo_policy_loss(zeros, zeros, advantages, MASK, aggregation="sequence_mean")
    assert float(token) == pytest.approx(-6 / 4)
    assert float(sequence) == pytest.approx(-(1 + 3) / 2)
