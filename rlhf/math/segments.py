"""Attention masks and log-probs for rows of shared-prompt segments. Pure torch.

A row holds groups one after another; a group is a prompt (segment 0) followed by its responses
(segments 1..K). A token sees the earlier tokens of its own group that are in the prompt or in
its own segment: the block-diagonal causal mask of packing, with the responses of one prompt
hidden from each other (see ``preference_data.layout``).
"""

from __future__ import annotations

import torch


def segment_mask(group_ids: torch.Tensor, segment_ids: torch.Tensor) -> torch.Tensor:
    """Which key each query may attend to.

    Args:
        group_ids: [R, T] group of each token, -1 for padding.
        segment_ids: [R, T] 0 for prompt tokens, k >= 1 for response k's tokens, -1 for padding.
    Returns:
        [R, 1, T, T] bool, True where query t (dim 2) may attend to key s (dim 3): s <= t, same
        group, and s in the prompt or in t's segment. Every position sees itself, so a padding
        row is never empty (an all-False row would give NaN in softmax).
    """
    width = group_ids.shape[-1]
    positions = torch.arange(width, device=group_ids.device)
    causal = positions[None, :] <= positions[:, None]  # [T(query), T(key)]
    same_group = group_ids[:, :, None] == group_ids[:, None, :]
    real = group_ids[:, None, :] >= 0
    visible = (segment_ids[:, None, :] == 0) | (segment_ids[:, :, None] == segment_ids[:, None, :])
    allowed = causal[None] & same_group & real & visible
    allowed = allowed | torch.eye(width, dtype=torch.bool, device=group_ids.device)[None]
    return allowed[:, None]


def additive_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A bool mask as the additive float mask of eager attention: 0 where allowed, dtype's min elsewhere."""
    zeros = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zeros, torch.tensor(torch.finfo(dtype).min, dtype=dtype, device=allowed.device))


def predictor_rows(predictor_index: torch.Tensor, numel: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions whose logits are needed, and where each target's logits land among them.

    Args:
        predictor_index: [N] flat index (row * T + position) of the position predicting each target;
            several targets may share one (the prompt's last token predicts every response's first).
        numel: R * T.
    Returns:
        keep: [R * T] bool, the needed positions (to be reshaped to [R, T]).
        row: [N] index of each target's logits in the kept positions taken in flat order.
    """
    keep = torch.zeros(numel, dtype=torch.bool, device=predictor_index.device)
    keep[predictor_index] = True
    rank = keep.long().cumsum(0) - 1
    return keep, rank[predictor_index]


def gathered_logprobs(logits: torch.Tensor, row: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Log-probability of each target under its row of ``logits``.

    Args:
        logits: [M, V] logits of the kept positions.
        row: [N] row of ``logits`` predicting each target.
        targets: [N] target token ids.
    Returns:
        [N] float32 log-probs; the log-normaliser is computed once per kept row.
    """
    logits = logits.float()
    normaliser = torch.logsumexp(logits, dim=-1)
    return logits[row, targets] - normaliser[row]


def sequence_sums(values: torch.Tensor, sequence: torch.Tensor, num_sequences: int) -> torch.Tensor:
    """[S] sum of ``values`` [N] per sequence, ``sequence`` [N] naming each value's sequence."""
    out = torch.zeros(num_sequences, dtype=values.dtype, device=values.device)
    return out.index_add(0, sequence, values)
