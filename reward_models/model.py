"""The scalar reward model: a sequence-classification head on a causal or encoder backbone.

The reward of a sequence is the head's output at its LAST REAL token (the last position where
``attention_mask == 1``). Padding is found from the mask only, never from token ids, so the
reward is right under left padding, right padding, and when the pad token is also the EOS token
(transformers' own ``*ForSequenceClassification.forward`` looks for the last non-pad *id*, which
is wrong when pad == eos and the text itself contains EOS).

Also here, so that training (``reward_models.batching``) and scoring (``reward_models.scorer``)
render a (prompt, response) pair with the very same code: :func:`render_for_reward` and
:func:`encode_for_reward`.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from preference_data.text_budget import CUT_MARGIN_TOKENS, char_budget
from rlhf.config.sections import ModelConfig
from rlhf.models.adapt import apply_adaptation, quantization_config_for
from rlhf.models.loading import check_model_path, merged_copy, resolve_model_path
from rlhf.runtime.placement import full_parameters, local_device_map

logger = logging.getLogger(__name__)

HEAD_NAMES = ("score", "classifier")  # decoder heads are called score, encoder heads classifier
REWARD_MODEL_FILE = "reward_model.json"
ADAPTER_SUBDIR = "adapter"
WRAPPED_ATTR = "model"  # ScalarRewardModel's attribute holding the seq-cls model (state-dict prefix)

Prompt = Union[str, Sequence[dict]]


# ---------------------------------------------------------------------------------------------
# rendering: the one place that decides what text a reward is computed on


def render_for_reward(tokenizer, prompt: Prompt, response: str, chat_template: bool = True) -> str:
    """The text whose reward is read at its last token, identical in training and scoring.

    ``prompt`` is a string (one user message) or a list of ``{"role", "content"}`` messages; the
    response becomes the final assistant message. With ``chat_template`` and a tokenizer that has
    one, the text is ``tokenizer.apply_chat_template(messages, tokenize=False)``: it already holds
    the template's special tokens, so it must be tokenised with ``add_special_tokens=False``
    (:func:`encode_for_reward` does). Otherwise (no template asked for, or the tokenizer has none,
    e.g. an encoder) it is ``prompt + response + eos``; a list prompt is its contents joined by blank
    lines. A tokenizer with no EOS but CLS / SEP (BERT-like encoders, whose pooler reads the first
    token) gives ``[CLS] prompt [SEP] response [SEP]``, the same ids as the tokenizer's own pair
    encoding.
    """
    if isinstance(prompt, str):
        messages = [{"role": "user", "content": prompt}]
    else:
        messages = [dict(m) for m in prompt]
    if chat_template and getattr(tokenizer, "chat_template", None):
        messages.append({"role": "assistant", "content": response})
        return tokenizer.apply_chat_template(messages, tokenize=False)
    prompt_text = prompt if isinstance(prompt, str) else "\n\n".join(str(m["content"]) for m in messages)
    if tokenizer.eos_token is not None:
        return f"{prompt_text}{response}{tokenizer.eos_token}"
    if tokenizer.cls_token is not None and tokenizer.sep_token is not None:
        return f"{tokenizer.cls_token}{prompt_text}{tokenizer.sep_token}{response}{tokenizer.sep_token}"
    return f"{prompt_text}{response}"


def encode_for_reward(tokenizer, text: str, max_length: Optional[int] = None) -> list[int]:
    """Token ids of a rendered text, left-truncated to ``max_length`` (the reward is read at the end).

    A leading BOS / CLS token survives truncation: encoders pool the first token, and decoders
    have only ever seen text that starts with BOS.
    """
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    ids, head = _tail_ids(tokenizer, text, max_length)
    if max_length is None or len(ids) <= max_length:
        return list(ids)
    leading = {t for t in (tokenizer.bos_token_id, tokenizer.cls_token_id) if t is not None}
    if head is not None and head in leading and max_length > 1:
        return [head, *ids[len(ids) - (max_length - 1) :]]
    return list(ids[len(ids) - max_length :])


def _tail_ids(tokenizer, text: str, max_length: Optional[int]) -> tuple[list[int], Optional[int]]:
    """Token ids of the end of ``text`` (all of it when short) and the text's first token id.

    A long text is cut before it is tokenised (see `preference_data.text_budget`): its last
    ``char_budget(max_length)`` characters give the last tokens, the first ones the leading
    token; the tokens the cut changes are dropped. The cut doubles when it gives too few tokens.
    """
    budget = None if max_length is None else char_budget(max_length)
    while True:  # at most log2(len(text) / budget) + 1 rounds: the budget doubles each time
        if budget is None or len(text) <= budget:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            return ids, (ids[0] if ids else None)
        tail = tokenizer(text[-budget:], add_special_tokens=False)["input_ids"]
        if len(tail) > max_length + CUT_MARGIN_TOKENS // 2:
            head = tokenizer(text[:budget], add_special_tokens=False)["input_ids"]
            return tail[CUT_MARGIN_TOKENS // 2 :], (head[0] if head else None)
        budget *= 2


# ---------------------------------------------------------------------------------------------
# the module


def _unwrap_peft(model: nn.Module) -> nn.Module:
    getter = getattr(model, "get_base_model", None)
    return getter() if callable(getter) else model


def _is_prompt_learning(model: nn.Module) -> bool:
    configs = getattr(model, "peft_config", None)
    if not isinstance(configs, dict) or not configs:
        return False
    return bool(getattr(configs[model.active_adapter], "is_prompt_learning", False))


def _is_prefix_tuning(model: nn.Module) -> bool:
    return _is_prompt_learning(model) and model.active_peft_config.peft_type == "PREFIX_TUNING"


def last_real_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """[B] index of the last position where ``attention_mask`` [B, T] is 1 (0 for an empty row)."""
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (positions * (attention_mask > 0)).argmax(-1)


class ScalarRewardModel(nn.Module):
    """One scalar reward per sequence from an ``AutoModelForSequenceClassification`` (num_labels=1).

    ``model`` may be peft-wrapped. DDP / DeepSpeed wrap THIS module, so the forward may call
    submodules of ``model`` directly.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        setattr(self, WRAPPED_ATTR, model)

    @property
    def wrapped(self) -> nn.Module:
        """The seq-cls model, peft wrapper included when there is one."""
        return getattr(self, WRAPPED_ATTR)

    @property
    def seqcls(self) -> nn.Module:
        """The transformers seq-cls model (peft's LoRA layers live inside it, injected in place)."""
        return _unwrap_peft(self.wrapped)

    @property
    def config(self):
        return self.seqcls.config

    @property
    def is_decoder(self) -> bool:
        """Causal-LM backbone with a per-position ``score`` head (else a pooled encoder head)."""
        return isinstance(getattr(self.seqcls, "score", None), nn.Module)

    @property
    def head(self) -> nn.Module:
        for name in HEAD_NAMES:
            module = getattr(self.seqcls, name, None)
            if isinstance(module, nn.Module):
                return module
        raise AttributeError(f"{type(self.seqcls).__name__} has no 'score' or 'classifier' head")

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        per_token: bool = False,
        position_ids: Optional[torch.Tensor] = None,
        read_index: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Rewards [B] float32 for ``input_ids`` / ``attention_mask`` [B, T] (any padding side).

        ``per_token`` returns the head's output at every position, [B, T] (decoders only): the
        values of a PPO critic, V(prefix up to and including position t).

        Shared-prompt rows (``preference_data.layout``, inputs from ``rlhf.models.layout.model_inputs``):
        a 4D ``attention_mask`` [R, 1, T, T] with ``position_ids`` [R, T] and ``read_index`` [S],
        the flat positions whose rewards are read; returns [S].
        """
        if attention_mask.dim() == 4:
            if position_ids is None or read_index is None:
                raise ValueError("a 4D attention mask needs position_ids and read_index")
            base = getattr(self.seqcls, self.seqcls.base_model_prefix)
            hidden = base(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
            ).last_hidden_state
            return self.head(hidden.flatten(0, 1)[read_index])[:, 0].float()
        if per_token and not self.is_decoder:
            raise ValueError("per-token values need a decoder backbone (a causal LM), not an encoder")
        if not self.is_decoder:
            # Encoders pool the first token ([CLS]) themselves; right padding is all they see.
            return self.wrapped(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0].float()
        # Positions count real tokens only, so a left-padded sequence sees the positions it
        # would see alone (the default arange would shift them by the padding length).
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        if _is_prefix_tuning(self.wrapped):
            hidden = self._prefix_tuned_hidden(input_ids, attention_mask, position_ids)
        elif _is_prompt_learning(self.wrapped):
            # Prompt tuning prepends virtual token embeddings in peft's forward, not in layers.
            out = self.wrapped(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=False,
                output_hidden_states=True,
            )
            hidden = out.hidden_states[-1]
        else:
            base = getattr(self.seqcls, self.seqcls.base_model_prefix)
            hidden = base(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
            ).last_hidden_state
        hidden = hidden[:, hidden.shape[1] - input_ids.shape[1] :]  # drop virtual prompt tokens, if any
        if per_token:
            return self.head(hidden)[..., 0].float()
        last = last_real_index(attention_mask)
        # The head is linear per position: apply it to the B gathered states, not all B x T.
        picked = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        return self.head(picked)[:, 0].float()

    def _prefix_tuned_hidden(self, input_ids, attention_mask, position_ids) -> torch.Tensor:
        """Last hidden states [B, T, H] under prefix tuning: the learned keys / values as a cache.

        peft's sequence-classification forward hands the prefix to the model as
        ``past_key_values``; transformers 5.24 renamed that argument ``cache`` in the
        ``*ForSequenceClassification`` forward, and peft then refuses the model. The backbone is
        called here with the prefix under whichever name its forward takes, with the same mask
        and positions peft uses (ones for the virtual tokens, real positions shifted past them).
        """
        n_virtual = self.wrapped.active_peft_config.num_virtual_tokens
        prefix = self.wrapped.get_prompt(batch_size=input_ids.shape[0])
        mask = torch.cat([attention_mask.new_ones(attention_mask.shape[0], n_virtual), attention_mask], dim=1)
        base = getattr(self.seqcls, self.seqcls.base_model_prefix)
        cache_arg = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        out = base(
            input_ids=input_ids, attention_mask=mask, position_ids=position_ids + n_virtual, **{cache_arg: prefix}
        )
        return out.last_hidden_state


# ---------------------------------------------------------------------------------------------
# loading


def _dtype(value: Union[str, torch.dtype, None]) -> torch.dtype:
    if isinstance(value, torch.dtype):
        return value
    names = {
        None: torch.float32,
        "auto": torch.float32,
        "float32": torch.float32,
        "bfloat16": torch.bfloat16,
        "float16": torch.float16,
    }
    if value not in names:
        raise ValueError(f"unknown dtype {value!r}; expected one of float32, bfloat16, float16, auto")
    return names[value]


def _head_name(model: nn.Module) -> str:
    for name in HEAD_NAMES:
        if isinstance(getattr(model, name, None), nn.Module):
            return name
    raise ValueError(f"{type(model).__name__} has no 'score' or 'classifier' head")


@torch.no_grad()
def _reinit_head(head: nn.Module, num_labels: int) -> None:
    """Small initial rewards: N(0, 1/sqrt(hidden+1)) on the output projection, zero bias.

    Drawn from a generator seeded with ``torch.initial_seed()`` (the run's seed), so the head is
    the same whatever else consumed random numbers, on one process or several. transformers' own
    init of a fresh head depends on the architecture; this one keeps the starting rewards near 0
    whatever the backbone, so the first pairwise losses are close to ln 2. Under ZeRO-3 (weights
    partitioned at load) the head is gathered, set on process 0 and scattered back.
    """
    generator = torch.Generator().manual_seed(torch.initial_seed())
    linears = [m for m in head.modules() if isinstance(m, nn.Linear) and m.out_features == num_labels]
    for linear in linears:
        params = [p for p in (linear.weight, linear.bias) if p is not None]
        with full_parameters(params):
            weight = torch.randn(linear.weight.shape, generator=generator) / math.sqrt(linear.in_features + 1)
            linear.weight.copy_(weight.to(linear.weight.dtype))
            if linear.bias is not None:
                linear.bias.zero_()


def _enable_checkpointing(model: nn.Module) -> None:
    # transformers renamed gradient -> activation checkpointing (old names warn, gone in v6).
    enable = getattr(model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False


def load_reward_model(
    cfg: ModelConfig, *, pad_token_id: int, dtype: Union[str, torch.dtype, None] = None
) -> ScalarRewardModel:
    """A trainable reward model from a seq-cls folder, a causal-LM folder (new head) or an encoder.

    ``dtype`` overrides ``cfg.dtype``. A head missing from the checkpoint is re-initialised small
    (see :func:`_reinit_head`); then ``cfg.adapt`` is applied with peft task type ``SEQ_CLS``, which
    keeps the head trainable and saved next to LoRA adapters. Dropout is left as configured.
    """
    from transformers import AutoModelForSequenceClassification

    check_model_path(cfg.name_or_path)
    kwargs: dict[str, Any] = {
        "num_labels": 1,
        "revision": None if cfg.name_or_path.startswith("builtin:") else cfg.revision,
        "trust_remote_code": cfg.trust_remote_code,
        "dtype": _dtype(dtype if dtype is not None else cfg.dtype),
        "output_loading_info": True,
    }
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    if cfg.adapt.strategy == "qlora":
        kwargs["quantization_config"] = quantization_config_for(cfg.adapt)
        kwargs["device_map"] = local_device_map()
    model, info = AutoModelForSequenceClassification.from_pretrained(resolve_model_path(cfg.name_or_path), **kwargs)
    model.config.pad_token_id = pad_token_id
    head_name = _head_name(model)
    if any(key == head_name or key.startswith(head_name + ".") for key in info.get("missing_keys", ())):
        _reinit_head(getattr(model, head_name), model.config.num_labels)
    if cfg.gradient_checkpointing:
        _enable_checkpointing(model)
    model = apply_adaptation(model, cfg.adapt, task_type="SEQ_CLS")
    if cfg.adapt.strategy in ("full", "freeze"):
        # freeze keeps rlhf.models.loading' "top" modules trainable; say it outright for the scalar head,
        # whatever name the architecture gives it (BERT-like models call it classifier).
        getattr(model, head_name).requires_grad_(True)
    return ScalarRewardModel(model)


# ---------------------------------------------------------------------------------------------
# saving


def _strip_prefix(state_dict: dict, prefix: str) -> dict:
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix) :]: v for k, v in state_dict.items()}
    return state_dict


def save_reward_model(
    model: ScalarRewardModel,
    tokenizer,
    out_dir: Union[str, Path],
    *,
    state_dict: Optional[dict] = None,
    merge: bool = False,
    extra: Optional[dict] = None,
) -> Path:
    """Write a folder that ``AutoModelForSequenceClassification.from_pretrained`` loads as is.

    Full / freeze: the seq-cls model's ``save_pretrained``. LoRA / QLoRA: the adapter merged
    into full weights in ``out_dir`` (a reward model is for scoring, so the plain folder must load
    without peft), the adapter itself in ``out_dir/adapter`` -- whatever ``merge`` says, which is
    accepted for parity with ``rlhf.models.loading.save_model``. Prefix tuning cannot be merged: the
    adapter is written at ``out_dir`` (a peft folder; :class:`reward_models.scorer.RewardModel`
    loads it). ``state_dict``: the full gathered state dict of ``model`` (ZeRO-3), keys prefixed
    by ``model.`` as ``ScalarRewardModel.state_dict()`` gives them. ``extra`` is written as JSON
    to ``out_dir/reward_model.json``. The tokenizer is saved too. Call on the main process only.
    """
    del merge  # see docstring
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wrapped = model.wrapped
    if state_dict is not None:
        state_dict = _strip_prefix(state_dict, WRAPPED_ATTR + ".")
    if wrapped is model.seqcls:  # no peft
        wrapped.save_pretrained(out_dir, state_dict=state_dict)
    elif _is_prompt_learning(wrapped):
        logger.warning("prompt-learning adapters cannot be merged; %s holds the adapter only", out_dir)
        wrapped.save_pretrained(out_dir, state_dict=state_dict)
    else:
        adapter_dir = out_dir / ADAPTER_SUBDIR
        wrapped.save_pretrained(adapter_dir, state_dict=state_dict)
        merged = merged_copy(wrapped, adapter_dir, state_dict, num_labels=1)
        merged.config.pad_token_id = model.config.pad_token_id
        merged.save_pretrained(out_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    if extra is not None:
        tmp = out_dir / (REWARD_MODEL_FILE + ".tmp")
        tmp.write_text(json.dumps(extra, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(tmp, out_dir / REWARD_MODEL_FILE)
    return out_dir
