"""Loading models and tokenizers (local folder, Hub name or ``builtin:*``), and saving them.

Adaptation (full, freeze, LoRA, QLoRA, prefix) is in ``rlhf.models.adapt``. Knows nothing of accelerate, DeepSpeed or wandb: the backend hands ``save_model`` an unwrapped
model and, under ZeRO-3, a gathered ``state_dict``.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from rlhf.config.sections import ModelConfig
from rlhf.models.adapt import quantization_config_for
from rlhf.models.builtin import ensure_builtin
from rlhf.runtime.placement import local_device_map

logger = logging.getLogger(__name__)

_BUILTIN_PREFIX = "builtin:"
# Existing special tokens that may serve as pad when a tokenizer has none or uses EOS for it.
_PAD_CANDIDATES = ("<|pad|>", "<pad>", "[PAD]", "<|finetune_right_pad_id|>", "<|endoftext|>")


def cache_dir() -> Path:
    """Where built-in models are cached: ``$RLHF_CACHE`` or ``~/.cache/rlhf``."""
    return Path(os.environ.get("RLHF_CACHE") or Path.home() / ".cache" / "rlhf")


def resolve_model_path(name_or_path: str) -> str:
    """A local folder for ``builtin:*`` names (built on first use); anything else unchanged.

    ``~`` is expanded (transformers would not). Nothing is checked here: the loaders below call
    :func:`check_model_path` first.
    """
    if name_or_path.startswith("~"):
        return os.path.expanduser(name_or_path)
    if not name_or_path.startswith(_BUILTIN_PREFIX):
        return name_or_path
    return str(ensure_builtin(name_or_path[len(_BUILTIN_PREFIX) :], cache_dir()))


def looks_like_local_path(name_or_path: str) -> bool:
    """Whether ``name_or_path`` can only mean a local folder, not a Hub repository.

    A Hub id is ``name`` or ``owner/name``: at most one '/', never a backslash. So a name is a
    local path when it is absolute, is or starts with ``.``, ``..`` or ``~`` (``./x``, ``../x``,
    ``~/x``), contains a backslash, has more than one '/'
    (``runs/sft-tiny/model``), or has exactly one '/' and its first component exists here
    (``runs/model`` next to a ``runs`` folder). ``HuggingFaceTB/SmolLM2-135M-Instruct`` and
    ``gpt2`` stay Hub names (unless an ``HuggingFaceTB`` folder exists in the working directory).
    """
    name = name_or_path
    if name.startswith(_BUILTIN_PREFIX):
        return False
    if os.path.isabs(name) or name in (".", "..", "~") or name.startswith(("./", "../", "~/")):
        return True
    if "\\" in name or name.count("/") > 1:  # a backslash also catches Windows paths
        return True
    return "/" in name and os.path.exists(name.split("/", 1)[0])


def check_model_path(name_or_path: str, key: str = "model.name_or_path") -> None:
    """Fail early, naming the config ``key``, when ``name_or_path`` is a local path (see
    :func:`looks_like_local_path`) that does not exist or is not a folder.

    Without this, transformers takes a missing folder for a Hub name and fails with "Repo id must
    be in the form 'repo_name' or 'namespace/repo_name'", which hides the usual cause: a path to
    the output of a stage that has not run yet.
    """
    if not looks_like_local_path(name_or_path):
        return
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return
    if path.exists():
        raise NotADirectoryError(
            f"{key}: {name_or_path} is a file; expected a model folder "
            "(save_pretrained output), a Hub name ('owner/name') or a builtin:* name"
        )
    raise FileNotFoundError(
        f"{key}: model folder {name_or_path} does not exist (is it the output of a stage "
        "that has not run yet?); expected a model folder (save_pretrained output), "
        "a Hub name ('owner/name') or a builtin:* name"
    )


# ---------------------------------------------------------------------------------------------
# loading


def load_tokenizer(cfg: ModelConfig, *, padding_side: str = "right"):
    """The model's tokenizer, with a pad token (distinct from EOS whenever the vocabulary allows).

    Right padding is the default because scoring and training read positions left to right;
    generation wants ``padding_side="left"``.
    """
    from transformers import AutoTokenizer

    check_model_path(cfg.name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(
        resolve_model_path(cfg.name_or_path),
        revision=_revision(cfg),
        trust_remote_code=cfg.trust_remote_code,
    )
    tokenizer.padding_side = padding_side
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        _choose_pad_token(tokenizer)
    return tokenizer


def _choose_pad_token(tokenizer) -> None:
    vocab = tokenizer.get_vocab()
    candidates = [tokenizer.unk_token, *_PAD_CANDIDATES]
    for token in candidates:
        if token is not None and token in vocab and token != tokenizer.eos_token:
            tokenizer.pad_token = token
            return
    # Adding a token would change the vocabulary size behind the model's back, so pad stays EOS.
    # That is safe because padding is found by position, never by token id: attention masks,
    # SFT / DPO labels (-100 at padded positions; an EOS that ends a reply is labelled), PPO
    # response masks (kept up to and including the first EOS) and the reward at the last
    # attended token.
    why = (
        "padding is masked by position (attention mask, labels, response mask), never by token id, "
        "so an EOS that ends a reply is still learned and generation still stops at it"
    )
    if tokenizer.pad_token is None:
        logger.warning("tokenizer has no pad token and no spare special token; padding with EOS (%s)", why)
        tokenizer.pad_token = tokenizer.eos_token
    else:
        logger.warning(
            "tokenizer pads with its EOS token %r and has no spare special token to pad with instead; "
            "keeping pad == eos (%s)",
            tokenizer.eos_token,
            why,
        )


def load_causal_lm(cfg: ModelConfig, *, dtype: Union[str, torch.dtype, None] = None):
    """``AutoModelForCausalLM.from_pretrained`` with the config's options; no network for built-ins.

    ``dtype`` overrides ``cfg.dtype``; ``"auto"`` means float32 (mixed precision casts on the fly).
    Dropout is left as configured: each stage decides whether it trains with dropout.
    """
    from transformers import AutoModelForCausalLM

    check_model_path(cfg.name_or_path)
    kwargs: dict[str, Any] = {
        "revision": _revision(cfg),
        "trust_remote_code": cfg.trust_remote_code,
        "dtype": _torch_dtype(dtype if dtype is not None else cfg.dtype),
    }
    if cfg.attn_implementation:
        kwargs["attn_implementation"] = cfg.attn_implementation
    if cfg.adapt.strategy == "qlora":
        kwargs["quantization_config"] = quantization_config_for(cfg.adapt)
        # bitsandbytes weights live on one GPU; each process of a launch takes its own.
        kwargs["device_map"] = local_device_map()
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(cfg.name_or_path), **kwargs)
    if cfg.gradient_checkpointing:
        # transformers renamed gradient -> activation checkpointing (old names warn, gone in v6).
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False  # the cache is useless when activations are recomputed
    return model


def _revision(cfg: ModelConfig) -> Optional[str]:
    return None if cfg.name_or_path.startswith(_BUILTIN_PREFIX) else cfg.revision


def _torch_dtype(dtype: Union[str, torch.dtype]) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"auto": torch.float32, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in names:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(names)}")
    return names[dtype]


# ---------------------------------------------------------------------------------------------
# saving


def save_model(
    model: nn.Module,
    tokenizer,
    out_dir: Union[str, Path],
    *,
    merge: bool = False,
    state_dict: Optional[dict] = None,
    is_main_process: bool = True,
) -> Path:
    """Write ``out_dir`` as a ``save_pretrained`` folder (safetensors) with the tokenizer.

    A peft model writes its adapter there and, with ``merge``, merged full weights in
    ``out_dir/merged``. ``model`` must be unwrapped; under ZeRO-3 its parameters are shards, so
    the backend passes the gathered full ``state_dict`` (same keys as ``model.state_dict()``).
    Only the main process writes.
    """
    out_dir = Path(out_dir)
    if not is_main_process:
        return out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    from peft import PeftModel

    # Training switches the KV cache off (activation checkpointing); whoever loads the saved
    # model next generates with it, so the saved config has it on.
    config = model.get_base_model().config if isinstance(model, PeftModel) else model.config
    training_value, config.use_cache = config.use_cache, True
    try:
        model.save_pretrained(out_dir, state_dict=state_dict)
    finally:
        config.use_cache = training_value
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    if merge and isinstance(model, PeftModel):
        merged = merged_copy(model, out_dir, state_dict)
        if merged is not None:
            merged.config.use_cache = True
            merged.save_pretrained(out_dir / "merged")
            if tokenizer is not None:
                tokenizer.save_pretrained(out_dir / "merged")
    return out_dir


def merged_copy(model, adapter_dir: Path, state_dict: Optional[dict] = None, **reload_kwargs):
    """Adapter merged into the base, built apart from ``model`` so that training goes on untouched.

    Returns None for prompt-learning adapters (nothing to merge). ``reload_kwargs`` go to
    ``from_pretrained`` when a quantised base must be reloaded unquantised (e.g. ``num_labels``).
    """
    from peft import PeftModel

    peft_config = model.peft_config[model.active_adapter]
    if peft_config.is_prompt_learning:
        logger.warning("%s adapters cannot be merged into the weights; wrote the adapter only", peft_config.peft_type)
        return None
    base = model.get_base_model()
    if getattr(base, "is_loaded_in_4bit", False) or getattr(base, "is_loaded_in_8bit", False):
        # Merging into quantised weights would round the update away: reload the base unquantised.
        fresh = type(base).from_pretrained(peft_config.base_model_name_or_path, dtype=torch.bfloat16, **reload_kwargs)
        return PeftModel.from_pretrained(fresh, adapter_dir).merge_and_unload()
    if state_dict is None:
        return copy.deepcopy(model).merge_and_unload()
    # ZeRO-3 shards cannot be deep-copied into a whole model; rebuild one and fill it from the
    # gathered weights. Only this process builds it, so DeepSpeed's zero.Init must stay out of it:
    # a sequence classifier's constructor calls from_config for its backbone, which would
    # partition the weights with collectives that no other process joins.
    from rlhf.runtime.backend import unpartitioned_loading

    with unpartitioned_loading():
        fresh = type(base)(copy.deepcopy(base.config)).to(base.dtype)
    rebuilt = type(model)(fresh, copy.deepcopy(peft_config), adapter_name=model.active_adapter)
    rebuilt.load_state_dict(state_dict)
    return rebuilt.merge_and_unload()
