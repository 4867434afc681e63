"""Shared-prompt rows: a prompt's responses scored in one row, several groups per row, no padding.

A preference group (one prompt, K responses) scored as K separate sequences computes the
prompt K times. Here it is one row ``[prompt | response 1 | ... | response K]``: each response
attends to the prompt and to itself, and its position ids restart at the prompt's end, so the
hidden states of every response are exactly those of its separate sequence. Groups are then
packed, first-fit decreasing, into rows no longer than a token budget (by default the longest
group of the micro-batch), and no token attends across groups.

The prompt is found in token space: it is the longest common prefix of the K tokenised
sequences, so whatever the tokenizer does at the prompt / response boundary, each sequence is
``prompt + own tokens`` token for token. The prefix keeps at least one own token per response
(where a reward is read) and stops before the first labelled token (a labelled token counts for
one sequence, so it cannot be shared).

:func:`segment_mask` in ``rlhf.math.segments`` turns ``group_ids`` / ``segment_ids`` into the
attention mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Literal, Optional

import torch

IGNORE_INDEX = -100


@dataclass(frozen=True)
class SharedGroup:
    """One prompt and its responses' own tokens (each response = prompt + own tokens)."""

    prompt: tuple[int, ...]
    responses: tuple[tuple[int, ...], ...]
    labels: Optional[tuple[tuple[int, ...], ...]] = None  # per response, for its own tokens

    @property
    def size(self) -> int:
        return len(self.responses)

    @property
    def length(self) -> int:
        """Tokens of the group's row segment."""
        return len(self.prompt) + sum(map(len, self.responses))

    @property
    def unshared_length(self) -> int:
        """Tokens of its K separate sequences."""
        return self.size * len(self.prompt) + sum(map(len, self.responses))


def share_prompt(sequences: Sequence[Sequence[int]], labels: Optional[Sequence[Sequence[int]]] = None) -> SharedGroup:
    """The group of ``sequences`` (token ids, each with ``labels`` of the same length if given)."""
    if not sequences or any(len(s) == 0 for s in sequences):
        raise ValueError("a group needs at least one sequence, and no sequence may be empty")
    if labels is not None and [len(x) for x in labels] != [len(s) for s in sequences]:
        raise ValueError("labels must have the lengths of their sequences")
    shortest = min(map(len, sequences))
    common = 0
    if len(sequences) > 1:  # a single sequence shares nothing
        while common < shortest - 1 and len({s[common] for s in sequences}) == 1:
            if labels is not None and any(x[common] != IGNORE_INDEX for x in labels):
                break
            common += 1
    return SharedGroup(
        tuple(sequences[0][:common]),
        tuple(tuple(s[common:]) for s in sequences),
        None if labels is None else tuple(tuple(x[common:]) for x in labels),
    )


def pack_groups(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """First-fit decreasing: rows of group indices whose lengths sum to at most ``budget``.

    A group longer than ``budget`` gets a row of its own. Ties keep input order, so the rows are
    a pure function of the lengths.
    """
    rows: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        for row, left in enumerate(room):
            if lengths[index] <= left:
                rows[row].append(index)
                room[row] -= lengths[index]
                break
        else:
            rows.append([index])
            room.append(budget - lengths[index])
    return [sorted(row) for row in rows]


def layout_groups(
    groups: Sequence[SharedGroup],
    pad_token_id: int,
    *,
    pack: bool = True,
    row_tokens: int = 0,
    align: Literal["right", "left"] = "right",
) -> dict[str, torch.Tensor]:
    """Lays ``groups`` out as rows of shared-prompt segments.

    Args:
        groups: the micro-batch's groups (B of them, S responses in all).
        pad_token_id: filler id of the padding slots.
        pack: several groups per row (first-fit decreasing); else one group per row.
        row_tokens: token budget of a row when packing; 0 = the longest group's length.
        align: where a row's padding goes: after its tokens (right) or before them (left).
    Returns:
        input_ids, position_ids: [R, T] (padding: ``pad_token_id``, position 0).
        group_ids: [R, T] micro-batch index of the token's group, -1 for padding.
        segment_ids: [R, T] 0 for a prompt token, k + 1 for a token of response k, -1 for padding.
        read_index: [S] flat index (row * T + position) of each response's last token, in group
            order then response order (the order of ``index``).
        index, mask: [B, K] position of group b's k-th response in that order; real responses.
        With labels: target_ids [N] labelled token ids, target_sequence [N] their response
        (0..S-1), predictor_index [N] flat index of the position whose logits predict them.
        tokens_computed, tokens_real, tokens_unshared: scalars (slots fed to the model; real
        tokens; tokens of the separate sequences right-padded to the longest, as they would be
        fed without sharing).
    """
    if not groups:
        raise ValueError("no groups to lay out")
    lengths = [g.length for g in groups]
    budget = max(row_tokens, max(lengths)) if pack else 0
    rows = pack_groups(lengths, budget) if pack else [[i] for i in range(len(groups))]
    width = max(sum(lengths[i] for i in row) for row in rows)
    shape = (len(rows), width)
    input_ids = torch.full(shape, pad_token_id, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    group_ids = torch.full(shape, -1, dtype=torch.long)
    segment_ids = torch.full(shape, -1, dtype=torch.long)
    offsets = [0, *accumulate(g.size for g in groups)]  # first response number of each group
    total = offsets.pop()
    read_index = torch.zeros(total, dtype=torch.long)
    targets: list[tuple[int, int, int]] = []  # (token id, response number, predictor flat index)
    for r, row in enumerate(rows):
        cursor = 0 if align == "right" else width - sum(lengths[i] for i in row)
        for b in row:
            group = groups[b]
            flat = r * width
            prompt_end = cursor + len(group.prompt)
            _fill(input_ids, position_ids, group_ids, segment_ids, r, cursor, group.prompt, 0, b, 0)
            cursor = prompt_end
            for k, own in enumerate(group.responses):
                _fill(input_ids, position_ids, group_ids, segment_ids, r, cursor, own, len(group.prompt), b, k + 1)
                sequence = offsets[b] + k
                read_index[sequence] = flat + cursor + len(own) - 1
                if group.labels is not None:
                    for j, label in enumerate(group.labels[k]):
                        if label == IGNORE_INDEX:
                            continue
                        if j == 0 and not group.prompt:
                            continue  # the first token of a sequence is never predicted
                        predictor = cursor + j - 1 if j else prompt_end - 1
                        targets.append((label, sequence, flat + predictor))
                cursor += len(own)
    k_max = max(g.size for g in groups)
    index = torch.zeros((len(groups), k_max), dtype=torch.long)
    mask = torch.zeros((len(groups), k_max), dtype=torch.bool)
    for b, group in enumerate(groups):
        index[b, : group.size] = torch.arange(offsets[b], offsets[b] + group.size)
        mask[b, : group.size] = True
    unshared_width = max(len(g.prompt) + len(own) for g in groups for own in g.responses)
    batch = {
        "input_ids": input_ids,
        "position_ids": position_ids,
        "group_ids": group_ids,
        "segment_ids": segment_ids,
        "read_index": read_index,
        "index": index,
        "mask": mask,
        "tokens_computed": torch.tensor(input_ids.numel()),
        "tokens_real": torch.tensor(sum(lengths)),
        "tokens_unshared": torch.tensor(total * unshared_width),
    }
    if any(g.labels is not None for g in groups):
        ids, sequences, predictors = zip(*targets) if targets else ((), (), ())
        batch["target_ids"] = torch.tensor(ids, dtype=torch.long)
        batch["target_sequence"] = torch.tensor(sequences, dtype=torch.long)
        batch["predictor_index"] = torch.tensor(predictors, dtype=torch.long)
    return batch


def _fill(input_ids, position_ids, group_ids, segment_ids, row, start, tokens, first_position, group, segment):
    end = start + len(tokens)
    if not tokens:
        return
    input_ids[row, start:end] = torch.tensor(tokens, dtype=torch.long)
    position_ids[row, start:end] = torch.arange(first_position, first_position + len(tokens))
    group_ids[row, start:end] = group
    segment_ids[row, start:end] = segment
