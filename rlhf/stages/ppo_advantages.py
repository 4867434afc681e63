"""Step 3 of the RL loop in ``rlhf.stages.ppo``: rewards and advantages, by estimator.

``gae`` needs the critic's values; the critic-free estimators (``rlhf.math.group_advantages``)
read a prompt's G responses as one group. Group statistics are sums reduced over processes, so
the advantages do not depend on how many processes share the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rlhf.math.advantages import gae
from rlhf.math.group_advantages import (
    SEQUENCE_ESTIMATORS,
    broadcast_to_tokens,
    degenerate_groups,
    group_mean_and_std,
    group_mean_baseline,
    group_moments,
    sequence_advantages,
    token_returns,
)
from rlhf.stages.ppo_rollout import Rollout, global_whiten


@dataclass
class Advantages:
    advantages: torch.Tensor  # [B, T], 0 outside the mask
    returns: torch.Tensor  # [B, T] the critic's targets (gae), else zeros
    non_score: torch.Tensor  # [B, T] the KL part of the reward (logged)
    metrics: dict[str, float] = field(default_factory=dict)


def compute_advantages(cfg, rollout: Rollout, kl_tokens: torch.Tensor, kl_coef: float, backend) -> Advantages:
    """Advantages of the rollout under ``cfg.ppo.advantage``; ``kl_tokens`` [B, T] is the per-token
    KL estimate, a reward term (``-kl_coef * kl``) unless ``kl.in_loss``."""
    mask = rollout.mask
    beta = 0.0 if cfg.kl.in_loss else kl_coef
    # kl_tokens is 0 outside the mask (rlhf.math.kl.kl_penalty with its mask).
    non_score = torch.zeros_like(mask) if cfg.kl.in_loss else -kl_coef * kl_tokens
    estimator = cfg.ppo.advantage
    if estimator == "gae":
        last = (mask.sum(-1).long() - 1).clamp(min=0)
        rewards = non_score.clone()
        rewards[torch.arange(len(rollout.scores), device=rewards.device), last] += rollout.scores
        advantages, returns = gae(rewards, rollout.old_values, mask, cfg.ppo.gamma, cfg.ppo.lam)
        if cfg.ppo.whiten_advantages:
            advantages = global_whiten(advantages, mask, backend)
        return Advantages(advantages, returns, non_score)

    num_groups = cfg.rollout.batch_size
    moments = backend.all_reduce_sum(group_moments(rollout.scores, rollout.group_ids, num_groups))
    metrics = _group_metrics(moments)
    zeros = torch.zeros_like(mask)
    if estimator in SEQUENCE_ESTIMATORS:
        # KL as reward at the sequence level: the response's summed KL comes off its score
        # before the group statistics (as TRL's RLOO), so the baseline sees it too.
        scores = rollout.scores - beta * (kl_tokens * mask).sum(-1)
        if beta:
            moments = backend.all_reduce_sum(group_moments(scores, rollout.group_ids, num_groups))
        advantage = sequence_advantages(scores, rollout.group_ids, moments, estimator)
        return Advantages(broadcast_to_tokens(advantage, mask), zeros, non_score, metrics)
    scores = rollout.scores
    if estimator == "reinforce_pp_baseline":
        scores = group_mean_baseline(scores, rollout.group_ids, moments)
    returns = token_returns(scores, kl_tokens, mask, beta, cfg.ppo.gamma)
    return Advantages(global_whiten(returns, mask, backend), zeros, non_score, metrics)


def _group_metrics(moments: torch.Tensor) -> dict[str, float]:
    """Mean over groups of each group's reward mean and (unbiased) std, and the share of groups
    whose rewards are all equal (zero advantage under the group baselines)."""
    mean, std, count = group_mean_and_std(moments)
    present = count > 0
    groups = max(int(present.sum()), 1)
    return {
        "group_reward_mean": float(mean[present].sum()) / groups,
        "group_reward_std": float(std[present].sum()) / groups,
        "zero_advantage_groups": float(degenerate_groups(moments)[present].sum()) / groups,
    }
