"""Shared-prompt rows give the rewards, log-probs and gradients of the separate sequences (fp32, 1e-5)."""

from __future__ import annotations

import random

import pytest
import torch

from preference_data.layout import IGNORE_INDEX, layout_groups, share_prompt
from rlhf.models.layout import model_inputs, response_logprobs, shared_layout_unsupported

pytestmark = pytest.mark.usefixtures("one_thread")


def _llama(kind: str, attention: str):
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=40,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=24,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        pad_token_id=0,
        num_labels=1,
        attn_implementation=attention,
    )
    cls = LlamaForCausalLM if kind == "lm" else LlamaForSequenceClassification
    return cls(config).float()


def _groups(seed: int, labelled: bool):
    """Groups of K = 2..6 responses with ragged lengths, shared prompts and some identical responses."""
    rng = random.Random(seed)
    groups, sequences = [], []
    for k in (2, 3, 4, 5, 6):
        prompt = [rng.randrange(1, 40) for _ in range(rng.randrange(1, 7))]
        responses = [[rng.randrange(1, 40) for _ in range(rng.randrange(1, 6))] for _ in range(k)]
        responses[1] = list(responses[0])  # a tie: the same response twice
        seqs = [prompt + r for r in responses]
        labels = [[IGNORE_INDEX] * len(prompt) + r for r in responses] if labelled else None
        groups.append(share_prompt(seqs, labels))
        sequences.append((seqs, len(prompt)))
    return groups, sequences


def _reward_model(attention):
    from reward_models.model import ScalarRewardModel

    return ScalarRewardModel(_llama("rm", attention))


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("align", ["right", "left"])
@pytest.mark.parametrize("pack,row_tokens", [(True, 0), (True, 64), (False, 0)])
def test_rewards_and_gradients_equal_separate_sequences(attention, align, pack, row_tokens):
    model = _reward_model(attention)
    groups, sequences = _groups(1, labelled=False)
    weights = torch.randn(sum(len(s) for s, _ in sequences), generator=torch.Generator().manual_seed(3))

    separate = torch.cat(
        [model(torch.tensor([seq]), torch.ones(1, len(seq), dtype=torch.long)) for seqs, _ in sequences for seq in seqs]
    )
    (separate * weights).sum().backward()
    expected_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    batch = layout_groups(groups, pad_token_id=0, pack=pack, row_tokens=row_tokens, align=align)
    inputs = model_inputs(model, batch, "cpu")
    shared = model(**inputs, read_index=batch["read_index"])
    (shared * weights).sum().backward()

    torch.testing.assert_close(shared, separate, atol=1e-5, rtol=0)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected_grads[name], atol=1e-5, rtol=0, msg=name)
    if pack and row_tokens == 64:
        assert batch["input_ids"].shape[0] < len(groups)  # several groups did share a row


def _plain_logps(model, sequences):
    """Sum of response-token log-probs of every sequence, each run alone (a plain loop)."""
    out = []
    for seqs, prompt_length in sequences:
        for seq in seqs:
            logps = torch.log_softmax(model(input_ids=torch.tensor([seq])).logits[0].float(), -1)
            out.append(sum(logps[t - 1, seq[t]] for t in range(prompt_length, len(seq))))
    return torch.stack(out)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("align", ["right", "left"])
def test_response_logprobs_and_gradients_equal_separate_sequences(attention, align):
    model = _llama("lm", attention)
    groups, sequences = _groups(2, labelled=True)
    expected = _plain_logps(model, sequences)
    expected.sum().backward()
    expected_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    batch = layout_groups(groups, pad_token_id=0, row_tokens=48, align=align)
    logps, counts = response_logprobs(model, batch, "cpu")
    logps.sum().backward()

    torch.testing.assert_close(logps, expected, atol=1e-5, rtol=0)
    assert counts.tolist() == [len(s) - p for seqs, p in sequences for s in seqs]
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected_grads[name], atol=1e-5, rtol=0, msg=name)


def test_a_cross_response_leak_would_be_seen():
    # The test above can fail: letting responses see each other changes the rewards.
    model = _reward_model("sdpa")
    groups, sequences = _groups(1, labelled=False)
    batch = layout_groups(groups, pad_token_id=0)
    leaky = dict(batch, segment_ids=batch["segment_ids"].clamp(max=0).where(batch["segment_ids"] >= 0, -1))
    with torch.no_grad():
        right = model(**model_inputs(model, batch, "cpu"), read_index=batch["read_index"])
        wrong = model(**model_inputs(model, leaky, "cpu"), read_index=batch["read_index"])
    assert (right - wrong).abs().max() > 1e-3


def test_unsupported_attention_is_named():
    model = _llama("lm", "sdpa")
    assert shared_layout_unsupported(model) is None
    model.config._attn_implementation = "flash_attention_2"
    assert "flash_attention_2" in shared_layout_unsupported(model)


def test_an_encoder_reward_model_scores_separate_rows():
    from types import SimpleNamespace

    from transformers import BertConfig, BertForSequenceClassification

    from reward_models.model import ScalarRewardModel
    from rlhf.models.layout import layout_options

    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, num_labels=1)
    encoder = ScalarRewardModel(BertForSequenceClassification(config))
    data = SimpleNamespace(shared_prompt=True, pack=True, row_tokens=0)
    assert layout_options(data, encoder) == (None, "an encoder reads its first token")
    assert layout_options(data, _reward_model("sdpa")) == ({"pack": True, "row_tokens": 0}, "")
    assert layout_options(SimpleNamespace(shared_prompt=False), _reward_model("sdpa")) == (None, "")
