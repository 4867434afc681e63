"""rlhf.models.adapt: trainable-parameter counts checked against numbers computed from the dims."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_untied_llama
from transformers import GPT2Config, GPT2LMHeadModel

from rlhf.config.sections import AdaptConfig
from rlhf.models.adapt import apply_adaptation, count_parameters, disable_dropout, quantization_config_for

V, H, L, HEADS, KV, INTER = 50, 16, 3, 4, 2, 24  # the dims of helpers.tiny_untied_llama
HEAD_DIM = H // HEADS  # 4
KV_DIM = KV * HEAD_DIM  # 8: k_proj and v_proj are narrower than q_proj (grouped-query attention)

# Llama without biases: q, k, v, o, gate, up, down, and two RMSNorm weight vectors per block.
BLOCK = H * H + H * KV_DIM + H * KV_DIM + H * H + 3 * H * INTER + 2 * H  # 1952
EMBED = V * H
FINAL_NORM = H
HEAD = V * H  # untied
TOTAL = EMBED + L * BLOCK + FINAL_NORM + HEAD


def test_dims_arithmetic_matches_the_model():
    assert BLOCK == 1952
    assert count_parameters(tiny_untied_llama()) == (TOTAL, TOTAL)


def test_full_trains_everything():
    model = tiny_untied_llama()
    model.requires_grad_(False)  # full must switch everything back on
    model = apply_adaptation(model, AdaptConfig(strategy="full"))
    assert count_parameters(model) == (TOTAL, TOTAL)


@pytest.mark.parametrize("layers", [0, 1, 2])
def test_freeze_trains_head_norm_and_top_blocks(layers):
    model = apply_adaptation(tiny_untied_llama(), AdaptConfig(strategy="freeze", trainable_layers=layers))
    assert count_parameters(model) == (HEAD + FINAL_NORM + layers * BLOCK, TOTAL)
    trainable_blocks = [i for i, b in enumerate(model.model.layers) if b.self_attn.q_proj.weight.requires_grad]
    assert trainable_blocks == list(range(L - layers, L))  # the LAST blocks, not the first
    assert not model.model.embed_tokens.weight.requires_grad


def test_freeze_rejects_more_layers_than_the_model_has():
    with pytest.raises(ValueError, match="trainable_layers=4"):
        apply_adaptation(tiny_untied_llama(), AdaptConfig(strategy="freeze", trainable_layers=L + 1))


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
    model = apply_adaptation(tiny_untied_llama(), AdaptConfig(strategy="lora", lora_r=r, lora_alpha=8))
    assert count_parameters(model) == (L * per_block, TOTAL + L * per_block)  # lm_head is not adapted
    assert not model.get_base_model().lm_head.weight.requires_grad


def test_lora_comma_list_adapts_only_the_named_modules():
    r = 2
    model = apply_adaptation(
        tiny_untied_llama(), AdaptConfig(strategy="lora", lora_r=r, lora_target_modules="q_proj, v_proj")
    )
    expected = L * (r * (H + H) + r * (H + KV_DIM))
    assert count_parameters(model)[0] == expected


def test_prefix_tuning_counts_one_key_and_value_vector_per_layer_and_token():
    tokens = 5
    model = apply_adaptation(tiny_untied_llama(), AdaptConfig(strategy="prefix", num_virtual_tokens=tokens))
    # peft (no projection) stores num_virtual_tokens x (num_layers * 2 * token_dim), and for
    # grouped-query models token_dim = head_dim * num_key_value_heads, not hidden_size.
    expected = tokens * L * 2 * KV_DIM
    assert count_parameters(model) == (expected, TOTAL + expected)
    logits = model(input_ids=torch.tensor([[3, 4, 5]])).logits
    assert logits.shape == (1, 3, V)


def test_lora_with_reentrant_checkpointing_still_gets_gradients():
    model = tiny_untied_llama()
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": True})
    model = apply_adaptation(model, AdaptConfig(strategy="lora", lora_r=2))
    model.train()
    model(input_ids=torch.tensor([[3, 4, 5, 6]]), labels=torch.tensor([[3, 4, 5, 6]])).loss.backward()
    # lora_B starts at zero (so lora_A's gradient is zero too); B's gradient is the live one.
    grads = [p.grad for n, p in model.named_parameters() if "lora_B" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_unknown_strategy_is_an_error():
    with pytest.raises(ValueError, match="unknown adaptation strategy"):
        apply_adaptation(tiny_untied_llama(), AdaptConfig(strategy="bitfit"))  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU error path")
def test_qlora_without_cuda_says_what_it_needs():
    with pytest.raises(RuntimeError, match=r"CUDA GPU.*bitsandbytes.*strategy=lora"):
        apply_adaptation(tiny_untied_llama(), AdaptConfig(strategy="qlora"))
    with pytest.raises(RuntimeError, match="strategy=lora"):
        quantization_config_for(AdaptConfig(strategy="qlora"))
    assert quantization_config_for(AdaptConfig(strategy="lora")) is None


def _dropout_heavy(kind: str):
    """A tiny model of ``kind`` with every dropout probability of its config at 0.5: Llama, Qwen2
    and Phi copy ``attention_dropout`` into a float attribute of each attention module, OPT copies
    ``dropout`` and ``layerdrop`` into floats of its layers, GPT-2 uses nn.Dropout modules."""
    import transformers as tf

    torch.manual_seed(0)
    size = dict(vocab_size=V, hidden_size=H, num_hidden_layers=2, num_attention_heads=HEADS, max_position_embeddings=64)
    if kind == "llama":
        config = tf.LlamaConfig(**size, intermediate_size=INTER, num_key_value_heads=KV, attention_dropout=0.5)
        return tf.LlamaForCausalLM(config)
    if kind == "qwen2":
        config = tf.Qwen2Config(**size, intermediate_size=INTER, num_key_value_heads=KV, attention_dropout=0.5)
        return tf.Qwen2ForCausalLM(config)
    if kind == "phi":
        config = tf.PhiConfig(**size, intermediate_size=INTER, attention_dropout=0.5, resid_pdrop=0.5, embd_pdrop=0.5)
        return tf.PhiForCausalLM(config)
    if kind == "opt":
        config = tf.OPTConfig(
            **size, ffn_dim=INTER, word_embed_proj_dim=H, dropout=0.5, attention_dropout=0.5, layerdrop=0.5
        )
        return tf.OPTForCausalLM(config)
    config = GPT2Config(vocab_size=V, n_embd=H, n_layer=2, n_head=HEADS, n_positions=64, resid_pdrop=0.5)
    config.embd_pdrop = config.attn_pdrop = 0.5
    return GPT2LMHeadModel(config)


@pytest.mark.parametrize("kind", ["llama", "qwen2", "phi", "opt", "gpt2"])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_disable_dropout_makes_train_mode_logits_equal_eval_mode_logits(kind, attn):
    model = _dropout_heavy(kind)
    model.config._attn_implementation = attn
    ids = torch.tensor([[3, 4, 5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16, 17, 18]])
    with torch.no_grad():
        expected = model.eval()(input_ids=ids).logits
        assert not torch.equal(model.train()(input_ids=ids).logits, expected)  # the dropout is real
        disable_dropout(model)
        for seed in (0, 1, 2):
            torch.manual_seed(seed)
            torch.testing.assert_close(model.train()(input_ids=ids).logits, expected, rtol=0, atol=0)


def test_disable_dropout_turns_lora_dropout_off_after_adaptation():
    model = apply_adaptation(tiny_untied_llama(), AdaptConfig(strategy="lora", lora_r=2, lora_dropout=0.5))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()  # a trained adapter: its dropout now changes the output
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        expected = model.eval()(input_ids=ids).logits
        assert not torch.equal(model.train()(input_ids=ids).logits, expected)
        disable_dropout(model)
        torch.testing.assert_close(model.train()(input_ids=ids).logits, expected, rtol=0, atol=0)
