"""Training losses. Pure torch functions returning ``(loss, metrics)`` with metrics detached."""

from __future__ import annotations

import torch

from rlhf.ops import IGNORE_INDEX, shift_labels, token_logprobs


def sft_loss(
    logits: torch.Tensor, labels: torch.Tensor, num_target_tokens: float | torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Next-token cross-entropy summed over this batch's target tokens, divided by a global count.

    Dividing by the number of target tokens in the *whole* optimizer step (all micro-batches,
    all processes) rather than this micro-batch's makes the gradient independent of how the
    step is split; see rlhf/backend.py.

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
