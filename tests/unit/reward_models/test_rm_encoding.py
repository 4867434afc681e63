"""Reward-model encoding of a text far longer than max_length: the tokenizer only sees a bounded
piece of it, and the ids equal the whole text's tokenisation left-truncated to max_length."""

from __future__ import annotations

import pytest
from helpers import SpyTokenizer

from preference_data.text_budget import char_budget
from reward_models.batching import TooLong, make_group
from reward_models.model import encode_for_reward


def test_long_text_is_cut_before_tokenising_and_keeps_its_end(tiny_tokenizer):
    text = "".join(f"token{i % 89} " for i in range(300_000))
    max_length = 200
    spy = SpyTokenizer(tiny_tokenizer)
    ids = encode_for_reward(spy, text, max_length)
    assert max(spy.lengths) <= char_budget(max_length)
    whole = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids == whole[len(whole) - max_length :]


def test_reject_mode_does_not_tokenise_the_whole_text(tiny_tokenizer):
    from preference_data.records import PairwiseRecord

    record = PairwiseRecord(prompt="p", chosen="a " * 500_000, rejected="b", source="x", line=1)
    spy = SpyTokenizer(tiny_tokenizer)
    with pytest.raises(TooLong, match="max_length 64"):
        make_group(record, spy, max_length=64, truncation="reject")
    assert max(spy.lengths) <= char_budget(64 + 1)  # one token more than allowed tells
