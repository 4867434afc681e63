"""Assistant-only masking, packing and collation of SFT data."""

import pytest
import torch
from helpers import SpyTokenizer

from preference_data.collate import IGNORE_INDEX, TooLong, collate_rows, pack, single_row, tokenize_sft
from preference_data.records import SFTRecord


def conversation():
    return SFTRecord(
        (
            {"role": "system", "content": "Be kind."},
            {"role": "user", "content": "Tell me about the red fox."},
            {"role": "assistant", "content": "Sure! The red fox is quick."},
            {"role": "user", "content": "And the blue owl?"},
            {"role": "assistant", "content": "The blue owl is wise."},
        ),
        "mem",
        1,
    )


def labelled_text(tokenizer, example):
    """The text of each maximal run of labelled tokens."""
    runs, current = [], []
    for token, label in zip(example.input_ids, example.labels):
        if label == IGNORE_INDEX:
            if current:
                runs.append(tokenizer.decode(current))
                current = []
        else:
            assert label == token
            current.append(token)
    if current:
        runs.append(tokenizer.decode(current))
    return runs


def test_only_assistant_turns_and_their_end_marker_are_labelled(tiny_tokenizer):
    example = tokenize_sft(conversation(), tiny_tokenizer, max_length=512)
    assert labelled_text(tiny_tokenizer, example) == [
        "Sure! The red fox is quick.<|im_end|>\n",
        "The blue owl is wise.<|im_end|>\n",
    ]
    # Everything else (system, user turns, role headers) is unlabelled, and the text is complete.
    full = tiny_tokenizer.apply_chat_template(list(conversation().messages), tokenize=False)
    assert tiny_tokenizer.decode(example.input_ids) == full


def test_plain_format_labels_completion_and_eos(tiny_tokenizer):
    record = SFTRecord(({"role": "user", "content": "Q: 2+2? "}, {"role": "assistant", "content": "4"}), "m", 1)
    example = tokenize_sft(record, tiny_tokenizer, max_length=64, chat_template=False)
    assert labelled_text(tiny_tokenizer, example) == [" 4<|im_end|>"]


def test_truncation_policies(tiny_tokenizer):
    example = tokenize_sft(conversation(), tiny_tokenizer, max_length=512)
    n = len(example.input_ids)
    cut = tokenize_sft(conversation(), tiny_tokenizer, max_length=n - 3)
    assert cut.input_ids == example.input_ids[: n - 3]
    with pytest.raises(TooLong, match="too long"):
        tokenize_sft(conversation(), tiny_tokenizer, max_length=n - 3, truncation="reject")
    # Truncation that removes every assistant token rejects the record instead of training on nothing.
    with pytest.raises(TooLong, match="no assistant token"):
        tokenize_sft(conversation(), tiny_tokenizer, max_length=8)


def test_pack_restarts_positions_and_never_labels_across_examples(tiny_tokenizer):
    a = tokenize_sft(conversation(), tiny_tokenizer, max_length=512)
    b = tokenize_sft(
        SFTRecord(({"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}), "m", 2),
        tiny_tokenizer,
        max_length=512,
    )
    rows = list(pack([a, b, a], max_length=len(a.input_ids) + len(b.input_ids)))
    assert len(rows) == 2
    first = rows[0]
    assert first.input_ids == a.input_ids + b.input_ids
    assert first.position_ids == tuple(range(len(a.input_ids))) + tuple(range(len(b.input_ids)))
    assert first.labels[len(a.input_ids)] == IGNORE_INDEX  # b's first token is not a's target
    assert first.num_targets == a.num_targets + b.num_targets
    assert rows[1].input_ids == a.input_ids


def test_packed_logits_equal_separate_logits(tiny_tokenizer, tiny_model_path):
    """No cross-example attention: each packed example sees exactly what it sees alone."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path).eval()
    a = tokenize_sft(conversation(), tiny_tokenizer, max_length=512)
    b = tokenize_sft(
        SFTRecord(({"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}), "m", 2),
        tiny_tokenizer,
        max_length=512,
    )
    packed = collate_rows(list(pack([a, b], 4096)) + [], tiny_tokenizer.pad_token_id)
    assert "attention_mask" not in packed
    with torch.no_grad():
        joint = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits
        alone_a = model(input_ids=torch.tensor([a.input_ids]), use_cache=False).logits
        alone_b = model(input_ids=torch.tensor([b.input_ids]), use_cache=False).logits
    n = len(a.input_ids)
    torch.testing.assert_close(joint[:, :n], alone_a, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(joint[:, n : n + len(b.input_ids)], alone_b, atol=1e-5, rtol=1e-5)


def test_collate_right_pads_with_mask_and_ignored_labels():
    rows = [single_row_like((5, 6, 7), (IGNORE_INDEX, 6, 7)), single_row_like((8,), (8,))]
    batch = collate_rows(rows, pad_token_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, 7], [8, IGNORE_INDEX, IGNORE_INDEX]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["position_ids"].tolist()[0] == [0, 1, 2]


def single_row_like(ids, labels):
    from preference_data.collate import TokenizedExample

    return single_row(TokenizedExample(ids, labels))


def test_long_text_is_cut_before_tokenising_and_matches_the_whole_tokenisation(tiny_tokenizer):
    from preference_data.collate import assistant_spans
    from preference_data.text_budget import CHARS_PER_TOKEN_BOUND

    completion = "".join(f"word{i % 97} " for i in range(1_000_000))[: 8 * 1024 * 1024]
    record = SFTRecord(({"role": "user", "content": "say it"}, {"role": "assistant", "content": completion}), "x", 1)
    max_length = 300
    spy = SpyTokenizer(tiny_tokenizer)
    example = tokenize_sft(record, spy, max_length=max_length)
    assert max(spy.lengths) <= CHARS_PER_TOKEN_BOUND * (max_length + 64)
    # Independent reference: the whole conversation tokenised, then cut to max_length.
    text, spans = assistant_spans(tiny_tokenizer, record.messages)
    whole = tiny_tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = whole["input_ids"][:max_length]
    labels = [
        token if any(s < e2 and e > s2 for s2, e2 in spans) else IGNORE_INDEX
        for token, (s, e) in zip(ids, whole["offset_mapping"])
    ]
    assert example.input_ids == tuple(ids) and example.labels == tuple(labels)
    with pytest.raises(TooLong):
        tokenize_sft(record, spy, max_length=max_length, truncation="reject")
    assert max(spy.lengths) <= CHARS_PER_TOKEN_BOUND * (max_length + 64)
