"""What a model path holds, and loading it: the one place ``rlhf export`` and ``rlhf chat`` decide.

A path may be a stage run folder (``run/model``), a ``save_pretrained`` folder with full weights,
the ``merged/`` folder a LoRA run writes, a peft adapter folder (its base named in
``adapter_config.json``: a ``builtin:*`` name, a local folder or a Hub name), or a reward model
folder from ``rlhf rm`` (a sequence-classification model with a scalar head). A run folder whose
model has a ``merged/`` copy gives that copy: it is the same model, and needs no base to load.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Union

import torch

from rlhf.models.loading import resolve_model_path

Kind = Literal["causal_lm", "lora", "prompt_adapter", "reward_model"]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_EXPECTED = (
    "a run folder (with model/), a model folder (config.json and *.safetensors) "
    "or a LoRA adapter folder (adapter_config.json)"
)
_PROMPT_LEARNING = ("PREFIX_TUNING", "P_TUNING", "PROMPT_TUNING", "MULTITASK_PROMPT_TUNING", "CPT")
_REWARD_MODEL_FILES = ("reward_model.json", "normalization.json")


class ModelFolderError(ValueError):
    """A path that holds no model we can load; the message names the path and what was expected."""


@dataclass(frozen=True)
class ModelSource:
    """A model path, resolved.

    given:     the path as the user gave it.
    folder:    the folder that holds the weights (full model) or the adapter.
    kind:      causal_lm (full weights), lora (adapter to merge), prompt_adapter (prefix / prompt
               tuning: usable through peft, cannot be merged) or reward_model.
    base:      adapters: the base model's local folder or Hub name; None otherwise.
    tokenizer: the folder the tokenizer is loaded from.
    merged_lora: whether the weights come from a LoRA merge (at training time, or here for kind lora).
    """

    given: str
    folder: Path
    kind: Kind
    base: Optional[str]
    tokenizer: str
    merged_lora: bool


def find_model(path: Union[str, Path]) -> ModelSource:
    """Resolve ``path`` (see the module docstring); ModelFolderError when it holds no model."""
    given = str(path)
    if given.startswith("builtin:"):
        try:
            path = resolve_model_path(given)
        except (ValueError, RuntimeError) as err:
            raise ModelFolderError(str(err)) from err
    folder = Path(path)
    if not folder.exists():
        raise ModelFolderError(f"{given} does not exist; expected {_EXPECTED}")
    if not folder.is_dir():
        raise ModelFolderError(f"{given} is a file, not a folder; expected {_EXPECTED}")
    if (folder / "model").is_dir():
        folder = folder / "model"
    merged = folder / "merged"
    if (merged / "config.json").is_file():
        tokenizer = merged if _has_tokenizer(merged) else folder
        return ModelSource(given, merged, "causal_lm", None, str(tokenizer), merged_lora=True)
    if (folder / "adapter_config.json").is_file():
        return _adapter_source(given, folder)
    if (folder / "config.json").is_file():
        if not _has_weights(folder):
            raise ModelFolderError(f"{folder} has config.json but no weights (*.safetensors or *.bin)")
        kind: Kind = "reward_model" if _is_reward_model(folder) else "causal_lm"
        # A reward model trained with LoRA keeps its adapter in adapter/ beside the merged weights.
        merged_lora = (folder / "adapter" / "adapter_config.json").is_file() or (
            folder.name == "merged" and (folder.parent / "adapter_config.json").is_file()
        )
        return ModelSource(given, folder, kind, None, str(folder), merged_lora)
    raise ModelFolderError(f"{given} holds no model: expected {_EXPECTED}")


def _adapter_source(given: str, folder: Path) -> ModelSource:
    try:
        adapter = json.loads((folder / "adapter_config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ModelFolderError(f"{folder / 'adapter_config.json'} is not readable JSON: {err}") from err
    if adapter.get("task_type") == "SEQ_CLS":
        raise ModelFolderError(
            f"{folder} is a prompt-learning reward model adapter, which cannot be merged into weights; "
            "score with it through reward_models.scorer.RewardModel.from_pretrained"
        )
    base = adapter.get("base_model_name_or_path")
    if not base:
        raise ModelFolderError(f"{folder / 'adapter_config.json'} names no base model (base_model_name_or_path)")
    base = resolve_model_path(base)
    # A Hub name is handed on to from_pretrained; a path that is gone is an error to report here.
    looks_local = os.path.isabs(base) or base.startswith((".", "~"))
    if looks_local and not Path(base).expanduser().is_dir():
        raise ModelFolderError(
            f"adapter {folder} names base model {base}, which does not exist; "
            "expected a local model folder, a builtin:* name or a Hub name"
        )
    kind: Kind = "prompt_adapter" if adapter.get("peft_type") in _PROMPT_LEARNING else "lora"
    tokenizer = str(folder) if _has_tokenizer(folder) else base
    return ModelSource(given, folder, kind, base, tokenizer, merged_lora=kind == "lora")


def _has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer_config.json").is_file()


def _has_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("*.bin"))


def _is_reward_model(folder: Path) -> bool:
    if any((folder / name).is_file() for name in _REWARD_MODEL_FILES):
        return True
    try:
        config = json.loads((folder / "config.json").read_text())
    except json.JSONDecodeError as err:
        raise ModelFolderError(f"{folder / 'config.json'} is not valid JSON: {err}") from err
    return any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or ())


def stored_dtype(source: ModelSource) -> torch.dtype:
    """The dtype the weights were saved in (the base's, for an adapter); float32 if unrecorded."""
    folder = Path(source.base) if source.base is not None else source.folder
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return torch.float32
    return DTYPES.get(config.get("dtype") or config.get("torch_dtype"), torch.float32)


def custom_code(source: ModelSource) -> list[str]:
    """``file (auto_map {...})`` for each local config of ``source`` (model folder, tokenizer
    folder, base folder) whose ``auto_map`` names code to import; empty when there is none."""
    folders = {source.folder, Path(source.tokenizer)} | ({Path(source.base)} if source.base else set())
    found = []
    for folder in sorted(folders):
        for name in ("config.json", "tokenizer_config.json"):
            try:
                auto_map = json.loads((folder / name).read_text()).get("auto_map")
            except (OSError, json.JSONDecodeError, AttributeError):
                continue  # not local, absent or unreadable: transformers reports what it cannot load
            if auto_map:
                found.append(f"{folder / name} (auto_map {auto_map})")
    return found


def load_model(source: ModelSource, dtype: torch.dtype, *, merge: bool = True, trust_remote_code: bool = False):
    """The model of ``source`` in ``dtype`` (eval mode): a LoRA adapter merged with peft's
    ``merge_and_unload``, or, for a prompt adapter when ``merge`` is off, the ``PeftModel``.
    Custom code in the folders runs only with ``trust_remote_code`` (always passed as a bool, so
    that transformers never asks on stdin)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    trust = {"trust_remote_code": bool(trust_remote_code)}
    if source.kind == "reward_model":
        return AutoModelForSequenceClassification.from_pretrained(
            source.folder, num_labels=1, dtype=dtype, **trust
        ).eval()
    if source.kind == "causal_lm":
        return AutoModelForCausalLM.from_pretrained(source.folder, dtype=dtype, **trust).eval()
    if source.kind == "prompt_adapter" and merge:
        raise ModelFolderError(
            f"{source.folder} is a prompt-learning (prefix / prompt tuning) adapter, "
            "which cannot be merged into weights; load it with peft.PeftModel instead"
        )
    from peft import PeftModel

    # Merged in float32 and cast afterwards, so that the low-rank update is not rounded twice.
    base = AutoModelForCausalLM.from_pretrained(source.base, dtype=torch.float32, **trust)
    model = PeftModel.from_pretrained(base, source.folder)
    if source.kind == "lora":
        model = model.merge_and_unload()
    return model.to(dtype).eval()


def load_tokenizer(source: ModelSource, *, trust_remote_code: bool = False):
    """The tokenizer saved with the model, as saved (pad token and chat template untouched)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source.tokenizer, trust_remote_code=bool(trust_remote_code))


def first_line(err: BaseException) -> str:
    """The first line of an error's message: transformers' and peft's loading errors run over
    several lines, and the first says what failed."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when available, else CPU; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; expected auto, cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no CUDA device")
    return device


def load_policy(path: str, device: torch.device):
    """(policy, tokenizer) for sampling and scoring: a run folder, model folder, LoRA adapter or
    builtin: name, in float32, dropout off, with the pad token set up as training had it."""
    from rlhf.config.sections import ModelConfig
    from rlhf.models.adapt import disable_dropout
    from rlhf.models.loading import load_tokenizer as load_training_tokenizer

    source = find_model(path)  # ModelFolderError (a ValueError) names the path
    if source.kind == "reward_model":
        raise ValueError(f"{path} is a reward model, not a policy")
    model = load_model(source, torch.float32)
    tokenizer = load_training_tokenizer(ModelConfig(name_or_path=source.tokenizer))
    return disable_dropout(model.to(device).eval()), tokenizer
