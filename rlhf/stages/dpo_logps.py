"""DPO's per-sequence log-probs of the final replies, in shared-prompt rows or separate rows."""

from __future__ import annotations

from preference_data.collate import collate_rows
from preference_data.layout import layout_groups, share_prompt
from rlhf.math.ops import shift_labels, token_logprobs
from rlhf.models.layout import layout_options, response_logprobs


def sequence_logps(model, pairs, pad_id: int, device, cfg):
    """Per-sequence log-probs of the final replies: chosen [B] and rejected [B], one forward.

    Without a layout (``data.shared_prompt`` false, or a model that cannot take one) chosen and
    rejected are separate right-padded rows; with it each pair is one shared-prompt segment and
    only the positions predicting reply tokens go through the language-model head.
    Returns chosen, rejected, the chosen replies' per-token NLL [B], and token counts.
    """
    n = len(pairs)
    layout, _ = layout_options(cfg.data, model)
    if layout is None:
        batch = collate_rows([p.chosen for p in pairs] + [p.rejected for p in pairs], pad_id)
        inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        logits = model(**inputs, use_cache=False).logits
        targets = shift_labels(batch["labels"].to(device))
        logps = token_logprobs(logits, targets).sum(-1)
        lengths = (targets != -100).float().sum(-1)
        computed = unshared = batch["input_ids"].numel()
        chosen, rejected = logps[:n], logps[n:]
        chosen_length, rejected_length = lengths[:n], lengths[n:]
    else:
        groups = [
            share_prompt((p.chosen.input_ids, p.rejected.input_ids), (p.chosen.labels, p.rejected.labels))
            for p in pairs
        ]
        batch = layout_groups(groups, pad_id, **layout)
        logps, lengths = response_logprobs(model, batch, device)
        computed, unshared = int(batch["tokens_computed"]), int(batch["tokens_unshared"])
        chosen, rejected = logps[0::2], logps[1::2]  # responses in group order: (chosen, rejected) per pair
        chosen_length, rejected_length = lengths[0::2], lengths[1::2]
    counts = {
        "tokens": float(chosen_length.sum() + rejected_length.sum()),
        "tokens_computed": float(computed),
        "tokens_unshared": float(unshared),
    }
    chosen_length, rejected_length = chosen_length.clamp(min=1), rejected_length.clamp(min=1)
    chosen_nll = -chosen / chosen_length
    if cfg.dpo.resolved_length_normalize():
        chosen, rejected = chosen / chosen_length, rejected / rejected_length
    return chosen, rejected, chosen_nll, counts
