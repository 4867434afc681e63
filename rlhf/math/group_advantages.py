"""Critic-free advantages: a group of G responses to one prompt is its own baseline.

Pure torch; inputs are never modified. A batch holds N sampled responses; ``group_ids`` [N]
names each one's prompt group with an integer in ``[0, num_groups)`` that is the same on every
process, so a group may be split across processes. Group statistics are sums (reward, reward
squared, count) that :func:`group_moments` gives per process and a distributed caller
all-reduces before :func:`sequence_advantages` reads them: 1 and 2 processes then agree.

| estimator | advantage of response i in a group with rewards r (count G, mean m) |
| --- | --- |
| ``grpo`` | (r_i - m) / (std + eps), std the unbiased one (DeepSeekMath; as TRL) |
| ``dr_grpo`` | r_i - m (Dr. GRPO: no std; pair with the ``constant`` loss normaliser) |
| ``rloo`` | r_i - (sum(r) - r_i) / (G - 1), the mean of the other G - 1 |
| ``reinforce_pp`` | per-token return of (score - KL), whitened over the global batch |
| ``reinforce_pp_baseline`` | as ``reinforce_pp`` with the score minus its group's mean |

A group whose rewards are all equal carries no signal: its GRPO / Dr. GRPO / RLOO advantages
are exactly 0 (:func:`degenerate_groups` finds them, for logging or DAPO's dynamic sampling).
"""

from __future__ import annotations

import torch

from rlhf.math.advantages import gae

GROUP_ESTIMATORS = ("grpo", "dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline")
# Estimators whose advantage is one number per response (broadcast over its tokens).
SEQUENCE_ESTIMATORS = ("grpo", "dr_grpo", "rloo")


def group_moments(rewards: torch.Tensor, group_ids: torch.Tensor, num_groups: int) -> torch.Tensor:
    """[num_groups, 3] float64 (sum, sum of squares, count) of ``rewards`` [N] per group: additive,
    so processes holding parts of the same groups all-reduce (sum) them."""
    if rewards.dim() != 1 or rewards.shape != group_ids.shape:
        raise ValueError(f"rewards and group_ids must be [N], got {tuple(rewards.shape)}, {tuple(group_ids.shape)}")
    if group_ids.numel() and (int(group_ids.min()) < 0 or int(group_ids.max()) >= num_groups):
        raise ValueError(f"group_ids must lie in [0, {num_groups})")
    r = rewards.detach().double()
    moments = torch.zeros(num_groups, 3, dtype=torch.float64, device=rewards.device)
    return moments.index_add(0, group_ids, torch.stack([r, r * r, torch.ones_like(r)], dim=1))


def group_mean_and_std(moments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per group: (mean, unbiased std, count) from summed moments (std 0 for a group of one)."""
    total, squares, count = moments.unbind(1)
    mean = total / count.clamp(min=1)
    # sum((r - m)^2) = sum(r^2) - G m^2, clamped at 0 against rounding.
    scatter = (squares - count * mean * mean).clamp(min=0)
    std = torch.sqrt(scatter / (count - 1).clamp(min=1))
    return mean, std, count


def degenerate_groups(moments: torch.Tensor, tolerance: float = 1e-6) -> torch.Tensor:
    """[num_groups] bool: groups of at least one response whose rewards are all equal (std at
    most ``tolerance`` x max(|mean|, 1), against float rounding): they carry no signal."""
    mean, std, count = group_mean_and_std(moments)
    return (count > 0) & (std <= tolerance * mean.abs().clamp(min=1.0))


def sequence_advantages(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    moments: torch.Tensor,
    estimator: str,
    eps: float = 1e-4,
) -> torch.Tensor:
    """[N] advantage of each response under ``grpo``, ``dr_grpo`` or ``rloo``.

    Args:
        rewards: [N] scores of the responses (this process's).
        group_ids: [N] each response's group.
        moments: [num_groups, 3] :func:`group_moments`, summed over every process.
        estimator: one of ``SEQUENCE_ESTIMATORS``.
        eps: added to GRPO's std (TRL's 1e-4), so a degenerate group gives 0, not NaN.
    Raises:
        ValueError: an unknown estimator, or RLOO on a group of one (no other sample).
    """
    if estimator not in SEQUENCE_ESTIMATORS:
        raise ValueError(f"unknown sequence estimator {estimator!r}; valid: {', '.join(SEQUENCE_ESTIMATORS)}")
    mean, std, count = group_mean_and_std(moments)
    r = rewards.detach().double()
    m, s, g = mean[group_ids], std[group_ids], count[group_ids]
    if estimator == "grpo":
        out = (r - m) / (s + eps)
    elif estimator == "dr_grpo":
        out = r - m
    else:
        if bool((g < 2).any()):
            raise ValueError("rloo needs at least 2 responses per group (rollout.group_size >= 2)")
        # r_i - (G m - r_i) / (G - 1) = G (r_i - m) / (G - 1)
        out = g * (r - m) / (g - 1)
    # Exactly 0 for an all-equal group, not the rounding left in r - m.
    out = torch.where(degenerate_groups(moments)[group_ids], torch.zeros_like(out), out)
    return out.to(rewards.dtype)


def broadcast_to_tokens(advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[N] per-response advantages as [N, T] per-token ones, 0 outside ``mask`` [N, T]."""
    keep = mask.bool()
    values = advantages[:, None].to(torch.float32).expand(keep.shape)
    return torch.where(keep, values, torch.zeros_like(values))


def token_returns(
    scores: torch.Tensor,
    kl: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    gamma: float = 1.0,
) -> torch.Tensor:
    """REINFORCE++ returns [N, T]: per-token reward ``-kl_coef * kl`` plus the score at each row's
    last valid token, summed from each token to the row's end with discount ``gamma``.

    Args:
        scores: [N] sequence scores (``reinforce_pp_baseline``: already minus the group mean).
        kl: [N, T] per-token KL estimates (k1 in the reward, as PPO); ignored outside ``mask``.
        mask: [N, T] valid response tokens, a prefix of each row.
        kl_coef: KL coefficient beta.
        gamma: discount.
    Returns:
        [N, T] returns in float32, 0 outside the mask.
    """
    keep = mask.bool()
    zeros = torch.zeros(keep.shape, dtype=torch.float32, device=keep.device)
    rewards = torch.where(keep, -kl_coef * kl.detach().float(), zeros)
    last = (keep.long().sum(1) - 1).clamp(min=0)
    has_tokens = keep.any(1)
    rows = torch.arange(keep.shape[0], device=keep.device)
    rewards[rows[has_tokens], last[has_tokens]] += scores.detach().float()[has_tokens]
    # With no values and lambda 1, GAE's advantages are the discounted returns (it also refuses
    # a mask that is not a prefix).
    returns, _ = gae(rewards, zeros, keep, gamma=gamma, lam=1.0)
    return returns


def group_mean_baseline(scores: torch.Tensor, group_ids: torch.Tensor, moments: torch.Tensor) -> torch.Tensor:
    """[N] scores minus their group's mean (REINFORCE++-baseline's score, before the KL terms)."""
    mean, _, _ = group_mean_and_std(moments)
    return (scores.detach().double() - mean[group_ids]).to(scores.dtype)
