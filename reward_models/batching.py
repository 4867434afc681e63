"""Reward-model examples: one *group* per prompt, holding every response to score for it.

Pairwise records are groups of K = 2 (ranks 0 and 1), ranked records keep their K responses
and ranks, rated records keep their scores as regression targets. Putting all responses of a
prompt in the same batch means each one is scored once per step, and the K-wise loss sees all
C(K, 2) pairs (InstructGPT).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import torch

from preference_data.layout import layout_groups, share_prompt
from preference_data.records import PairwiseRecord, RankedRecord, RatedRecord
from reward_models.model import encode_for_reward, render_for_reward
from rlhf.models.layout import model_inputs


class TooLong(ValueError):
    """A response does not fit max_length under the 'reject' policy."""


@dataclass(frozen=True)
class Group:
    sequences: tuple[tuple[int, ...], ...]  # K token-id sequences (prompt + response)
    ranks: tuple[int, ...] | None = None  # 0 = best; None for regression groups
    targets: tuple[float, ...] | None = None  # rated scores (regression)
    margin: float | None = None  # pairwise margin
    source: str = ""
    line: int = 0

    @property
    def size(self) -> int:
        return len(self.sequences)


def _encode(tokenizer, prompt, response, *, max_length: int, truncation: str, chat_template: bool):
    text = render_for_reward(tokenizer, prompt, response, chat_template=chat_template)
    if truncation == "reject":
        # One token more than allowed is enough to tell; a longer text is never tokenised whole.
        ids = encode_for_reward(tokenizer, text, max_length + 1)
        if len(ids) > max_length:
            raise TooLong(f"too long: more tokens than max_length {max_length}")
        return tuple(ids)
    # The same left-truncation the scorer applies: the reward is read at the end.
    return tuple(encode_for_reward(tokenizer, text, max_length))


def make_group(
    record, tokenizer, *, max_length: int, truncation: str = "keep_end", chat_template: bool = True
) -> Group:
    """Tokenised group for a pairwise, ranked or rated record (raises TooLong)."""
    encode = lambda response: _encode(  # noqa: E731
        tokenizer, record.prompt, response, max_length=max_length, truncation=truncation, chat_template=chat_template
    )
    where = {"source": record.source, "line": record.line}
    if isinstance(record, PairwiseRecord):
        return Group((encode(record.chosen), encode(record.rejected)), ranks=(0, 1), margin=record.margin, **where)
    if isinstance(record, RankedRecord):
        return Group(tuple(map(encode, record.responses)), ranks=tuple(record.ranks), **where)
    if isinstance(record, RatedRecord):
        if any(isinstance(s, dict) for s in record.scores):
            raise ValueError(f"{record.source}:{record.line}: attribute scores need rated_as=pairs with an attribute")
        return Group(tuple(map(encode, record.responses)), targets=tuple(float(s) for s in record.scores), **where)
    raise TypeError(f"not a preference record: {type(record).__name__}")


def collate_groups(groups: Sequence[Group], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Flattens the groups' sequences into one right-padded batch.

    Returns:
        input_ids, attention_mask: [N, T], N = total responses.
        index: [B, K] position of each group's response in the flat batch (K = largest group).
        mask: [B, K] real responses.
        ranks: [B, K] (0 where absent), targets: [B, K] float, margin: [B] float (0 if none),
        has_margin: [B] bool.
    """
    flat = [seq for group in groups for seq in group.sequences]
    width = max(len(seq) for seq in flat)
    input_ids = torch.full((len(flat), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(flat), width), dtype=torch.long)
    for row, seq in enumerate(flat):
        input_ids[row, : len(seq)] = torch.tensor(seq)
        attention_mask[row, : len(seq)] = 1
    k = max(group.size for group in groups)
    index = torch.zeros((len(groups), k), dtype=torch.long)
    mask = torch.zeros((len(groups), k), dtype=torch.bool)
    offset = 0
    for b, group in enumerate(groups):
        index[b, : group.size] = torch.arange(offset, offset + group.size)
        mask[b, : group.size] = True
        offset += group.size
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "index": index,
        "mask": mask,
        **_group_labels(groups),
    }


def grouped_rewards(flat_rewards: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[N] rewards of the flat batch -> [B, K] per group (0 where the mask is off)."""
    return torch.where(batch["mask"], flat_rewards[batch["index"]], torch.zeros_like(batch["targets"]))


def score_groups(model, groups: Sequence[Group], pad_token_id: int, device, layout: Optional[dict] = None):
    """Rewards [B, K] of the groups' responses (0 where absent) and the batch they were scored from.

    ``layout`` None scores one right-padded row per response (:func:`collate_groups`); else the
    keyword arguments of ``preference_data.layout.layout_groups`` (``pack``, ``row_tokens``): each
    group becomes one shared-prompt segment, and the rewards are those of the separate sequences.
    The batch holds ``tokens_computed`` / ``tokens_unshared`` either way.
    """
    if layout is None:
        batch = collate_groups(groups, pad_token_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        flat = model(batch["input_ids"], batch["attention_mask"])
        batch["tokens_computed"] = batch["tokens_unshared"] = torch.tensor(batch["input_ids"].numel())
        return grouped_rewards(flat, batch), batch
    rows = layout_groups([share_prompt(g.sequences) for g in groups], pad_token_id, **layout)
    batch = {**_group_labels(groups), **rows}
    batch = {k: v.to(device) for k, v in batch.items()}
    flat = model(**model_inputs(model, batch, device), read_index=batch["read_index"])
    return grouped_rewards(flat, batch), batch


def _group_labels(groups: Sequence[Group]) -> dict[str, torch.Tensor]:
    """ranks / targets [B, K] and margin / has_margin [B], as :func:`collate_groups` gives them."""
    k = max(group.size for group in groups)
    ranks = torch.zeros((len(groups), k), dtype=torch.long)
    targets = torch.zeros((len(groups), k), dtype=torch.float32)
    for b, group in enumerate(groups):
        if group.ranks is not None:
            ranks[b, : group.size] = torch.tensor(group.ranks)
        if group.targets is not None:
            targets[b, : group.size] = torch.tensor(group.targets)
    return {
        "ranks": ranks,
        "targets": targets,
        "margin": torch.tensor([g.margin or 0.0 for g in groups], dtype=torch.float32),
        "has_margin": torch.tensor([g.margin is not None for g in groups]),
    }
