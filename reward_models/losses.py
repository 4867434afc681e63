"""Reward-model losses. Pure torch functions returning ``(loss, metrics)`` with metrics detached.

Every loss reduces the same way: by default the mean over this call's items (pairs, prompts,
targets); with ``normalizer`` the *sum* over this call's items divided by the number of such
items in the whole global batch (all micro-batches of the optimizer step, all processes), so that
adding up the per-micro-batch losses gives the global mean whatever the split (rule 6 of
docs/design.md). Rewards are upcast to float32 (bf16 log-sigmoids of small margins lose most digits).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margin: float | torch.Tensor | None = None,
    *,
    normalizer: float | int | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Bradley-Terry loss ``-log sigmoid(r_chosen - r_rejected - margin)`` per pair.

    Args:
        chosen_rewards: [B] scalar reward of each pair's chosen response.
        rejected_rewards: [B] scalar reward of each pair's rejected response.
        margin: None, a float, or [B]: how much the chosen response must win by (e.g. the
            rating difference for rated data). The metrics ignore it.
        normalizer: None for the mean over the B pairs; else the number of pairs in the global
            batch, and the loss is this batch's sum divided by it.
    Returns:
        loss: scalar.
        metrics: ``accuracy`` (fraction with r_chosen > r_rejected; a tie counts as wrong),
            ``ties`` (fraction with r_chosen == r_rejected), ``margin_mean`` (mean of
            r_chosen - r_rejected), ``chosen_mean``, ``rejected_mean``, ``num_pairs`` (B).
            Means over zero pairs are 0.
    """
    if chosen_rewards.dim() != 1 or chosen_rewards.shape != rejected_rewards.shape:
        # A [B, 1] against a [B] would broadcast to [B, B] and silently train on B^2 "pairs".
        raise ValueError(
            f"chosen_rewards and rejected_rewards must both be [B]; got {tuple(chosen_rewards.shape)} "
            f"and {tuple(rejected_rewards.shape)} (squeeze a trailing reward dimension first)"
        )
    chosen, rejected = _as_float(chosen_rewards), _as_float(rejected_rewards)
    diff = chosen - rejected
    shifted = diff
    if margin is not None:
        if isinstance(margin, torch.Tensor) and margin.dim() > 0 and margin.shape != diff.shape:
            raise ValueError(f"margin must be a scalar or [B] = {tuple(diff.shape)}; got {tuple(margin.shape)}")
        shifted = diff - margin
    per_pair = -F.logsigmoid(shifted)
    num_pairs = diff.numel()
    loss = _reduce(per_pair.sum(), num_pairs, normalizer)

    with torch.no_grad():
        count = max(num_pairs, 1)
        metrics = {
            "accuracy": (diff > 0).sum().float() / count,
            "ties": (diff == 0).sum().float() / count,
            "margin_mean": diff.sum() / count,
            "chosen_mean": chosen.sum() / count,
            "rejected_mean": rejected.sum() / count,
            "num_pairs": torch.tensor(num_pairs, device=diff.device),
        }
    return loss, {k: v.detach() for k, v in metrics.items()}


def kwise_loss(
    rewards: torch.Tensor,
    ranks: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    normalizer: float | int | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """InstructGPT ranking loss: all ordered pairs of each prompt's ranked responses.

    For each prompt, the mean over the pairs (i, j) with ``ranks[i] < ranks[j]`` (i better; equal
    ranks are ties and give no pair), both real, of ``-log sigmoid(r_i - r_j)``; then the mean
    over the prompts that have at least one pair. Averaging per prompt first keeps a prompt with
    many responses from outweighing one with few (InstructGPT's 1 / C(K, 2) factor).

    Args:
        rewards: [B, K] scalar reward of each response (each scored once).
        ranks: [B, K] rank of each response, 0 = best; equal values are ties. Any numeric dtype.
        mask: [B, K] bool, true for real responses (K varies across prompts); None = all real.
            Values at padded positions are ignored, even NaN.
        normalizer: None for the mean over this batch's prompts with pairs; else the number of
            prompts with pairs in the global batch, and the loss is the sum of per-prompt means
            here divided by it.
    Returns:
        loss: scalar.
        metrics: ``accuracy`` (fraction of all pairs here with r_i > r_j; 0 with no pairs),
            ``num_pairs`` (pairs here), ``num_prompts`` (prompts with at least one pair here).
    """
    if rewards.dim() != 2 or ranks.shape != rewards.shape:
        raise ValueError(f"rewards and ranks must both be [B, K]; got {tuple(rewards.shape)} and {tuple(ranks.shape)}")
    if mask is None:
        mask = torch.ones_like(rewards, dtype=torch.bool)
    elif mask.shape != rewards.shape:
        raise ValueError(f"mask must be [B, K] = {tuple(rewards.shape)}; got {tuple(mask.shape)}")
    mask = mask.to(torch.bool)
    # Zero the padding so garbage there (NaN, inf) cannot leak into values or gradients.
    real_rewards = _masked(_as_float(rewards), mask)

    # Replaces, per prompt b:  for i in range(K): for j in range(K):
    #     if mask[b, i] and mask[b, j] and ranks[b, i] < ranks[b, j]: pair (i better than j)
    # better[b, i, j] is that condition; diff[b, i, j] = r_i - r_j.
    better = (ranks.unsqueeze(2) < ranks.unsqueeze(1)) & mask.unsqueeze(2) & mask.unsqueeze(1)
    diff = real_rewards.unsqueeze(2) - real_rewards.unsqueeze(1)
    pair_losses = torch.where(better, -F.logsigmoid(diff), diff.new_zeros(()))

    pairs_per_prompt = better.sum(dim=(1, 2))  # [B]
    has_pairs = pairs_per_prompt > 0
    per_prompt = pair_losses.sum(dim=(1, 2)) / pairs_per_prompt.clamp(min=1)  # 0 where no pairs
    num_prompts = has_pairs.sum()
    loss = _reduce(per_prompt.sum(), num_prompts, normalizer)

    with torch.no_grad():
        num_pairs = better.sum()
        metrics = {
            "accuracy": ((diff > 0) & better).sum().float() / num_pairs.clamp(min=1),
            "num_pairs": num_pairs,
            "num_prompts": num_prompts,
        }
    return loss, {k: v.detach() for k, v in metrics.items()}


def regression_loss(
    predicted: torch.Tensor,
    targets: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    normalizer: float | int | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Mean squared error between predicted rewards and absolute ratings.

    Args:
        predicted: [N] (or [B, K] with ``mask``) predicted rewards.
        targets: same shape as ``predicted``, the ratings.
        mask: same shape, bool, true for real entries; None = all real. Padding may hold NaN.
        normalizer: None for the mean over the real entries here; else the number of real
            entries in the global batch, and the loss is this batch's squared-error sum over it.
    Returns:
        loss: scalar.
        metrics: ``mse``, ``mae`` (over the real entries here; 0 if none), ``num_targets``.
    """
    if predicted.shape != targets.shape:
        raise ValueError(
            f"predicted and targets must have the same shape; got {tuple(predicted.shape)} and {tuple(targets.shape)}"
        )
    mask = _check_mask(mask, predicted)
    error = _masked(_as_float(predicted), mask) - _masked(_as_float(targets), mask)
    squared = error.square()
    count = mask.sum()
    loss = _reduce(squared.sum(), count, normalizer)

    with torch.no_grad():
        metrics = {
            "mse": squared.sum() / count.clamp(min=1),
            "mae": error.abs().sum() / count.clamp(min=1),
            "num_targets": count,
        }
    return loss, {k: v.detach() for k, v in metrics.items()}


def centering_loss(
    rewards: torch.Tensor,
    coef: float,
    mask: torch.Tensor | None = None,
    *,
    normalizer: float | int | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Reward-centering regulariser ``coef * mean(r^2)`` (Eisenstein et al. 2023, "Helping or
    Herding?"): pairwise losses only see differences, so this pins the rewards' level near 0.

    For pairs, pass ``torch.cat([chosen, rejected])`` and, with a normalizer, twice the global
    pair count. (TRL's ``center_rewards_coefficient`` squares ``r_chosen + r_rejected`` per pair
    instead; that is a different quantity.)

    Args:
        rewards: [N] (or [B, K] with ``mask``) rewards.
        coef: weight of the regulariser.
        mask: same shape as ``rewards``, bool, true for real entries; None = all real.
        normalizer: None for the mean over the real rewards here; else the number of real
            rewards in the global batch, and the loss is ``coef`` times the sum of squares here
            over it.
    Returns:
        loss: scalar.
        metrics: ``reward_sq_mean`` and ``reward_mean`` over the real rewards here (0 if none),
            ``num_rewards``.
    """
    mask = _check_mask(mask, rewards)
    real = _masked(_as_float(rewards), mask)
    squares = real.square()
    count = mask.sum()
    loss = coef * _reduce(squares.sum(), count, normalizer)

    with torch.no_grad():
        metrics = {
            "reward_sq_mean": squares.sum() / count.clamp(min=1),
            "reward_mean": real.sum() / count.clamp(min=1),
            "num_rewards": count,
        }
    return loss, {k: v.detach() for k, v in metrics.items()}


def _float_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32


def _as_float(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 unless already float32 / float64 (returns a new tensor or ``x`` itself;
    callers never write into it)."""
    return x.to(_float_dtype(x))


def _check_mask(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    if mask is None:
        return torch.ones_like(like, dtype=torch.bool)
    if mask.shape != like.shape:
        raise ValueError(f"mask must have shape {tuple(like.shape)}; got {tuple(mask.shape)}")
    return mask.to(torch.bool)


def _masked(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``values`` with padded positions set to 0 (by selection, so NaN padding cannot leak)."""
    return torch.where(mask, values, values.new_zeros(()))


def _reduce(
    total: torch.Tensor, local_count: int | torch.Tensor, normalizer: float | int | torch.Tensor | None
) -> torch.Tensor:
    """``total / normalizer`` when given (global count), else the local mean (0 when empty)."""
    if normalizer is None:
        if isinstance(local_count, torch.Tensor):
            return total / local_count.clamp(min=1).to(total.dtype)
        return total / max(local_count, 1)
    if not isinstance(normalizer, torch.Tensor) and normalizer <= 0:
        raise ValueError(f"normalizer must be > 0 (the global item count); got {normalizer}")
    return total / normalizer
