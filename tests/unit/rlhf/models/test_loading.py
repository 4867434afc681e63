"""Adaptation strategies: trainable-parameter counts checked against numbers computed from the dims."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from rlhf.config.sections import AdaptConfig, ModelConfig
from rlhf.models.loading import (
    apply_adaptation,
    check_model_path,
    count_parameters,
    load_causal_lm,
    load_tokenizer,
    looks_like_local_path,
    quantization_config_for,
    resolve_model_path,
)

V, H, L, HEADS, KV, INTER = 50, 16, 3, 4, 2, 24
HEAD_DIM = H // HEADS  # 4
KV_DIM = KV * HEAD_DIM  # 8: k_proj and v_proj are narrower than q_proj (grouped-query attention)

# Llama without biases: q, k, v, o, gate, up, down, and two RMSNorm weight vectors per block.
BLOCK = H * H + H * KV_DIM + H * KV_DIM + H * H + 3 * H * INTER + 2 * H  # 1952
EMBED = V * H
FINAL_NORM = H
HEAD = V * H  # untied
TOTAL = EMBED + L * BLOCK + FINAL_NORM + HEAD


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=V,
        hidden_size=H,
        num_hidden_layers=L,
        num_attention_heads=HEADS,
        num_key_value_heads=KV,
        intermediate_size=INTER,
        max_position_embeddings=64,
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
    )
    return LlamaForCausalLM(config)


def test_dims_arithmetic_matches_the_model():
    assert BLOCK == 1952
    assert count_parameters(tiny_llama()) == (TOTAL, TOTAL)


def test_full_trains_everything():
    model = tiny_llama()
    model.requires_grad_(False)  # full must switch everything back on
    model = apply_adaptation(model, AdaptConfig(strategy="full"))
    assert count_parameters(model) == (TOTAL, TOTAL)


@pytest.mark.parametrize("layers", [0, 1, 2])
def test_freeze_trains_head_norm_and_top_blocks(layers):
    model = apply_adaptation(tiny_llama(), AdaptConfig(strategy="freeze", trainable_layers=layers))
    assert count_parameters(model) == (HEAD + FINAL_NORM + layers * BLOCK, TOTAL)
    trainable_blocks = [i for i, b in enumerate(model.model.layers) if b.self_attn.q_proj.weight.requires_grad]
    assert trainable_blocks == list(range(L - layers, L))  # the LAST blocks, not the first
    assert not model.model.embed_tokens.weight.requires_grad


def test_freeze_rejects_more_layers_than_the_model_has():
    with pytest.raises(ValueError, match="trainable_layers=4"):
        apply_adaptation(tiny_llama(), AdaptConfig(strategy="freeze", trainable_layers=L + 1))


def test_freeze_finds_gpt2_blocks_and_tied_head():
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=H, n_layer=2, n_head=2, n_positions=32))
    per_block = (H * 3 * H + 3 * H) + (H * H + H) + 2 * 2 * H + (H * 4 * H + 4 * H) + (4 * H * H + H)
    model = apply_adaptation(model, AdaptConfig(strategy="freeze", trainable_layers=1))
    # Tied head: training the head trains the token embedding (V*H); ln_f has weight and bias.
    assert count_parameters(model)[0] == V * H + 2 * H + per_block
    assert not model.transformer.wpe.weight.requires_grad


def test_lora_all_linear_adds_r_times_in_plus_out_per_linear_layer():
    r = 4
    per_block = sum(
        r * (i + o) for i, o in [(H, H), (H, KV_DIM), (H, KV_DIM), (H, H), (H, INTER), (H, INTER), (INTER, H)]
    )
    model = apply_adaptation(tiny_llama(), AdaptConfig(strategy="lora", lora_r=r, lora_alpha=8))
    assert count_parameters(model) == (L * per_block, TOTAL + L * per_block)  # lm_head is not adapted
    assert not model.get_base_model().lm_head.weight.requires_grad


def test_lora_comma_list_adapts_only_the_named_modules():
    r = 2
    model = apply_adaptation(tiny_llama(), AdaptConfig(strategy="lora", lora_r=r, lora_target_modules="q_proj, v_proj"))
    expected = L * (r * (H + H) + r * (H + KV_DIM))
    assert count_parameters(model)[0] == expected


def test_prefix_tuning_counts_one_key_and_value_vector_per_layer_and_token():
    tokens = 5
    model = apply_adaptation(tiny_llama(), AdaptConfig(strategy="prefix", num_virtual_tokens=tokens))
    # peft (no projection) stores num_virtual_tokens x (num_layers * 2 * token_dim), and for
    # grouped-query models token_dim = head_dim * num_key_value_heads, not hidden_size.
    expected = tokens * L * 2 * KV_DIM
    assert count_parameters(model) == (expected, TOTAL + expected)
    logits = model(input_ids=torch.tensor([[3, 4, 5]])).logits
    assert logits.shape == (1, 3, V)


def test_lora_with_reentrant_checkpointing_still_gets_gradients():
    model = tiny_llama()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})
    model = apply_adaptation(model, AdaptConfig(strategy="lora", lora_r=2))
    model.train()
    model(input_ids=torch.tensor([[3, 4, 5, 6]]), labels=torch.tensor([[3, 4, 5, 6]])).loss.backward()
    # lora_B starts at zero (so lora_A's gradient is zero too); B's gradient is the live one.
    grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_unknown_strategy_is_an_error():
    with pytest.raises(ValueError, match="unknown adaptation strategy"):
        apply_adaptation(tiny_llama(), AdaptConfig(strategy="bitfit"))  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU error path")
def test_qlora_without_cuda_says_what_it_needs():
    with pytest.raises(RuntimeError, match=r"CUDA GPU.*bitsandbytes.*strategy=lora"):
        apply_adaptation(tiny_llama(), AdaptConfig(strategy="qlora"))
    with pytest.raises(RuntimeError, match="strategy=lora"):
        quantization_config_for(AdaptConfig(strategy="qlora"))
    assert quantization_config_for(AdaptConfig(strategy="lora")) is None


def test_unknown_builtin_lists_the_builtins(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match=r"builtin:tiny.*builtin:smollm2-135m-instruct"):
        resolve_model_path("builtin:gpt5")
    assert not (tmp_path / "builtin").exists()


def test_non_builtin_names_pass_through_unchanged():
    assert resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert resolve_model_path("/some/local/folder") == "/some/local/folder"


# ---------------------------------------------------------------------------------------------
# local folders vs Hub names


@pytest.mark.parametrize(
    "name, local",
    [
        ("HuggingFaceTB/SmolLM2-135M-Instruct", False),  # owner/name with no such local folder: the Hub
        ("gpt2", False),
        ("builtin:tiny", False),
        ("runs/sft-tiny/model", True),  # more than one '/'
        ("runs/model", True),  # one '/', and runs/ exists here
        ("/abs/model", True),
        ("./model", True),
        ("../model", True),
        ("~/model", True),
        ("models\\sft", True),
    ],
)
def test_local_path_rule(tmp_path, monkeypatch, name, local):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    assert looks_like_local_path(name) is local


def test_missing_local_folder_names_the_key_the_path_and_the_likely_cause(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = ModelConfig(name_or_path="runs/sft-tiny/model")
    for load in (load_tokenizer, load_causal_lm):
        # Without the check transformers says "Repo id must be in the form 'repo_name' or ...".
        with pytest.raises(
            FileNotFoundError,
            match=r"^model\.name_or_path: model folder runs/sft-tiny/model does "
            r"not exist \(is it the output of a stage that has not run yet\?\)",
        ):
            load(cfg)
    with pytest.raises(FileNotFoundError, match=r"critic\.init_from: model folder \./gone does not exist"):
        check_model_path("./gone", "critic.init_from")
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match=r"model\.name_or_path: \./weights\.bin is a file"):
        check_model_path("./weights.bin")
    check_model_path("HuggingFaceTB/SmolLM2-135M-Instruct")  # a Hub name is left to from_pretrained
    check_model_path(str(tmp_path))


def test_missing_reward_model_folders_say_so(tmp_path):
    from reward_models.model import load_reward_model
    from reward_models.scorer import RewardModel

    missing = tmp_path / "rm-tiny" / "model"
    with pytest.raises(
        FileNotFoundError,
        match=rf"model\.name_or_path: model folder {missing} does not exist "
        r"\(is it the output of a stage that has not run yet\?\)",
    ):
        load_reward_model(ModelConfig(name_or_path=str(missing)), pad_token_id=0)
    with pytest.raises(
        FileNotFoundError,
        match=rf"reward model folder {missing} does not exist \(is it the output "
        r"of a stage that has not run yet\?\)",
    ):
        RewardModel.from_pretrained(missing)


def test_home_folder_is_expanded():
    assert resolve_model_path("~/models/x") == str(Path.home() / "models" / "x")


def test_tokenizer_that_pads_with_eos_and_has_no_spare_token_warns(tmp_path, caplog):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"hello": 0, "world": 1, "<eos>": 2}))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<eos>", pad_token="<eos>").save_pretrained(tmp_path)
    with caplog.at_level("WARNING", logger="rlhf.models.loading"):
        tokenizer = load_tokenizer(ModelConfig(name_or_path=str(tmp_path)))
    assert tokenizer.pad_token == tokenizer.eos_token == "<eos>"  # no other token to pad with
    assert "pads with its EOS token '<eos>'" in caplog.text and "masked by position" in caplog.text


@pytest.mark.parametrize("strategy", ["full", "lora"])
def test_saved_models_generate_with_the_kv_cache_even_after_checkpointed_training(tmp_path, strategy):
    from transformers import AutoConfig

    from rlhf.models.loading import save_model

    model = apply_adaptation(tiny_llama(), AdaptConfig(strategy=strategy, lora_r=2))
    config = model.get_base_model().config if strategy == "lora" else model.config
    config.use_cache = False  # as SFT leaves it
    save_model(model, None, tmp_path / "model", merge=True)
    saved = tmp_path / "model" / ("merged" if strategy == "lora" else "")
    assert AutoConfig.from_pretrained(saved).use_cache is True
    assert config.use_cache is False  # the model in training keeps its setting
