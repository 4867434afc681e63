"""Advantage estimation for PPO: GAE, whitening, explained variance.

Pure torch; inputs are never modified. All tensors are over *response* tokens only, [B, T],
with a mask that is true on each row's valid response tokens (a prefix of the row; padding after).
"""

from __future__ import annotations

import torch

from rlhf.math.ops import masked_mean, masked_var


def whiten(
    values: torch.Tensor,
    mask: torch.Tensor,
    shift_mean: bool = True,
    eps: float = 1e-8,
    *,
    stats: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Normalise ``values`` to unit variance (and, by default, zero mean) over the valid tokens.

    Mean and variance are taken over the positions where ``mask`` is true only, so padding
    never shifts the statistics. The variance is the population (biased, divide-by-n) one; see
    ``rlhf.math.ops.masked_var``. Statistics are those of the tensor given, unless ``stats`` passes
    others: a distributed caller reduces ``masked_moments`` over its processes and passes the
    global (mean, variance).

    ``shift_mean=False`` rescales without centring (``(x - mean) / std + mean``): the
    ``keep_mean`` form for rewards, whose mean carries the signal; advantages use the default.

    Args:
        values: [B, T] e.g. advantages or rewards. Entries outside the mask are ignored
            (they may be anything, even NaN).
        mask: [B, T] bool or 0/1, true at the valid tokens.
        shift_mean: centre to zero mean (True) or keep the original mean (False).
        eps: added to the variance before the square root.
        stats: (mean, variance) scalars to use instead of this tensor's own.
    Returns:
        [B, T] whitened values in the dtype of ``values``; 0 outside the mask.
    """
    keep = mask.bool()
    zeros = torch.zeros_like(values)
    clean = torch.where(keep, values, zeros)
    if stats is None:
        mean, var = masked_mean(clean, keep), masked_var(clean, keep)
    else:
        mean, var = (torch.as_tensor(x, dtype=values.dtype, device=values.device) for x in stats)
    whitened = (clean - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(keep, whitened, zeros)


def masked_moments(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[3] float64 (sum, sum of squares, count) over the valid entries: additive, so processes
    can all-reduce them before ``moments_to_stats``."""
    keep = mask.bool()
    clean = torch.where(keep, values, torch.zeros_like(values)).double()
    return torch.stack([clean.sum(), (clean * clean).sum(), keep.sum().double()])


def moments_to_stats(moments: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, population variance) from summed ``masked_moments``."""
    count = moments[2].clamp(min=1)
    mean = moments[0] / count
    return mean, (moments[1] / count - mean * mean).clamp(min=0)


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016) over response tokens.

    Backwards over time, per row::

        delta_t = r_t + gamma * V_{t+1} * valid_{t+1} - V_t
        A_t     = delta_t + gamma * lam * A_{t+1}

    with V and A taken as 0 beyond a row's last valid token (the episode ends there; the
    terminal state has no value). ``returns = advantages + values`` are the critic's targets.

    Args:
        rewards: [B, T] per-token rewards (KL penalty, plus the score at the last valid token).
        values: [B, T] critic values V_t of the state before token t.
        mask: [B, T] bool or 0/1, true at the valid response tokens, which must form a
            contiguous prefix of each row (ragged lengths, padding after); a hole would be
            read as an episode end, so it is rejected. Entries outside the mask are ignored.
        gamma: discount factor.
        lam: GAE lambda (bias-variance trade-off; 1 gives Monte-Carlo returns minus V).
    Returns:
        advantages: [B, T], 0 outside the mask.
        returns: [B, T] ``advantages + values``, 0 outside the mask.
    Raises:
        ValueError: if shapes differ or a row's mask is not a prefix.
    """
    if not rewards.shape == values.shape == mask.shape or rewards.dim() != 2:
        raise ValueError(
            f"rewards, values and mask must share one [B, T] shape, got "
            f"{tuple(rewards.shape)}, {tuple(values.shape)}, {tuple(mask.shape)}"
        )
    keep = mask.bool()
    if (keep[:, 1:] & ~keep[:, :-1]).any():
        raise ValueError("mask must be a contiguous prefix of each row (valid tokens, then padding)")

    dtype = torch.promote_types(rewards.dtype, values.dtype)
    zeros = torch.zeros(rewards.shape, dtype=dtype, device=rewards.device)
    # Zeroing V beyond the last valid token is what makes V_{t+1} * valid_{t+1} below.
    rewards = torch.where(keep, rewards.to(dtype), zeros)
    values = torch.where(keep, values.to(dtype), zeros)

    # Vectorised over the batch: replaces the per-row loop
    #   for b in range(B): for t in reversed(range(length[b])): ...
    # with one reversed loop over time that advances every row at once.
    next_value = zeros[:, 0]
    next_advantage = zeros[:, 0]
    advantages_reversed = []
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = torch.where(keep[:, t], delta + gamma * lam * next_advantage, zeros[:, t])
        advantages_reversed.append(advantage)
        next_value = values[:, t]
        next_advantage = advantage
    advantages = torch.stack(advantages_reversed[::-1], dim=1)
    returns = advantages + values
    return advantages, returns


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """How much of the returns' variance the critic explains: ``1 - Var[R - V] / Var[R]``.

    1 is a perfect critic, 0 one no better than a constant, negative worse than a constant.
    Variances over the valid tokens only; the divide-by-n convention cancels in the ratio.

    Args:
        values: [B, T] critic predictions.
        returns: [B, T] targets (e.g. from ``gae``).
        mask: [B, T] bool or 0/1, true at the valid tokens.
    Returns:
        scalar, detached; NaN when the returns have zero variance over the mask (undefined).
    """
    values = values.detach()
    returns = returns.detach()
    var_returns = masked_var(returns, mask)
    var_residual = masked_var(returns - values, mask)
    # torch.where rather than an `if` on .item(): no device sync for a logging metric.
    undefined = torch.full_like(var_returns, float("nan"))
    return torch.where(var_returns > 0, 1.0 - var_residual / var_returns, undefined)
