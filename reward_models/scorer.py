"""Scoring with a trained reward model folder: ``RewardModel.from_pretrained(path).score(prompts, responses)``.

Texts are rendered and tokenised exactly as in training (:func:`reward_models.model.render_for_reward`,
:func:`reward_models.model.encode_for_reward`), right-padded, and scored in eval mode under
``no_grad``. ``normalization.json`` (gain, bias) is applied when present, unless asked not to.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Optional, Union

import torch

from reward_models.model import (
    REWARD_MODEL_FILE,
    Prompt,
    ScalarRewardModel,
    encode_for_reward,
    render_for_reward,
)
from reward_models.normalization import apply_normalization, load_normalization

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _default_max_length(tokenizer, config) -> Optional[int]:
    limits = [getattr(config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    limits = [int(n) for n in limits if isinstance(n, int) and 0 < n < 1_000_000]  # tokenizers use 1e30 for "none"
    return min(limits) if limits else None


def _load_seqcls(path: Path, dtype: torch.dtype, trust_remote_code: bool):
    from transformers import AutoModelForSequenceClassification

    if (path / "config.json").is_file():
        return AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=1, dtype=dtype, trust_remote_code=trust_remote_code
        )
    if (path / "adapter_config.json").is_file():
        # A prompt-learning (prefix) reward model: peft folder on top of its base.
        from peft import PeftConfig, PeftModel

        base_path = PeftConfig.from_pretrained(path).base_model_name_or_path
        base = AutoModelForSequenceClassification.from_pretrained(
            base_path, num_labels=1, dtype=dtype, trust_remote_code=trust_remote_code
        )
        return PeftModel.from_pretrained(base, path)
    raise FileNotFoundError(f"{path} holds neither a model (config.json) nor an adapter (adapter_config.json)")


class RewardModel:
    """A reward model ready to score (eval mode, no gradients)."""

    def __init__(
        self,
        model: ScalarRewardModel,
        tokenizer,
        *,
        normalization: Optional[dict] = None,
        chat_template: bool = True,
        batch_size: int = 16,
        max_length: Optional[int] = None,
        device: Union[str, torch.device, None] = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model.eval()  # eval() switches dropout off
        self.tokenizer = tokenizer
        self.normalization = normalization
        self.chat_template = chat_template
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_token_id = 0 if pad is None else pad  # padding is masked: any id would do

    @classmethod
    def from_pretrained(
        cls,
        path: Union[str, Path],
        *,
        device: Union[str, torch.device, None] = None,
        dtype: Union[str, torch.dtype, None] = None,
        batch_size: int = 16,
        max_length: Optional[int] = None,
        trust_remote_code: bool = False,
    ) -> RewardModel:
        """Load a folder written by :func:`reward_models.model.save_reward_model` (or any seq-cls folder).

        ``device``: default CUDA when available. ``dtype``: default float32. ``max_length``:
        default ``reward_model.json``'s ``max_length`` if there, else the model's position limit.
        """
        from transformers import AutoTokenizer

        path = Path(path).expanduser()
        # Checked here: transformers would take a missing folder for a Hub name and say so.
        if not path.exists():
            raise FileNotFoundError(
                f"reward model folder {path} does not exist (is it the output of a stage "
                "that has not run yet?); expected a folder written by `rlhf rm`"
            )
        if not path.is_dir():
            raise NotADirectoryError(f"reward model {path} is a file; expected a folder written by `rlhf rm`")
        if isinstance(dtype, str):
            if dtype not in _DTYPES:
                raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(_DTYPES)}")
            dtype = _DTYPES[dtype]
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        seqcls = _load_seqcls(path, dtype or torch.float32, trust_remote_code)
        if tokenizer.pad_token_id is not None:
            seqcls.config.pad_token_id = tokenizer.pad_token_id
        meta_file = path / REWARD_MODEL_FILE
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        if max_length is None:
            max_length = meta.get("max_length") or _default_max_length(tokenizer, seqcls.config)
        model = ScalarRewardModel(seqcls).to(device)
        model.requires_grad_(False)
        return cls(
            model,
            tokenizer,
            normalization=load_normalization(path),
            chat_template=bool(meta.get("chat_template", True)),
            batch_size=batch_size,
            max_length=max_length,
            device=device,
        )

    def render(self, prompt: Prompt, response: str) -> str:
        return render_for_reward(self.tokenizer, prompt, response, chat_template=self.chat_template)

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str], *, normalize: bool = True) -> list[float]:
        """One reward per (prompt, response); a prompt is a string or a list of chat messages."""
        if isinstance(prompts, str) or isinstance(responses, str):
            raise TypeError("score() takes lists of prompts and responses; wrap a single pair in lists")
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        return self.score_texts([self.render(p, r) for p, r in zip(prompts, responses)], normalize=normalize)

    @torch.no_grad()
    def score_texts(self, texts: Sequence[str], *, normalize: bool = True) -> list[float]:
        """Rewards of already rendered texts (see :func:`reward_models.model.render_for_reward`)."""
        encoded = [encode_for_reward(self.tokenizer, text, self.max_length) for text in texts]
        # Batches of similar lengths waste little on padding; the reward does not depend on it.
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        rewards = [0.0] * len(encoded)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            input_ids, attention_mask = self._right_pad([encoded[i] for i in rows])
            for i, value in zip(rows, self.model(input_ids, attention_mask).tolist()):
                rewards[i] = value
        if normalize and self.normalization is not None:
            rewards = apply_normalization(rewards, self.normalization)
        return rewards

    def _right_pad(self, sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(1, max(len(s) for s in sequences))
        input_ids = torch.full((len(sequences), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            attention_mask[row, : len(seq)] = 1
        return input_ids.to(self.device), attention_mask.to(self.device)
