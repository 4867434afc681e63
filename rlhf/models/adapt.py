"""Adapting a loaded model for training: ``full``, ``freeze`` (top blocks only), ``lora``,
``qlora`` (4-bit base, CUDA + bitsandbytes) and ``prefix`` tuning (see ``AdaptConfig``), parameter
counts, and switching dropout off for RL.
"""

from __future__ import annotations

import importlib.util
import re
from typing import Optional

import torch
from torch import nn

from rlhf.config.sections import AdaptConfig

_PEFT_STRATEGIES = ("lora", "qlora", "prefix")


def _require_qlora() -> None:
    if not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
        raise RuntimeError(
            "adapt.strategy=qlora needs a CUDA GPU and the bitsandbytes package "
            f"(CUDA available: {torch.cuda.is_available()}, bitsandbytes installed: "
            f"{importlib.util.find_spec('bitsandbytes') is not None}); use adapt.strategy=lora instead."
        )


def quantization_config_for(adapt: AdaptConfig):
    """The 4-bit (NF4) load config of a QLoRA base model, or None for other strategies."""
    if adapt.strategy != "qlora":
        return None
    _require_qlora()
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16,
    )


def apply_adaptation(model: nn.Module, adapt: AdaptConfig, *, task_type: str = "CAUSAL_LM") -> nn.Module:
    """Make the parameters ``adapt.strategy`` trains trainable; returns the (maybe wrapped) model.

    ``task_type`` is peft's: ``CAUSAL_LM`` for policies, ``SEQ_CLS`` for a reward model whose
    scalar head (``score``) must be trained and saved next to the adapter.
    """
    strategy = adapt.strategy
    if strategy == "full":
        model.requires_grad_(True)
        return model
    if strategy == "freeze":
        return _freeze_all_but_top(model, adapt.trainable_layers)
    if strategy not in _PEFT_STRATEGIES:
        raise ValueError(f"unknown adaptation strategy {strategy!r}; expected full, freeze, lora, qlora or prefix")

    import peft

    checkpointing = _is_checkpointing(model)
    if strategy == "qlora":
        _require_qlora()
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    elif checkpointing:
        # With frozen embeddings no checkpointed block input requires grad, and reentrant
        # checkpointing then gives the adapters no gradient. transformers already does this when
        # checkpointing is switched on through its API; this covers models where it was not.
        model.enable_input_require_grads()

    if strategy == "prefix":
        peft_config = peft.PrefixTuningConfig(task_type=task_type, num_virtual_tokens=adapt.num_virtual_tokens)
    else:
        targets = adapt.lora_target_modules.strip()
        peft_config = peft.LoraConfig(
            task_type=task_type,
            r=adapt.lora_r,
            lora_alpha=adapt.lora_alpha,
            lora_dropout=adapt.lora_dropout,
            target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()],
        )
    return peft.get_peft_model(model, peft_config)


def _is_checkpointing(model: nn.Module) -> bool:
    return any(getattr(m, "gradient_checkpointing", False) is True for m in model.modules())


def _freeze_all_but_top(model: nn.Module, trainable_layers: int) -> nn.Module:
    blocks = _decoder_blocks(model)
    if not 0 <= trainable_layers <= len(blocks):
        raise ValueError(f"adapt.trainable_layers={trainable_layers} but the model has {len(blocks)} blocks")
    model.requires_grad_(False)
    # With tied embeddings the head IS the input embedding matrix, which then trains too.
    top = [_output_head(model), _final_norm(model)] + list(blocks)[len(blocks) - trainable_layers :]
    for module in top:
        if module is not None:
            module.requires_grad_(True)
    return model


def _decoder(model: nn.Module) -> nn.Module:
    getter = getattr(model, "get_decoder", None)
    decoder = getter() if callable(getter) else None
    return decoder if decoder is not None else getattr(model, getattr(model, "base_model_prefix", ""), model)


def _decoder_blocks(model: nn.Module) -> nn.ModuleList:
    decoder = _decoder(model)
    for name in ("layers", "h", "blocks", "block", "layer"):
        blocks = getattr(decoder, name, None)
        if isinstance(blocks, nn.ModuleList):
            return blocks
    raise ValueError(f"cannot find the decoder blocks of {type(model).__name__} for adapt.strategy=freeze")


def _final_norm(model: nn.Module) -> Optional[nn.Module]:
    decoder = _decoder(model)
    for name in ("norm", "ln_f", "final_layer_norm", "final_layernorm", "norm_f"):
        if isinstance(getattr(decoder, name, None), nn.Module):
            return getattr(decoder, name)
    return None


def _output_head(model: nn.Module) -> nn.Module:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None:
        return head
    for name in ("score", "classifier", "v_head", "value_head"):  # scalar heads of reward models
        if isinstance(getattr(model, name, None), nn.Module):
            return getattr(model, name)
    raise ValueError(f"cannot find the output head of {type(model).__name__} for adapt.strategy=freeze")
    return head


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; shared (tied) parameters counted once."""
    if hasattr(model, "get_nb_trainable_parameters"):
        # peft knows how many weights a packed 4-bit parameter really holds.
        return model.get_nb_trainable_parameters()
    trainable = total = 0
    for p in model.parameters():
        n = getattr(p, "ds_numel", p.numel())  # ZeRO-3 leaves an empty shard in p; ds_numel is the size
        total += n
        trainable += n if p.requires_grad else 0
    return trainable, total


# Dropout probabilities kept as plain floats, by name: transformers copies them from the config
# into attention modules and layers at init (Llama, Qwen2 and Phi ``attention_dropout``, OPT
# ``dropout`` and ``layerdrop``) and reads them, or the config's fields, at every forward pass.
_DROPOUT_NAME = re.compile(r"dropout|pdrop|layerdrop|drop_path|drop_rate|drop_prob")


def _zero_float_dropouts(obj: object) -> None:
    for name, value in list(vars(obj).items()):
        if _DROPOUT_NAME.search(name) and isinstance(value, float) and value != 0.0:
            setattr(obj, name, 0.0)


def _configs(module: nn.Module):
    """The transformers configs ``module`` holds, with their sub-configs (e.g. ``text_config``)."""
    stack, seen = [getattr(module, "config", None)], set()
    while stack:
        config = stack.pop()
        if id(config) in seen or not hasattr(config, "to_dict") or not hasattr(config, "__dict__"):
            continue
        seen.add(id(config))
        yield config
        stack.extend(v for v in vars(config).values() if hasattr(v, "to_dict") and hasattr(v, "__dict__"))


def disable_dropout(model: nn.Module) -> nn.Module:
    """Sets every dropout probability to 0 (RL and preference optimisation compare log-probs of
    the policy with a reference, which must be deterministic): ``nn.Dropout`` modules (LoRA's
    included, so call it after ``apply_adaptation``), float dropout attributes of every module,
    and the dropout fields of the configs they read at forward time."""
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.p = 0.0
        _zero_float_dropouts(module)
        for config in _configs(module):
            _zero_float_dropouts(config)
    return model
