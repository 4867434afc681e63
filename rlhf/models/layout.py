"""Feeding shared-prompt rows (``preference_data.layout``) to a transformers model.

The rows need a mask no 2D padding mask can express (responses of one prompt hidden from each
other), so the model gets it as a prepared 4D mask, which transformers passes to the attention
functions as it is: bool for ``sdpa`` (True = attend), additive float for ``eager``. Other
attention implementations (flash attention reads only position ids) cannot express it; for
them, for encoders and for prompt-learning adapters (their virtual tokens shift every
position), :func:`shared_layout_unsupported` says why and the caller scores separate rows.

:func:`response_logprobs` asks the model for the logits of the predicting positions only
(``logits_to_keep`` as a [R, T] bool mask, transformers >= 5): a response's first token is
predicted by the prompt's last position, so that position's logits serve all K responses, and
no prompt position goes through the language-model head at all.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from rlhf.math.segments import additive_mask, gathered_logprobs, predictor_rows, segment_mask, sequence_sums

SUPPORTED_ATTENTION = ("sdpa", "eager")


def _levels(model: nn.Module) -> list[nn.Module]:
    """``model`` and the modules it wraps (DDP / DeepSpeed ``module``, peft ``base_model`` / ``model``)."""
    levels = [model]
    for _ in range(6):
        for attr in ("module", "base_model", "model"):
            inner = getattr(levels[-1], attr, None)
            if isinstance(inner, nn.Module) and inner is not levels[-1]:
                levels.append(inner)
                break
        else:
            break
    return levels


def _inner(model: nn.Module) -> nn.Module:
    """The innermost wrapped module that has a transformers config."""
    with_config = [m for m in _levels(model) if hasattr(m, "config")]
    return with_config[-1] if with_config else model


def _attention(model: nn.Module) -> str:
    config = getattr(_inner(model), "config", None)
    return str(getattr(config, "_attn_implementation", None) or "eager")


def shared_layout_unsupported(model: nn.Module) -> Optional[str]:
    """Why ``model`` cannot take shared-prompt rows, or None when it can."""
    if getattr(model, "is_decoder", True) is False:  # reward_models.ScalarRewardModel on an encoder
        return "an encoder reads its first token"
    for level in _levels(model):
        peft_config = getattr(level, "peft_config", None)
        if isinstance(peft_config, dict) and any(getattr(c, "is_prompt_learning", False) for c in peft_config.values()):
            return "prompt-learning adapters prepend virtual tokens"
    config = getattr(_inner(model), "config", None)
    if config is not None and getattr(config, "is_encoder_decoder", False):
        return "encoder-decoder models are not supported"
    attention = _attention(model)
    if attention not in SUPPORTED_ATTENTION:
        return f"attention implementation {attention!r} takes no 4D mask (use sdpa or eager)"
    return None


def layout_options(data, model: nn.Module) -> tuple[Optional[dict], str]:
    """``layout_groups`` keyword arguments for a data section with ``shared_prompt`` / ``pack`` /
    ``row_tokens`` (None = separate rows), and why the layout is off when it was asked for."""
    if not data.shared_prompt:
        return None, ""
    why = shared_layout_unsupported(model)
    return (None, why) if why else ({"pack": data.pack, "row_tokens": data.row_tokens}, "")


def model_inputs(model: nn.Module, batch: dict, device, dtype: torch.dtype = torch.float32) -> dict:
    """``input_ids``, the 4D ``attention_mask`` and ``position_ids`` of a layout batch, on ``device``."""
    allowed = segment_mask(batch["group_ids"].to(device), batch["segment_ids"].to(device))
    mask = allowed if _attention(model) == "sdpa" else additive_mask(allowed, dtype)
    return {
        "input_ids": batch["input_ids"].to(device),
        "attention_mask": mask,
        "position_ids": batch["position_ids"].to(device),
    }


def response_logprobs(model: nn.Module, batch: dict, device, dtype: torch.dtype = torch.float32):
    """Per-response log-probs of the labelled tokens of a layout batch, in one forward pass.

    Returns:
        logps: [S] sums of the labelled tokens' log-probs per response (float32).
        counts: [S] labelled tokens per response.
    """
    inputs = model_inputs(model, batch, device, dtype)
    rows, width = batch["input_ids"].shape
    predictor = batch["predictor_index"].to(device)
    keep, row = predictor_rows(predictor, rows * width)
    logits = kept_logits(model, inputs, keep.view(rows, width))
    targets = batch["target_ids"].to(device)
    sequence = batch["target_sequence"].to(device)
    count = batch["read_index"].numel()
    token_logps = gathered_logprobs(logits, row, targets)
    counts = sequence_sums(torch.ones_like(token_logps), sequence, count)
    return sequence_sums(token_logps, sequence, count), counts


def kept_logits(model: nn.Module, inputs: dict, keep: torch.Tensor) -> torch.Tensor:
    """Logits [N, V] of the N positions where ``keep`` [B, T] is True, in row-major order.

    Only those positions go through the language-model head; a model whose forward ignores
    ``logits_to_keep`` gives every position's logits, and the kept ones are picked from them.
    """
    logits = model(**{"use_cache": False, **inputs}, logits_to_keep=keep).logits
    if logits.dim() == 3:
        logits = logits[keep]
    return logits
