"""Training losses. Pure torch functions returning ``(loss, metrics)`` with metrics detached."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rlhf.math.ops import IGNORE_INDEX, masked_mean, shift_labels, token_logprobs


def sft_loss(
    logits: torch.Tensor, labels: torch.Tensor, num_target_tokens: float | torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Next-token cross-entropy summed over this batch's target tokens, divided by a global count.

    Dividing by the number of target tokens in the *whole* optimizer step (all micro-batches,
    all processes) rather than this micro-batch's makes the gradient independent of how the
    step is split; see rlhf/runtime/backend.py.

    Args:
        logits: [B, T, V] model outputs for the input positions.
        labels: [B, T] input ids at target positions, IGNORE_INDEX elsewhere (unshifted).
        num_target_tokens: scalar, target tokens in the global batch (> 0).
    Returns:
        loss: scalar, this batch's share of the global mean loss.
        metrics: ``nll_sum`` (sum of token NLL here) and ``tokens`` (target tokens here).
    """
    targets = shift_labels(labels)
    nll = -token_logprobs(logits, targets)
    mask = targets != IGNORE_INDEX
    nll_sum = (nll * mask).sum()
    loss = nll_sum / num_target_tokens
    return loss, {"nll_sum": nll_sum.detach(), "tokens": mask.sum().detach()}


def sft_loss_on_targets(
    logits: torch.Tensor, targets: torch.Tensor, num_target_tokens: float | torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """:func:`sft_loss` from the logits of the predicting positions only.

    Args:
        logits: [N, V] logits of the N positions that predict a target token.
        targets: [N] the token each predicts.
        num_target_tokens: scalar, target tokens in the global batch (> 0).
    Returns:
        loss and metrics as :func:`sft_loss` (``nll_sum``, ``tokens``).
    """
    logits = logits.float()
    nll = torch.logsumexp(logits, dim=-1) - logits.gather(-1, targets[:, None])[:, 0]
    nll_sum = nll.sum()
    return nll_sum / num_target_tokens, {"nll_sum": nll_sum.detach(), "tokens": torch.tensor(targets.numel())}


DPO_LOSS_TYPES = ("sigmoid", "ipo", "hinge")


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor | None,
    ref_rejected_logps: torch.Tensor | None,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
    reference_free: bool = False,
    *,
    normalizer: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Direct Preference Optimization loss and its IPO / hinge variants, one value per pair.

    With ``h = (pi_c - ref_c) - (pi_r - ref_r)``, the difference of the chosen and rejected
    log-ratios, the per-pair losses are:

    - ``"sigmoid"`` (DPO, Rafailov et al. 2023): ``-log sigmoid(beta * h)``. A non-zero
      ``label_smoothing`` ``ls`` gives conservative DPO (cDPO), which assumes each label is
      flipped with probability ``ls``: ``-(1 - ls) * log sigmoid(beta*h) - ls * log sigmoid(-beta*h)``.
    - ``"ipo"`` (Azar et al. 2023, Eq. 17): ``(h - 1 / (2 * beta))**2``, beta being the paper's tau.
      The squared target makes the loss depend on the scale of ``h``: pass length-normalised
      log-probs (``sequence_logps(..., average=True)``) as the paper's results and TRL do;
      with summed log-probs the loss grows with the response length.
    - ``"hinge"`` (SLiC, Zhao et al. 2023): ``relu(1 - beta * h)``.

    Args:
        policy_chosen_logps: [B] policy log-prob of each chosen response (sum over its tokens,
            or mean when the caller length-normalises). Gradients flow through these two.
        policy_rejected_logps: [B] the same for the rejected responses.
        ref_chosen_logps: [B] reference-model log-probs of the chosen responses; constants
            (detached here); ignored, and may be None, when ``reference_free``.
        ref_rejected_logps: [B] the same for the rejected responses.
        beta: scalar, strength of the implicit KL constraint (tau for IPO).
        loss_type: one of ``DPO_LOSS_TYPES``.
        label_smoothing: cDPO label-flip probability in [0, 0.5]; sigmoid loss only.
        reference_free: treat the reference log-probs as 0 (a uniform reference).
        normalizer: scalar, number of pairs in the global batch (all micro-batches and processes).
            When given, the loss is ``sum / normalizer`` so that gradients do not depend on how
            the step is split; otherwise the mean over this batch.
    Returns:
        loss: scalar.
        metrics (detached, means over this batch): ``rewards_chosen`` and ``rewards_rejected``
            (implicit rewards ``beta * log-ratio``), ``margins`` (their difference), ``accuracy``
            (fraction of pairs whose chosen reward is higher), ``logps_chosen``, ``logps_rejected``
            (policy log-probs).
    """
    if loss_type not in DPO_LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {DPO_LOSS_TYPES}, got {loss_type!r}")
    if not 0.0 <= label_smoothing <= 0.5:
        raise ValueError(f"label_smoothing must lie in [0, 0.5], got {label_smoothing}")
    if label_smoothing and loss_type != "sigmoid":
        raise ValueError(f"label_smoothing applies to the sigmoid loss only, not {loss_type!r}")

    if reference_free:
        chosen_logratios = policy_chosen_logps
        rejected_logratios = policy_rejected_logps
    else:
        if ref_chosen_logps is None or ref_rejected_logps is None:
            raise ValueError("reference log-probs are required unless reference_free=True")
        # The reference is a fixed anchor: even if the caller forgot no_grad, no gradient reaches it.
        chosen_logratios = policy_chosen_logps - ref_chosen_logps.detach()
        rejected_logratios = policy_rejected_logps - ref_rejected_logps.detach()
    h = chosen_logratios - rejected_logratios

    if loss_type == "sigmoid":
        losses = -F.logsigmoid(beta * h)
        if label_smoothing:
            losses = (1 - label_smoothing) * losses - label_smoothing * F.logsigmoid(-beta * h)
    elif loss_type == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    else:  # hinge
        losses = torch.relu(1 - beta * h)

    loss = losses.mean() if normalizer is None else losses.sum() / normalizer

    rewards_chosen = beta * chosen_logratios.detach()
    rewards_rejected = beta * rejected_logratios.detach()
    metrics = {
        "rewards_chosen": rewards_chosen.mean(),
        "rewards_rejected": rewards_rejected.mean(),
        "margins": (rewards_chosen - rewards_rejected).mean(),
        "accuracy": (rewards_chosen > rewards_rejected).float().mean(),
        "logps_chosen": policy_chosen_logps.detach().mean(),
        "logps_rejected": policy_rejected_logps.detach().mean(),
    }
    return loss, metrics


def _token_normalizer(mask: torch.Tensor, normalizer: float | torch.Tensor | None) -> float | torch.Tensor:
    """The caller's global valid-token count, or this batch's own (at least 1)."""
    return mask.sum().clamp(min=1) if normalizer is None else normalizer


# How a per-token loss becomes one number (see ``aggregate_token_loss``).
LOSS_AGGREGATIONS = ("token_mean", "sequence_mean", "constant")


def aggregate_token_loss(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    aggregation: str = "token_mean",
    *,
    num_tokens: float | torch.Tensor | None = None,
    num_sequences: float | torch.Tensor | None = None,
    constant_length: int | None = None,
) -> torch.Tensor:
    """A [B, T] per-token loss as a scalar, so that summing it over micro-batches and processes
    gives the loss of the global batch.

    - ``token_mean``: sum over valid tokens / ``num_tokens`` (global token count; DAPO's
      token-level loss, and PPO's): every token weighs the same, a long response more.
    - ``sequence_mean``: each response's token mean, summed / ``num_sequences`` (global count;
      the GRPO paper): every response weighs the same, a long one's tokens less.
    - ``constant``: sum over valid tokens / (``num_sequences`` x ``constant_length``) (Dr.
      GRPO, with the maximum response length): no length bias either way.

    Counts default to this batch's own (token count at least 1, rows with a valid token).
    """
    keep = mask.bool()
    masked = torch.where(keep, per_token, torch.zeros_like(per_token))
    if aggregation == "token_mean":
        return masked.sum() / _token_normalizer(keep, num_tokens)
    sequences = keep.any(1).sum().clamp(min=1) if num_sequences is None else num_sequences
    if aggregation == "sequence_mean":
        lengths = keep.sum(1).clamp(min=1)
        return (masked.sum(1) / lengths).sum() / sequences
    if aggregation == "constant":
        if not constant_length or constant_length < 1:
            raise ValueError("the constant aggregation needs constant_length >= 1 (the maximum response length)")
        return masked.sum() / (sequences * constant_length)
    raise ValueError(f"unknown loss aggregation {aggregation!r}; valid: {', '.join(LOSS_AGGREGATIONS)}")


def ppo_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
    *,
    clip_eps_high: float | None = None,
    normalizer: float | torch.Tensor | None = None,
    aggregation: str = "token_mean",
    num_sequences: float | torch.Tensor | None = None,
    constant_length: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clipped surrogate (Schulman et al. 2017), per response token.

    With ``ratio = exp(logp - logp_old)`` the per-token loss is
    ``max(-A * ratio, -A * clip(ratio, 1 - eps_low, 1 + eps_high))``: the pessimistic branch, so
    a token whose ratio already moved past the clip range in the advantage's direction gives
    no gradient. ``eps_low = clip_eps``; ``eps_high = clip_eps_high`` (DAPO's "clip-higher",
    e.g. 0.28, leaves room for unlikely tokens to grow) or ``clip_eps`` when None. The tokens'
    losses are combined by :func:`aggregate_token_loss` (``token_mean`` by default: the sum over
    valid tokens divided by ``normalizer``).

    Args:
        logprobs: [B, T] current policy log-probs of the sampled tokens (with gradient).
        old_logprobs: [B, T] log-probs of the same tokens under the rollout policy; constants
            (detached here).
        advantages: [B, T] advantages (whitened by the caller); constants (detached here).
        mask: [B, T] bool or 0/1, true at valid response tokens. Entries outside it are ignored
            and give no gradient, whatever they hold.
        clip_eps: the clip range eps (the lower one when ``clip_eps_high`` is given).
        clip_eps_high: the upper clip range; None = ``clip_eps``.
        normalizer: scalar, number of valid tokens in the global batch (all micro-batches,
            all processes), so the loss does not depend on how the step is split; defaults to
            this batch's count.
        aggregation, num_sequences, constant_length: see :func:`aggregate_token_loss`.
    Returns:
        loss: scalar.
        metrics (detached; means over this batch's valid tokens):
            ``clipfrac`` fraction of tokens where the clipped branch is the larger (active) one,
            ``clipfrac_low`` / ``clipfrac_high`` those clipped below 1 - eps_low (A < 0) and
            above 1 + eps_high (A > 0);
            ``approx_kl`` ``0.5 * (logp - logp_old)**2`` (k2);
            ``approx_kl_k3`` ``(ratio - 1) - log ratio``, unbiased for KL(old || new) since the
            tokens were sampled from the old policy;
            ``ratio_mean``, ``ratio_max`` (0 for an empty mask);
            ``tokens``, ``clipped_tokens``, ``clipped_low_tokens``, ``clipped_high_tokens``:
            counts, to sum across processes for global fractions.
    """
    keep = mask.bool()
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    old_logprobs = old_logprobs.detach()
    advantages = advantages.detach()
    # Zero the log-ratio outside the mask *before* exp: garbage there would otherwise give
    # inf * 0 = NaN in the loss or, through torch.where's backward, in the gradient.
    log_ratio = torch.where(keep, logprobs - old_logprobs, torch.zeros_like(logprobs))
    ratio = torch.exp(log_ratio)
    advantages = torch.where(keep, advantages, torch.zeros_like(advantages))

    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + eps_high)
    per_token = torch.maximum(unclipped, clipped)
    loss = aggregate_token_loss(
        per_token,
        keep,
        aggregation,
        num_tokens=normalizer,
        num_sequences=num_sequences,
        constant_length=constant_length,
    )

    with torch.no_grad():
        clipped_active = (clipped > unclipped) & keep
        low = clipped_active & (ratio < 1.0)
        high = clipped_active & (ratio > 1.0)
        log_ratio_d = log_ratio.detach()
        ratio_d = ratio.detach()
        metrics = {
            "clipfrac": masked_mean(clipped_active.float(), keep),
            "clipfrac_low": masked_mean(low.float(), keep),
            "clipfrac_high": masked_mean(high.float(), keep),
            "approx_kl": masked_mean(0.5 * log_ratio_d * log_ratio_d, keep),
            "approx_kl_k3": masked_mean(torch.expm1(log_ratio_d) - log_ratio_d, keep),
            "ratio_mean": masked_mean(ratio_d, keep),
            # ratio > 0, so the zeros put outside the mask never win the max.
            "ratio_max": torch.where(keep, ratio_d, torch.zeros_like(ratio_d)).max(),
            "tokens": keep.sum(),
            "clipped_tokens": clipped_active.sum(),
            "clipped_low_tokens": low.sum(),
            "clipped_high_tokens": high.sum(),
        }
    return loss, metrics


def ppo_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
    *,
    normalizer: float | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss: ``0.5 * max((V - R)**2, (V_clip - R)**2)`` per response token.

    ``V_clip = V_old + clip(V - V_old, -eps, eps)`` keeps the critic within ``eps`` of its
    rollout-time values, the value-side analogue of the policy's ratio clip (its own range,
    in the units of the values). Weighting by ``vf_coef`` is the caller's. The loss is the sum
    over valid tokens divided by ``normalizer``.

    Args:
        values: [B, T] current critic values (with gradient).
        old_values: [B, T] critic values at rollout time; constants (detached here).
        returns: [B, T] value targets (e.g. from ``rlhf.math.advantages.gae``); constants (detached).
        mask: [B, T] bool or 0/1, true at valid response tokens; entries outside it are ignored.
        clip_eps: the value clip range.
        normalizer: scalar, number of valid tokens in the global batch; defaults to this
            batch's count. See ``ppo_policy_loss``.
    Returns:
        loss: scalar.
        metrics (detached; means over this batch's valid tokens):
            ``vf_clipfrac`` fraction of tokens where the clipped branch is the larger (active) one;
            ``value_mean`` mean current value;
            ``value_error`` mean unclipped squared error ``(V - R)**2``;
            ``tokens`` and ``vf_clipped_tokens``: counts, to sum across processes.
    """
    keep = mask.bool()
    zeros = torch.zeros_like(values)
    old_values = torch.where(keep, old_values.detach(), zeros)
    returns = torch.where(keep, returns.detach(), zeros)
    values_in = torch.where(keep, values, zeros)

    values_clipped = old_values + torch.clamp(values_in - old_values, -clip_eps, clip_eps)
    error_unclipped = (values_in - returns) ** 2
    error_clipped = (values_clipped - returns) ** 2
    per_token = 0.5 * torch.maximum(error_unclipped, error_clipped)
    loss = (per_token * keep).sum() / _token_normalizer(keep, normalizer)

    with torch.no_grad():
        clipped_active = (error_clipped > error_unclipped) & keep
        metrics = {
            "vf_clipfrac": masked_mean(clipped_active.float(), keep),
            "value_mean": masked_mean(values_in.detach(), keep),
            "value_error": masked_mean(error_unclipped.detach(), keep),
            "tokens": keep.sum(),
            "vf_clipped_tokens": clipped_active.sum(),
        }
    return loss, metrics
