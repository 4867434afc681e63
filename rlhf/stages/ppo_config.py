"""Configuration of the PPO stage (kept apart so the loop in ppo.py reads top to bottom)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from rlhf.config import param
from rlhf.sections import AdaptConfig, StageConfig


@dataclass(frozen=True)
class PPODataConfig:
    """Prompts to roll out on."""

    prompts: list[str] = param(default_factory=lambda: ["builtin:judged-prompts?n=2000"], doc="Prompt files.")
    adapter: Optional[str] = param(None, "Source format adapter (e.g. 'hh-rlhf' keeps the prompts of pairs).")
    field_map: dict[str, str] = param(default_factory=dict, doc="Canonical field -> column name.")
    max_prompt_length: int = param(256, "Prompts longer than this many tokens are rejected (quarantined).")
    chat_template: bool = param(True, "Render prompts with the tokenizer's chat template (as SFT does).")
    strict: bool = param(False, "Fail on the first rejected record.")


@dataclass(frozen=True)
class RolloutConfig:
    """Sampling the responses."""

    batch_size: int = param(32, "Prompts per PPO step, over all processes (a multiple of the mini-batch).")
    max_new_tokens: int = param(48, "Longest response.")
    temperature: float = param(1.0, "Sampling temperature (log-probs are taken at the same temperature).")
    top_k: int = param(0, "Sample from the k most likely tokens (0 = all).")
    top_p: float = param(1.0, "Nucleus sampling mass (1 = all).")
    generation_batch_size: int = param(64, "Prompts generated at once on each process.")
    missing_eos_score: Optional[float] = param(
        -1.0, "Score of a response that never emits EOS, replacing the reward (null keeps the reward).")
    log_samples_every: int = param(10, "Write a few generations to samples.jsonl / wandb every N steps (0 = never).")
    log_samples: int = param(4, "How many generations to write each time.")


@dataclass(frozen=True)
class RewardConfig:
    """Where scores come from: a reward model, reward functions, or a weighted sum of them."""

    model: Optional[str] = param(None, "Reward model folder written by `rlhf rm`.")
    normalize: bool = param(True, "Apply the reward model's saved normalisation (mean 0, std 1 on SFT samples).")
    functions: list[str] = param(default_factory=list, doc="Python reward functions 'module:function(prompt, response)'.")
    weights: list[float] = param(default_factory=list, doc="One weight per source: the model first, then the "
                                 "functions (empty = all 1).")
    clip: Optional[float] = param(None, "Clip scores to [-clip, clip].")
    whiten: bool = param(False, "Whiten scores over the rollout batch (all processes).")


@dataclass(frozen=True)
class KLConfig:
    """The KL penalty to the reference policy."""

    coef: float = param(0.05, "KL coefficient (initial value when adaptive).")
    controller: Literal["fixed", "adaptive"] = param("fixed", "Fixed coefficient or Ziegler et al.'s adaptive one.")
    target: float = param(6.0, "Adaptive: target KL per response (nats).")
    horizon: int = param(10000, "Adaptive: horizon in samples.")
    estimator: Literal["k1", "k3", "abs", "mse"] = param("k1", "Per-token estimator of the penalty.")
    in_loss: bool = param(False, "Add coef * k3 KL to the loss instead of penalising the reward.")


@dataclass(frozen=True)
class CriticConfig:
    """The value model."""

    init_from: Optional[str] = param(None, "Reward model (or causal LM) folder to start from; null = the "
                                     "policy's starting weights with a new value head.")
    adapt: AdaptConfig = param(default_factory=AdaptConfig, doc="How the critic is trained (full, LoRA, ...).")
    lr: Optional[float] = param(None, "Critic peak learning rate (null = optim.lr).")


@dataclass(frozen=True)
class PPOLossConfig:
    """The update."""

    epochs: int = param(4, "PPO epochs over each rollout batch (reshuffled every epoch).")
    clip_eps: float = param(0.2, "Policy ratio clip range.")
    value_clip_eps: float = param(0.2, "Value clip range around the rollout's values.")
    vf_coef: float = param(0.1, "Weight of the value loss.")
    entropy_coef: float = param(0.0, "Entropy bonus weight.")
    gamma: float = param(1.0, "Discount.")
    lam: float = param(0.95, "GAE lambda.")
    whiten_advantages: bool = param(True, "Whiten advantages over valid tokens of the batch (all processes).")
    target_kl: Optional[float] = param(None, "Stop the epochs of a step early when the approximate KL to the "
                                       "rollout policy exceeds this.")


@dataclass(frozen=True)
class PPOConfig(StageConfig):
    """PPO with the clipped surrogate objective. One step = one rollout batch + its PPO epochs;
    the mini-batch of an optimizer step is batch.micro_batch_size x batch.grad_accum x processes."""

    output_dir: str = param("runs/ppo", "Folder for the model, checkpoints, logs, samples and plots.")
    max_steps: int = param(100, "PPO steps (rollout + update).")
    data: PPODataConfig = param(default_factory=PPODataConfig, doc="Prompts.")
    rollout: RolloutConfig = param(default_factory=RolloutConfig, doc="Generation.")
    reward: RewardConfig = param(default_factory=RewardConfig, doc="Scores.")
    kl: KLConfig = param(default_factory=KLConfig, doc="KL penalty.")
    critic: CriticConfig = param(default_factory=CriticConfig, doc="Value model.")
    ppo: PPOLossConfig = param(default_factory=PPOLossConfig, doc="PPO update.")
    reference: Literal["auto", "copy", "lora_disabled"] = param(
        "auto", "copy: frozen copy of the policy; lora_disabled: the policy with adapters off (LoRA only, one "
        "base model in memory); auto: lora_disabled for LoRA, else copy.")
