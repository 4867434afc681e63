"""Tokenisation, label masking, packing and padding for SFT.

Loss is taken on assistant tokens only. Spans are found in *text* space by rendering the chat
template on growing prefixes of the conversation, then mapped onto tokens with the fast
tokenizer's offsets: this works for any prefix-consistent template without knowing its markup.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch

from preference_data.records import SFTRecord
from preference_data.text_budget import CUT_MARGIN_TOKENS, char_budget

IGNORE_INDEX = -100


def encode_prefix(tokenizer, text: str, max_tokens: int, **kwargs) -> tuple[dict, bool]:
    """``tokenizer(text, **kwargs)`` on a prefix of ``text`` long enough for ``max_tokens`` tokens.

    Returns the encoding and whether ``text`` was cut. When cut, the encoding has more than
    ``max_tokens + CUT_MARGIN_TOKENS // 2`` tokens, and its first ``max_tokens`` equal those
    of the whole text (under the bound above). The tokenizer never sees more than
    ``char_budget(max_tokens)`` characters unless it gives fewer tokens than the bound promises
    (see `text_budget`).
    """
    budget = char_budget(max_tokens)
    while True:  # at most log2(len(text) / budget) + 1 rounds: the budget doubles each time
        if len(text) <= budget:
            return tokenizer(text, **kwargs), False
        encoded = tokenizer(text[:budget], **kwargs)
        if len(encoded["input_ids"]) > max_tokens + CUT_MARGIN_TOKENS // 2:
            return encoded, True
        budget *= 2


class TooLong(ValueError):
    """The example does not fit the length limit under the chosen truncation policy."""


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]  # IGNORE_INDEX where no loss is taken
    source: str = ""
    line: int = 0

    @property
    def num_targets(self) -> int:
        # The first token is never predicted, so a label there would not count.
        return sum(1 for label in self.labels[1:] if label != IGNORE_INDEX)


def _template(tokenizer, messages: Sequence[dict], *, generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=generation_prompt)


def assistant_spans(tokenizer, messages: Sequence[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of each assistant turn (end marker included)."""
    full = _template(tokenizer, messages, generation_prompt=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _template(tokenizer, messages[:i], generation_prompt=True) if i else ""
        through = _template(tokenizer, messages[: i + 1], generation_prompt=False)
        if not (through.startswith(before) and full.startswith(through)):
            raise ValueError(
                "the tokenizer's chat template renders conversations differently depending on what "
                "follows, so assistant tokens cannot be located; set data.chat_template=false or use a "
                "prefix-consistent template"
            )
        spans.append((len(before), len(through)))
    return full, spans


def _plain_spans(tokenizer, messages: Sequence[dict]) -> tuple[str, list[tuple[int, int]]]:
    """No chat template: turns are concatenated and each assistant turn ends with EOS."""
    text, spans = "", []
    for message in messages:
        if message["role"] == "assistant":
            start = len(text)
            text += message["content"] + tokenizer.eos_token
            spans.append((start, len(text)))
        else:
            text += message["content"]
    return text, spans


def tokenize_sft(
    record: SFTRecord,
    tokenizer,
    *,
    max_length: int,
    truncation: str = "truncate",
    chat_template: bool = True,
    last_turn_only: bool = False,
) -> TokenizedExample:
    """Token ids and labels of one conversation.

    Args:
        record: the conversation; assistant turns are the targets.
        tokenizer: a fast tokenizer (offsets are needed).
        max_length: longest allowed sequence in tokens.
        truncation: 'truncate' keeps the first ``max_length`` tokens (rejects if no target
            token is left); 'reject' rejects any longer example.
        chat_template: render with the tokenizer's chat template (else plain concatenation).
        last_turn_only: label only the final assistant turn (preference optimisation compares
            two final replies; earlier assistant turns belong to the prompt).
    Raises:
        TooLong: the example is rejected for its length (the caller quarantines it).
    """
    use_template = chat_template and getattr(tokenizer, "chat_template", None)
    text, spans = (assistant_spans if use_template else _plain_spans)(tokenizer, record.messages)
    if last_turn_only:
        spans = spans[-1:]
    encoded, cut = encode_prefix(tokenizer, text, max_length, add_special_tokens=False, return_offsets_mapping=True)
    ids = encoded["input_ids"][: max_length + 1] if cut else encoded["input_ids"]
    labels = [IGNORE_INDEX] * len(ids)
    for index, (start, end) in enumerate(encoded["offset_mapping"][: len(ids)]):
        # Overlap, not containment: a token that merges the prompt's last character with the
        # completion's first (" 4" after "2+2?") must still be generated by the model.
        if any(start < span_end and end > span_start for span_start, span_end in spans):
            labels[index] = ids[index]
    total = f"more than {len(encoded['input_ids'])}" if cut else str(len(ids))
    if len(ids) > max_length:
        if truncation == "reject":
            raise TooLong(f"too long: {total} tokens > max_length {max_length}")
        ids, labels = ids[:max_length], labels[:max_length]
    example = TokenizedExample(tuple(ids), tuple(labels), record.source, record.line)
    if example.num_targets == 0:
        raise TooLong(f"too long: no assistant token left within max_length {max_length} ({total} tokens)")
    return example


@dataclass(frozen=True)
class Row:
    """One training sequence: a single example, or several packed ones."""

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    position_ids: tuple[int, ...]
    packed: bool

    @property
    def num_targets(self) -> int:
        # A label at a sequence start (position 0) is never predicted by a previous token.
        return sum(
            1
            for label, position in zip(self.labels[1:], self.position_ids[1:])
            if label != IGNORE_INDEX and position != 0
        )


def single_row(example: TokenizedExample) -> Row:
    return Row(example.input_ids, example.labels, tuple(range(len(example.input_ids))), False)


def pack(examples: Iterable[TokenizedExample], max_length: int) -> Iterator[Row]:
    """Greedy in-order packing of whole examples into rows of at most ``max_length`` tokens.

    Position ids restart at 0 for each example; the model turns those restarts into a
    block-diagonal causal mask, so packed examples never attend to each other.
    """
    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for example in examples:
        if ids and len(ids) + len(example.input_ids) > max_length:
            yield Row(tuple(ids), tuple(labels), tuple(positions), True)
            ids, labels, positions = [], [], []
        ids.extend(example.input_ids)
        # The first token of an example has no predecessor inside its own sequence.
        labels.extend((IGNORE_INDEX,) + example.labels[1:])
        positions.extend(range(len(example.input_ids)))
    if ids:
        yield Row(tuple(ids), tuple(labels), tuple(positions), True)


def collate_rows(rows: Sequence[Row], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pads rows into a batch.

    Returns ``input_ids``, ``labels`` and ``position_ids`` [B, T]; ``attention_mask`` [B, T]
    for unpacked rows only (packed rows are separated by their position ids, and the padding
    tail is a sequence of its own that attends to nothing real).
    """
    width = max(len(row.input_ids) for row in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row.input_ids)
        input_ids[i, :n] = torch.tensor(row.input_ids)
        labels[i, :n] = torch.tensor(row.labels)
        position_ids[i, :n] = torch.tensor(row.position_ids)
        position_ids[i, n:] = torch.arange(width - n)
        attention_mask[i, :n] = 1
    batch = {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}
    if not any(row.packed for row in rows):
        batch["attention_mask"] = attention_mask
    return batch
