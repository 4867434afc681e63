"""Small tensor operations shared by the losses. Pure torch; inputs are never modified."""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` where ``mask`` is true.

    Args:
        values: [...] any shape.
        mask: same shape as ``values`` (bool or 0/1).
    """
    return (values * mask.to(values.dtype)).sum()


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``values`` over the positions where ``mask`` is true (0 where the mask is empty).

    Args:
        values: [...] any shape.
        mask: same shape as ``values``.
        dim: reduce over this dimension only; None reduces over everything.
    """
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Population (biased, divide-by-n) variance of ``values`` over the positions where ``mask`` is true.

    Biased rather than Bessel-corrected: whitening divides by it, and over the thousands of
    tokens of a PPO batch the two differ by a factor n / (n - 1) that is immaterial, while the
    biased form stays defined (0) for a single valid token. 0 where the mask is empty.
    Entries outside the mask may hold anything, even inf or NaN; they are never read.

    Args:
        values: [...] any shape.
        mask: same shape as ``values`` (bool or 0/1).
    Returns:
        scalar, in the dtype of ``values``.
    """
    keep = mask.bool()
    clean = torch.where(keep, values, torch.zeros_like(values))
    mean = masked_mean(clean, keep)
    centred = torch.where(keep, clean - mean, torch.zeros_like(values))
    return masked_mean(centred * centred, keep)


def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """Labels aligned with the logits that predict them: position t holds the label of t+1.

    Args:
        labels: [B, T] token ids with IGNORE_INDEX where no loss is taken.
    Returns:
        [B, T] with the last column IGNORE_INDEX.
    """
    shifted = torch.full_like(labels, IGNORE_INDEX)
    shifted[:, :-1] = labels[:, 1:]
    return shifted


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Log-probability of each target token under ``logits / temperature``.

    Args:
        logits: [B, T, V] unnormalised scores.
        targets: [B, T] token ids; IGNORE_INDEX positions get log-prob 0.
        temperature: the sampling temperature the logits are divided by.
    Returns:
        [B, T] float32 log-probs.
    """
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    safe_targets = targets.clamp(min=0)
    # logsumexp + gather instead of log_softmax over V keeps one [B, T, V] tensor, not two.
    picked = torch.gather(logits, -1, safe_targets.unsqueeze(-1)).squeeze(-1)
    logprobs = picked - torch.logsumexp(logits, dim=-1)
    return torch.where(targets == IGNORE_INDEX, torch.zeros_like(logprobs), logprobs)


def sequence_logps(token_logps: torch.Tensor, mask: torch.Tensor, average: bool = False) -> torch.Tensor:
    """Log-probability of each sequence: the sum (or mean) of its token log-probs under ``mask``.

    Args:
        token_logps: [B, T] per-token log-probs (e.g. from ``token_logprobs``).
        mask: [B, T] true (or 1) at the tokens that count, e.g. the response tokens.
        average: mean over the masked tokens instead of the sum (0 for an empty mask); the
            length-normalised form that IPO and SimPO-style losses expect.
    Returns:
        [B] sequence log-probs, in the dtype of ``token_logps``.
    """
    if average:
        return masked_mean(token_logps, mask, dim=-1)
    return (token_logps * mask.to(token_logps.dtype)).sum(-1)


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of the categorical distribution ``softmax(logits / temperature)`` at each position.

    ``H = logsumexp(z) - sum_v softmax(z)_v * z_v`` with ``z = logits / temperature``: one
    softmax tensor of size [B, T, V] instead of the log_softmax *and* softmax that
    ``-(p * log p).sum()`` needs, and no ``0 * log 0`` NaN where a probability underflows to 0.
    Pass the sampling temperature so the entropy is that of the distribution actually sampled.

    Args:
        logits: [B, T, V] finite unnormalised scores (any float dtype; computed in float32).
            A ``-inf`` entry (a vocabulary mask) would give NaN: mask with a large negative value.
        temperature: the sampling temperature the logits are divided by.
    Returns:
        [B, T] float32 entropies in nats.
    """
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    probs = torch.softmax(logits, dim=-1)
    # Row-wise dot product as a batched matmul: avoids materialising probs * logits ([B, T, V]).
    expected_logit = torch.matmul(probs.unsqueeze(-2), logits.unsqueeze(-1)).squeeze(-1).squeeze(-1)
    return torch.logsumexp(logits, dim=-1) - expected_logit
