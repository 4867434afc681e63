"""Rollouts: EOS truncation, left-padding positions, batch concatenation, sampling with builtin:tiny,
and response log-probs checked against a plain, padding-free forward pass per row."""

import pytest
import torch
from helpers import load_tiny_lm, plain_response_logprobs, point_eos_along_mean_hidden

from rlhf.math.ops import token_logprobs
from rlhf.rollout.sampling import (
    Samples,
    SamplingConfig,
    concat_samples,
    position_ids,
    render_prompt,
    response_logprobs,
    sample,
    truncate_after_eos,
)

EOS = 2
PAD = 0
SEEDS = (0, 1, 2, 3)  # generator seeds for which the EOS-biased model must give a mix of lengths

PROMPTS = [
    "Hi",
    "Write a short note about a red apple, please.",
    "What is the capital of France?",
    "ok",
    "Could you write a polite email to my manager asking for a day off?",
    "Tell me about the blue car.",
]


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------- helpers ----------


def bias_towards_eos(model, tokenizer, prompts=PROMPTS, max_new_tokens=10):
    """Point the EOS row of lm_head along the mean final hidden state, so that random weights end
    some responses early and leave others running to max_new_tokens (both branches exercised)."""
    original = model.lm_head.weight[tokenizer.eos_token_id].clone()
    for alpha in (1.0, 0.8, 1.2, 0.7, 1.4):
        point_eos_along_mean_hidden(model, tokenizer, prompts, alpha)
        mixed = []
        for seed in SEEDS:
            ended = sample(
                model, tokenizer, prompts, SamplingConfig(max_new_tokens=max_new_tokens), generator_seed=seed
            ).ended
            mixed.append(bool(ended.any() and not ended.all()))
        if all(mixed):
            return model
    with torch.no_grad():
        model.lm_head.weight[tokenizer.eos_token_id] = original
    pytest.fail("could not bias builtin:tiny into a mix of ended and unfinished responses")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_tiny_lm()


@pytest.fixture(scope="module")
def eos_model(tiny_tokenizer):
    torch.manual_seed(0)
    return bias_towards_eos(load_tiny_lm(), tiny_tokenizer)


# ---------- truncate_after_eos ----------


def test_truncate_after_eos_hand_cases():
    ids = torch.tensor(
        [
            [5, EOS, 7, EOS, 9],  # EOS in the middle, another one later
            [5, 6, 7, 8, 9],  # no EOS
            [EOS, 5, EOS, 6, 7],  # EOS first
            [5, 6, 7, 8, EOS],  # EOS last
        ]
    )
    mask, ended = truncate_after_eos(ids, EOS)
    assert mask.dtype == torch.long and ended.dtype == torch.bool
    assert mask.tolist() == [
        [1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1],
        [1, 0, 0, 0, 0],
        [1, 1, 1, 1, 1],
    ]
    assert ended.tolist() == [True, False, True, True]
    assert ids.tolist()[0] == [5, EOS, 7, EOS, 9]  # input untouched


def test_truncate_after_eos_single_row_without_eos():
    mask, ended = truncate_after_eos(torch.tensor([[3, 4, 5]]), EOS)
    assert mask.tolist() == [[1, 1, 1]]
    assert ended.tolist() == [False]


# ---------- position_ids ----------


def test_position_ids_under_left_padding():
    mask = torch.tensor(
        [
            [0, 0, 1, 1, 1],
            [1, 1, 1, 1, 1],
            [0, 0, 0, 0, 1],
            [0, 1, 1, 1, 0],  # left padding, then a masked response token after EOS
        ]
    )
    assert position_ids(mask).tolist() == [
        [0, 0, 0, 1, 2],
        [0, 1, 2, 3, 4],
        [0, 0, 0, 0, 0],
        [0, 0, 1, 2, 2],
    ]


# ---------- concat_samples / subset ----------


def make_samples(prompts: list[list[int]], responses: list[list[int]], response_len: int) -> Samples:
    """Samples from unpadded prompts and responses (each response cut after its first EOS)."""
    P = max(len(p) for p in prompts)
    ids, attn, resp, ended, texts = [], [], [], [], []
    for prompt, response in zip(prompts, responses):
        left, right = P - len(prompt), response_len - len(response)
        ids.append([PAD] * left + prompt + response + [PAD] * right)
        attn.append([0] * left + [1] * len(prompt) + [1] * len(response) + [0] * right)
        resp.append([1] * len(response) + [0] * right)
        ended.append(EOS in response)
        texts.append(" ".join(map(str, response)))
    return Samples(torch.tensor(ids), torch.tensor(attn), torch.tensor(resp), torch.tensor(ended), texts)


def test_make_samples_layout():
    s = make_samples([[11, 12], [13]], [[21, EOS], [22, 23, 24]], 3)
    assert s.prompt_length == 2
    assert s.input_ids.tolist() == [[11, 12, 21, EOS, PAD], [PAD, 13, 22, 23, 24]]
    assert s.response_ids.tolist() == [[21, EOS, PAD], [22, 23, 24]]


def test_concat_samples_pads_prompts_left_and_responses_right():
    a = make_samples([[11, 12]], [[21, EOS]], 3)  # P=2, R=3
    b = make_samples([[31, 32, 33, 34], [41]], [[51, 52], [EOS]], 2)  # P=4, R=2
    assert (a.prompt_length, a.response_mask.shape[1]) == (2, 3)
    assert (b.prompt_length, b.response_mask.shape[1]) == (4, 2)

    c = concat_samples([a, b], pad_id=PAD)
    assert c.input_ids.shape == (3, 7)
    assert c.prompt_length == 4
    assert c.response_mask.shape == (3, 3)
    assert c.input_ids.tolist() == [
        [PAD, PAD, 11, 12, 21, EOS, PAD],
        [31, 32, 33, 34, 51, 52, PAD],
        [PAD, PAD, PAD, 41, EOS, PAD, PAD],
    ]
    assert c.attention_mask.tolist() == [
        [0, 0, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1, 1, 0],
        [0, 0, 0, 1, 1, 0, 0],
    ]
    assert c.response_mask.tolist() == [[1, 1, 0], [1, 1, 0], [1, 0, 0]]
    assert c.response_ids.tolist() == [[21, EOS, PAD], [51, 52, PAD], [EOS, PAD, PAD]]
    assert c.ended.tolist() == [True, False, True]
    assert c.texts == a.texts + b.texts
    # The inputs are not modified.
    assert a.input_ids.shape == (1, 5) and b.input_ids.shape == (2, 6)


def test_concat_samples_uses_the_given_pad_id():
    a = make_samples([[11]], [[21]], 1)
    b = make_samples([[31, 32]], [[41, 42]], 2)
    c = concat_samples([a, b], pad_id=7)
    assert c.input_ids.tolist() == [[7, 11, 21, 7], [31, 32, 41, 42]]
    assert c.attention_mask.tolist() == [[0, 1, 1, 0], [1, 1, 1, 1]]


def test_subset_selects_rows_and_texts_in_order():
    s = make_samples([[11, 12], [13], [14, 15]], [[21, EOS], [22, 23, 24], [EOS]], 3)
    for index in ([2, 0], torch.tensor([2, 0])):
        sub = s.subset(index)
        assert sub.input_ids.tolist() == [s.input_ids[2].tolist(), s.input_ids[0].tolist()]
        assert sub.attention_mask.tolist() == [s.attention_mask[2].tolist(), s.attention_mask[0].tolist()]
        assert sub.response_mask.tolist() == [[1, 0, 0], [1, 1, 0]]
        assert sub.ended.tolist() == [True, True]
        assert sub.texts == [s.texts[2], s.texts[0]]
        assert sub.prompt_length == s.prompt_length
    assert s.subset([1]).ended.tolist() == [False]


# ---------- sample() with builtin:tiny ----------


def test_sample_masks_ended_and_texts_are_consistent(eos_model, tiny_tokenizer):
    tok = tiny_tokenizer
    max_new = 10
    s = sample(eos_model, tok, PROMPTS, SamplingConfig(max_new_tokens=max_new), generator_seed=1)
    B = len(PROMPTS)
    R = s.response_mask.shape[1]
    assert 1 <= R <= max_new
    assert s.input_ids.shape == s.attention_mask.shape == (B, s.prompt_length + R)
    assert s.ended.shape == (B,) and len(s.texts) == B
    assert s.ended.any() and not s.ended.all()  # both branches below are exercised

    # The prompt part is the tokenizer's own left-padded encoding of the rendered prompts.
    rendered = [render_prompt(tok, p) for p in PROMPTS]
    lengths = [len(tok(r, add_special_tokens=False)["input_ids"]) for r in rendered]
    assert s.prompt_length == max(lengths)
    for row, n in enumerate(lengths):
        P = s.prompt_length
        assert s.attention_mask[row, :P].tolist() == [0] * (P - n) + [1] * n
        assert s.input_ids[row, P - n : P].tolist() == tok(rendered[row], add_special_tokens=False)["input_ids"]
    # The response part of the attention mask is the response mask.
    assert torch.equal(s.attention_mask[:, s.prompt_length :], s.response_mask.to(s.attention_mask.dtype))

    for row in range(B):
        keep = int(s.response_mask[row].sum())
        ids = s.response_ids[row].tolist()
        mask = s.response_mask[row].tolist()
        assert mask == [1] * keep + [0] * (R - keep)  # a prefix
        assert ids[keep:] == [tok.pad_token_id] * (R - keep)  # pad after the cut
        valid = ids[:keep]
        if s.ended[row]:
            assert valid[-1] == tok.eos_token_id and tok.eos_token_id not in valid[:-1]
            body = valid[:-1]
        else:
            assert keep == max_new and tok.eos_token_id not in valid
            body = valid
        assert s.texts[row] == tok.decode(body, skip_special_tokens=True).strip()
        assert tok.eos_token not in s.texts[row]


def test_sample_generator_seed_is_reproducible(eos_model, tiny_tokenizer):
    cfg = SamplingConfig(max_new_tokens=8)
    a = sample(eos_model, tiny_tokenizer, PROMPTS, cfg, generator_seed=3)
    torch.manual_seed(999)  # the global RNG state before the call must not matter
    b = sample(eos_model, tiny_tokenizer, PROMPTS, cfg, generator_seed=3)
    c = sample(eos_model, tiny_tokenizer, PROMPTS, cfg, generator_seed=4)
    assert torch.equal(a.input_ids, b.input_ids)
    assert torch.equal(a.response_mask, b.response_mask)
    assert a.texts == b.texts
    assert a.input_ids.shape != c.input_ids.shape or not torch.equal(a.input_ids, c.input_ids)


def test_sample_greedy_is_deterministic_without_a_seed(model, tiny_tokenizer):
    cfg = SamplingConfig(max_new_tokens=6, do_sample=False)
    torch.manual_seed(1)
    a = sample(model, tiny_tokenizer, PROMPTS[:3], cfg)
    torch.manual_seed(2)
    b = sample(model, tiny_tokenizer, PROMPTS[:3], cfg)
    assert torch.equal(a.input_ids, b.input_ids)


@pytest.mark.parametrize("side", ["right", "left"])
def test_sample_restores_padding_side_and_training_mode(model, tiny_tokenizer, side):
    seen = []
    hook = model.register_forward_pre_hook(lambda module, args: seen.append(module.training))
    old_side = tiny_tokenizer.padding_side
    tiny_tokenizer.padding_side = side
    try:
        for training in (True, False):
            model.train(training)
            sample(model, tiny_tokenizer, PROMPTS[:3], SamplingConfig(max_new_tokens=4), generator_seed=0)
            assert tiny_tokenizer.padding_side == side
            assert model.training is training
            assert all(m.training is training for m in model.modules())
    finally:
        hook.remove()
        tiny_tokenizer.padding_side = old_side
        model.eval()
    assert seen and not any(seen)  # generation itself always ran in eval mode (no dropout)


def test_sample_restores_state_when_generation_fails(model, tiny_tokenizer, monkeypatch):
    def boom(**kwargs):
        assert tiny_tokenizer.padding_side == "left"
        raise RuntimeError("generation failed")

    monkeypatch.setattr(model, "generate", boom)
    old_side = tiny_tokenizer.padding_side
    tiny_tokenizer.padding_side = "right"
    model.train()
    try:
        with pytest.raises(RuntimeError, match="generation failed"):
            sample(model, tiny_tokenizer, PROMPTS[:2], SamplingConfig(max_new_tokens=4))
        assert tiny_tokenizer.padding_side == "right"
        assert model.training
    finally:
        tiny_tokenizer.padding_side = old_side
        model.eval()


# ---------- response_logprobs against an unpadded forward pass ----------


def assert_matches_plain(model, samples: Samples, temperature: float):
    got = response_logprobs(model, samples, temperature)
    assert got.shape == samples.response_mask.shape
    assert torch.isfinite(got).all()
    expected = plain_response_logprobs(model, samples, temperature)
    for row, exp in enumerate(expected):
        n = len(exp)
        assert int(samples.response_mask[row].sum()) == n
        torch.testing.assert_close(got[row, :n], exp, atol=1e-4, rtol=0)
        assert (got[row, n:] == 0).all()  # 0 outside the response mask


@pytest.fixture(scope="module")
def gpt2_model():
    """A random GPT-2 (learned absolute position embeddings): unlike RoPE, which only sees position
    differences, it gives wrong log-probs if left padding shifts the positions."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=873, n_positions=64, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0
    )
    return GPT2LMHeadModel(config).float().eval()


@pytest.mark.parametrize("which", ["tiny", "gpt2"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_response_logprobs_hand_built_left_padding(model, gpt2_model, which, temperature):
    model = model if which == "tiny" else gpt2_model
    g = torch.Generator().manual_seed(0)

    def tokens(n):
        return torch.randint(10, 800, (n,), generator=g).tolist()

    # Prompt lengths 3, 9, 6 and 1 (heavy left padding); responses that end with EOS mid-way
    # (then pad), run to the end without EOS, or are a lone EOS.
    samples = make_samples(
        [tokens(3), tokens(9), tokens(6), tokens(1)],
        [tokens(4) + [EOS], tokens(7), tokens(2) + [EOS], [EOS]],
        7,
    )
    assert samples.attention_mask[:, : samples.prompt_length].sum(-1).tolist() == [3, 9, 6, 1]
    assert_matches_plain(model.eval(), samples, temperature)


def test_only_the_predicting_positions_go_through_the_lm_head(model):
    """The head (a 1/5 of SmolLM2-135M's weights) runs on the R + 1 last positions, not the prompt;
    the policy's logits of PPO's ActorCritic are then those of the plain per-row pass."""
    from torch import nn

    from rlhf.rollout.actor_critic import ActorCritic

    samples = make_samples([[40, 41, 42, 43, 44], [50]], [[60, 61, EOS], [70, 71, 72]], 5)
    widths = []
    hook = model.get_output_embeddings().register_forward_hook(lambda _m, args, _o: widths.append(args[0].shape[1]))
    try:
        with torch.no_grad():
            expected = response_logprobs(model.eval(), samples, 0.7)
            logits, values = ActorCritic(model, nn.Identity())(
                samples.input_ids, samples.attention_mask, samples.prompt_length, 0.7, with_values=False
            )
    finally:
        hook.remove()
    assert widths == [samples.response_ids.shape[1] + 1] * 2
    assert values is None
    assert_matches_plain(model, samples, 0.7)
    torch.testing.assert_close(token_logprobs(logits, samples.response_ids) * samples.response_mask, expected)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_response_logprobs_of_sampled_batch(eos_model, tiny_tokenizer, temperature):
    samples = sample(
        eos_model, tiny_tokenizer, PROMPTS, SamplingConfig(max_new_tokens=10, temperature=temperature), generator_seed=2
    )
    lengths = samples.attention_mask[:, : samples.prompt_length].sum(-1)
    assert len(set(lengths.tolist())) > 1  # left padding is really exercised
    assert samples.ended.any()  # masked tokens after an EOS too
    assert_matches_plain(eos_model.eval(), samples, temperature)


def test_response_logprobs_temperature_changes_the_values(model):
    samples = make_samples([[40, 41, 42], [50]], [[60, 61, EOS], [70, 71, 72]], 3)
    hot = response_logprobs(model, samples, 1.0)
    cold = response_logprobs(model, samples, 0.5)
    assert not torch.allclose(hot, cold, atol=1e-3)


# ---------- the behaviour policy is softmax(logits / T), whatever the model's generation_config ----------


def polluted(model):
    """A copy of ``model`` whose generation_config asks for every logits processor that would
    change the sampled distribution (as a checkpoint's generation_config.json may)."""
    import copy

    other = copy.deepcopy(model)
    gc = other.generation_config
    gc.repetition_penalty = 1e3
    gc.no_repeat_ngram_size = 1
    gc.top_k = 3
    gc.top_p = 0.5
    gc.min_p = 0.3
    gc.typical_p = 0.5
    gc.temperature = 0.2
    gc.min_new_tokens = 6
    gc.suppress_tokens = list(range(10, 200))
    gc.bad_words_ids = [[201], [202]]
    gc.renormalize_logits = True
    return other


def reference_sampler(model, tokenizer, prompts, max_new_tokens, temperature, seed, end_ids):
    """Sampling written out: one plain forward pass over the whole sequence per token, softmax of
    the last logits / T, one multinomial draw per row; rows that ended get pad."""
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    enc = tokenizer(
        [render_prompt(tokenizer, p) for p in prompts], add_special_tokens=False, padding=True, return_tensors="pt"
    )
    tokenizer.padding_side = side
    ids, attn = enc["input_ids"], enc["attention_mask"]
    done = torch.zeros(len(prompts), dtype=torch.bool)
    out = []
    torch.manual_seed(seed)
    with torch.no_grad():
        for _ in range(max_new_tokens):
            logits = model(input_ids=ids, attention_mask=attn, position_ids=position_ids(attn)).logits[:, -1].float()
            token = torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1).squeeze(1)
            token = torch.where(done, torch.full_like(token, tokenizer.pad_token_id), token)
            out.append(token)
            ids = torch.cat([ids, token[:, None]], dim=1)
            attn = torch.cat([attn, torch.ones_like(token)[:, None]], dim=1)
            done = done | torch.isin(token, torch.tensor(end_ids))
            if done.all():
                break
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sample_draws_from_softmax_of_the_logits_over_the_temperature(eos_model, tiny_tokenizer, temperature):
    cfg = SamplingConfig(max_new_tokens=10, temperature=temperature)
    for seed in (0, 1):
        got = sample(eos_model, tiny_tokenizer, PROMPTS, cfg, generator_seed=seed)
        want = reference_sampler(
            eos_model, tiny_tokenizer, PROMPTS, 10, temperature, seed, [tiny_tokenizer.eos_token_id]
        )
        want = torch.where(
            truncate_after_eos(want, tiny_tokenizer.eos_token_id)[0].bool(), want, tiny_tokenizer.pad_token_id
        )
        assert torch.equal(got.response_ids, want)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sample_ignores_the_model_generation_config(eos_model, tiny_tokenizer, temperature):
    other = polluted(eos_model)
    before = other.generation_config.to_dict()
    cfg = SamplingConfig(max_new_tokens=10, temperature=temperature)
    for seed in SEEDS:
        a = sample(eos_model, tiny_tokenizer, PROMPTS, cfg, generator_seed=seed)
        b = sample(other, tiny_tokenizer, PROMPTS, cfg, generator_seed=seed)
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.response_mask, b.response_mask)
        assert a.texts == b.texts
    assert other.generation_config.to_dict() == before  # left as it was
    greedy = SamplingConfig(max_new_tokens=10, do_sample=False)
    assert torch.equal(
        sample(eos_model, tiny_tokenizer, PROMPTS, greedy).input_ids,
        sample(other, tiny_tokenizer, PROMPTS, greedy).input_ids,
    )


def test_sample_ignores_the_generation_config_of_a_lora_policy(eos_model, tiny_tokenizer):
    import copy

    from rlhf.config.sections import AdaptConfig
    from rlhf.models.adapt import apply_adaptation

    clean = apply_adaptation(copy.deepcopy(eos_model), AdaptConfig(strategy="lora", lora_r=2))
    dirty = apply_adaptation(polluted(eos_model), AdaptConfig(strategy="lora", lora_r=2))
    cfg = SamplingConfig(max_new_tokens=8)
    a = sample(clean, tiny_tokenizer, PROMPTS, cfg, generator_seed=5)
    b = sample(dirty, tiny_tokenizer, PROMPTS, cfg, generator_seed=5)
    assert torch.equal(a.input_ids, b.input_ids)


# ---------- several end ids ----------


def test_truncate_after_eos_with_a_list_of_end_ids():
    ids = torch.tensor(
        [
            [5, 9, 7, EOS, 9],  # the second end id first
            [5, 6, EOS, 9, 7],  # the first end id first
            [5, 6, 7, 8, 4],  # neither
            [9, 5, 6, 7, 8],  # the second end id at the start
        ]
    )
    mask, ended = truncate_after_eos(ids, [EOS, 9])
    assert mask.tolist() == [[1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]
    assert ended.tolist() == [True, True, False, True]
    single = truncate_after_eos(ids, EOS)
    assert torch.equal(truncate_after_eos(ids, [EOS])[0], single[0])


def test_sample_ends_responses_at_any_of_the_end_ids(eos_model, tiny_tokenizer):
    tok = tiny_tokenizer
    cfg = SamplingConfig(max_new_tokens=10)
    plain = sample(eos_model, tok, PROMPTS, cfg, generator_seed=1)
    # A second end id: a token the plain sample draws mid-way through an unfinished row.
    row = int((~plain.ended).nonzero()[0])
    extra = int(plain.response_ids[row, 3])
    other = polluted(eos_model)  # its other generation settings are ignored; its end ids are not
    other.generation_config.eos_token_id = [tok.eos_token_id, extra]
    s = sample(other, tok, PROMPTS, cfg, generator_seed=1)
    # Up to each row's first end id the draws are the plain ones; the row is cut right after it.
    expected_mask, expected_ended = truncate_after_eos(plain.response_ids, [tok.eos_token_id, extra])
    R = s.response_mask.shape[1]
    assert torch.equal(s.response_mask, expected_mask[:, :R]) and expected_mask[:, R:].sum() == 0
    assert torch.equal(s.ended, expected_ended) and s.ended[row]
    keep = s.response_mask.bool()
    assert torch.equal(s.response_ids[keep], plain.response_ids[:, :R][keep])
    assert (s.response_ids[~keep] == tok.pad_token_id).all()
    last = s.response_ids[row, int(s.response_mask[row].sum()) - 1]
    assert int(last) == extra and s.texts[row] == tok.decode(s.response_ids[row, : int(keep[row].sum()) - 1]).strip()


def test_sample_applies_the_sampling_config_top_k(eos_model, tiny_tokenizer):
    # top_k=1 keeps only the most likely token: sampling becomes greedy decoding.
    greedy = sample(eos_model, tiny_tokenizer, PROMPTS, SamplingConfig(max_new_tokens=8, do_sample=False))
    for model in (eos_model, polluted(eos_model)):
        top1 = sample(model, tiny_tokenizer, PROMPTS, SamplingConfig(max_new_tokens=8, top_k=1), generator_seed=3)
        assert torch.equal(top1.input_ids, greedy.input_ids)


def test_nonfinite_logits_are_counted_and_replaced_but_masked_tokens_stay_masked():
    from rlhf.rollout.sampling import _FiniteLogits

    finite = _FiniteLogits()
    masked = torch.tensor([[0.5, -float("inf"), 1.0]])
    assert finite(None, masked) is masked and finite.seen == 0  # -inf from top-k is not an error
    broken = torch.tensor([[0.5, float("nan"), 1.0], [0.1, 0.2, 0.3], [-float("inf")] * 3])
    fixed = finite(None, broken)
    assert finite.seen == 1
    assert torch.equal(fixed[0], torch.zeros(3)) and torch.equal(fixed[2], torch.zeros(3))
    assert torch.equal(fixed[1], broken[1])
