"""Policy and critic as one module, so one engine (DDP or one DeepSpeed ZeRO engine) trains both.

Accelerate drives one DeepSpeed engine per model and optimizer pair; holding the policy and the
value model in one ``nn.Module`` with one optimizer (the critic's parameters in their own LR
group) keeps PPO on the same backend path as every other stage. A single forward returns the
policy's logits and the critic's values for the same tokens, so DDP sees both used in every pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Optional

import torch
from torch import nn

from rlhf.math.ops import token_logprobs
from rlhf.rollout.sampling import Samples, predicting_logits, response_logprobs


class ActorCritic(nn.Module):
    """The policy and its value model; ``critic`` None for the critic-free estimators (no values)."""

    def __init__(self, policy: nn.Module, critic: Optional[nn.Module]) -> None:
        super().__init__()
        self.policy = policy
        self.critic = critic

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        prompt_length: int,
        temperature: float = 1.0,
        with_values: bool = True,
    ):
        """(logits [B, R, V] / temperature, values [B, R] or None) for the R response positions.

        The logits at position t predict token t + 1, and the value at t is V(tokens up to t):
        both are read from one position before each response token.
        """
        logits = predicting_logits(self.policy, input_ids, attention_mask, prompt_length).float()
        if temperature != 1.0:
            logits = logits / temperature
        values = None
        if with_values and self.critic is not None:
            values = self.critic(input_ids, attention_mask, per_token=True)[:, prompt_length - 1 : -1]
        return logits, values


def forward_samples(model, samples: Samples, temperature: float, with_values: bool = True):
    """``model`` (an ActorCritic, possibly wrapped by the engine) on a batch of samples."""
    return model(samples.input_ids, samples.attention_mask, samples.prompt_length, temperature, with_values)


def load_critic(name_or_path: str, adapt, *, pad_token_id: int, vocab_size: int, gradient_checkpointing: bool):
    """The value model: a reward model folder (the usual choice) or the policy's own weights with a
    new scalar head; it must read the policy's tokens, so it must share the policy's vocabulary."""
    from reward_models.model import load_reward_model
    from rlhf.config.sections import ModelConfig
    from rlhf.models.adapt import disable_dropout

    critic = load_reward_model(
        ModelConfig(name_or_path=name_or_path, adapt=adapt, gradient_checkpointing=gradient_checkpointing),
        pad_token_id=pad_token_id,
    )
    if not critic.is_decoder:
        raise ValueError(
            f"critic.init_from={name_or_path!r} is an encoder; the critic needs a causal-LM backbone "
            "that reads the policy's tokens"
        )
    critic_vocab = critic.config.vocab_size
    if critic_vocab < vocab_size:
        raise ValueError(
            f"critic.init_from={name_or_path!r} has a vocabulary of {critic_vocab} tokens but the policy's "
            f"tokenizer has {vocab_size}: the critic must share the policy's tokenizer"
        )
    return disable_dropout(critic)


def reference_logprobs(
    model,
    reference: Optional[nn.Module],
    samples: Samples,
    temperature: float,
    unwrap,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
):
    """Response log-probs [B, R] under the reference: a frozen copy, or the policy with its LoRA
    adapters disabled (``reference`` None), run through the engine so ZeRO-3 can gather weights.

    ``autocast`` gives the mixed precision the engine runs the policy under: the copy runs
    under it too, so that before any update it gives exactly the policy's log-probs."""
    if reference is not None:
        with autocast():
            return response_logprobs(reference, samples, temperature)
    with unwrap(model).policy.disable_adapter():
        logits, _ = forward_samples(model, samples, temperature, with_values=False)
    return token_logprobs(logits, samples.response_ids) * samples.response_mask
