"""Configuration of the PPO stage (kept apart so the loop in ppo.py reads top to bottom)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from rlhf.config.loader import param
from rlhf.config.sections import (
    MAX_RECORD_BYTES_DOC,
    REFERENCE_DOC,
    AdaptConfig,
    ReferenceChoice,
    StageConfig,
    check_max_record_bytes,
    check_reference,
    resolve_reference,
)
from rlhf.math.kl import AdaptiveKLController

# Estimators whose baseline is the other responses to the same prompt.
GROUP_BASELINES = ("grpo", "dr_grpo", "rloo", "reinforce_pp_baseline")


@dataclass(frozen=True)
class PPODataConfig:
    """Prompts to roll out on."""

    prompts: list[str] = param(default_factory=lambda: ["builtin:judged-prompts?n=2000"], doc="Prompt files.")
    adapter: Optional[str] = param(None, "Source format adapter (e.g. 'hh-rlhf' keeps the prompts of pairs).")
    field_map: dict[str, str] = param(default_factory=dict, doc="Canonical field -> column name.")
    max_prompt_length: int = param(256, "Prompts longer than this many tokens are rejected (quarantined).")
    chat_template: bool = param(True, "Render prompts with the tokenizer's chat template (as SFT does).")
    strict: bool = param(False, "Fail on the first rejected record.")
    max_record_bytes: int = param(1 << 20, MAX_RECORD_BYTES_DOC)

    def __post_init__(self) -> None:
        check_max_record_bytes(self.max_record_bytes)


@dataclass(frozen=True)
class RolloutConfig:
    """Sampling the responses."""

    batch_size: int = param(
        32, "Prompts per PPO step, over all processes; batch_size x group_size samples (a multiple of the mini-batch)."
    )
    group_size: int = param(
        1,
        "Responses sampled per prompt (G). The group-baseline estimators (ppo.advantage grpo, dr_grpo, rloo, "
        "reinforce_pp_baseline) need G >= 2: a prompt's G responses are each other's baseline.",
    )
    max_new_tokens: int = param(48, "Longest response.")
    temperature: float = param(1.0, "Sampling temperature (log-probs are taken at the same temperature).")
    top_k: int = param(0, "Sample from the k most likely tokens (0 = all).")
    top_p: float = param(1.0, "Nucleus sampling mass (1 = all).")
    generation_batch_size: int = param(64, "Prompts generated at once on each process.")
    missing_eos_score: Optional[float] = param(
        -1.0, "Score of a response that never emits EOS, replacing the reward (null keeps the reward)."
    )
    log_samples_every: int = param(10, "Write a few generations to samples.jsonl / wandb every N steps (0 = never).")
    log_samples: int = param(4, "How many generations to write each time.")


@dataclass(frozen=True)
class RewardConfig:
    """Where scores come from: a reward model, reward functions, or a weighted sum of them."""

    model: Optional[str] = param(None, "Reward model folder written by `rlhf rm`.")
    normalize: bool = param(True, "Apply the reward model's saved normalisation (mean 0, std 1 on SFT samples).")
    functions: list[str] = param(
        default_factory=list, doc="Python reward functions 'module:function(prompt, response)'."
    )
    weights: list[float] = param(
        default_factory=list, doc="One weight per source: the model first, then the functions (empty = all 1)."
    )
    clip: Optional[float] = param(None, "Clip scores to [-clip, clip].")
    whiten: bool = param(
        False, "Scale scores to unit variance over the rollout batch (all processes), keeping their mean."
    )


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

    init_from: Optional[str] = param(
        None,
        "Reward model (or causal LM) folder to start from; null = the policy's starting weights with a new value head.",
    )
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
    whiten_advantages: bool = param(
        True, "gae: whiten advantages over valid tokens of the batch (all processes); reinforce_pp* always do."
    )
    advantage: Literal["gae", "grpo", "dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline"] = param(
        "gae",
        "Advantage estimator. gae: a critic (value model) and GAE. Critic-free (no value model is built, the critic "
        "section is unused): grpo (r - group mean) / group std; dr_grpo r - group mean; rloo r - mean of the "
        "group's other responses; reinforce_pp per-token returns of score - KL, whitened over the batch; "
        "reinforce_pp_baseline the same with the score minus its group's mean. With kl.in_loss=false the "
        "sequence estimators take score - kl.coef x the response's summed KL as reward.",
    )
    clip_eps_high: Optional[float] = param(
        None, "Upper policy ratio clip range (DAPO's clip-higher, e.g. 0.28); null = clip_eps."
    )
    loss_aggregation: Literal["token_mean", "sequence_mean", "constant"] = param(
        "token_mean",
        "How token losses combine: token_mean over the global batch's tokens (PPO, DAPO); sequence_mean, each "
        "response's token mean averaged over responses (the GRPO paper); constant, token sum / (responses x "
        "rollout.max_new_tokens) (Dr. GRPO).",
    )
    target_kl: Optional[float] = param(
        None, "Stop the epochs of a step early when the approximate KL to the rollout policy exceeds this."
    )


@dataclass(frozen=True)
class PPOConfig(StageConfig):
    """PPO with the clipped surrogate objective. One step = one rollout batch + its PPO epochs;
    the mini-batch of an optimizer step is batch.micro_batch_size x batch.grad_accum x processes."""

    output_dir: str = param("runs/ppo", "Folder for the model, checkpoints, logs, samples and plots.")
    max_steps: int = param(100, "PPO steps (rollout + update); must be > 0.")
    data: PPODataConfig = param(default_factory=PPODataConfig, doc="Prompts.")
    rollout: RolloutConfig = param(default_factory=RolloutConfig, doc="Generation.")
    reward: RewardConfig = param(default_factory=RewardConfig, doc="Scores.")
    kl: KLConfig = param(default_factory=KLConfig, doc="KL penalty.")
    critic: CriticConfig = param(default_factory=CriticConfig, doc="Value model.")
    ppo: PPOLossConfig = param(default_factory=PPOLossConfig, doc="PPO update.")
    reference: ReferenceChoice = param("auto", REFERENCE_DOC)

    def __post_init__(self) -> None:
        # Combinations checked when the config is built, before a run writes anything; the
        # mini-batch check that involves the number of processes is repeated when the run starts.
        if self.max_steps <= 0:
            raise ValueError(f"max_steps must be > 0 for PPO, got {self.max_steps}")
        for key, value in (
            ("rollout.batch_size", self.rollout.batch_size),
            ("rollout.generation_batch_size", self.rollout.generation_batch_size),
            ("batch.micro_batch_size", self.batch.micro_batch_size),
            ("batch.grad_accum", self.batch.grad_accum),
        ):
            if value < 1:
                raise ValueError(f"{key} must be >= 1, got {value}")
        if self.rollout.group_size < 1:
            raise ValueError(f"rollout.group_size must be >= 1, got {self.rollout.group_size}")
        if self.ppo.advantage in GROUP_BASELINES and self.rollout.group_size < 2:
            raise ValueError(
                f"ppo.advantage={self.ppo.advantage} needs rollout.group_size >= 2 (a prompt's responses are "
                f"each other's baseline), got {self.rollout.group_size}"
            )
        if self.ppo.clip_eps_high is not None and self.ppo.clip_eps_high < 0:
            raise ValueError(f"ppo.clip_eps_high must be >= 0, got {self.ppo.clip_eps_high}")
        local_mini = self.batch.micro_batch_size * self.batch.grad_accum
        if self.samples_per_step % local_mini:
            raise ValueError(
                f"rollout.batch_size={self.rollout.batch_size} x rollout.group_size={self.rollout.group_size} = "
                f"{self.samples_per_step} samples must be a multiple "
                f"of the mini-batch batch.micro_batch_size x batch.grad_accum = {local_mini} (x the number of "
                "processes, checked when the run starts)"
            )
        if self.rollout.temperature <= 0:
            raise ValueError(
                f"rollout.temperature must be > 0 (log-probs are taken at that temperature), "
                f"got {self.rollout.temperature}"
            )
        check_reference(
            self.reference, self.model.adapt.strategy, stage="PPO", allowed=("auto", "copy", "lora_disabled")
        )
        sources = ([f"reward.model={self.reward.model}"] if self.reward.model else []) + list(self.reward.functions)
        if self.reward.weights and len(self.reward.weights) != len(sources):
            raise ValueError(
                f"reward.weights has {len(self.reward.weights)} entries for {len(sources)} reward "
                f"source(s) (reward.model first, then reward.functions: {', '.join(sources) or 'none'})"
            )
        self._check_kl()

    @property
    def samples_per_step(self) -> int:
        """Responses sampled per step over all processes: prompts x group size."""
        return self.rollout.batch_size * self.rollout.group_size

    @property
    def has_critic(self) -> bool:
        """Whether the estimator needs a value model (gae only)."""
        return self.ppo.advantage == "gae"

    def resolved_reference(self) -> str:
        """``reference`` with auto made concrete: lora_disabled for LoRA, else copy."""
        return resolve_reference(self.reference, self.model.adapt.strategy, full_default="copy")

    def _check_kl(self) -> None:
        kl = self.kl
        if kl.controller == "fixed":
            if kl.coef < 0:
                raise ValueError(f"kl.coef must be >= 0, got {kl.coef}")
            return
        for key, value in (("kl.coef", kl.coef), ("kl.target", kl.target), ("kl.horizon", kl.horizon)):
            if value <= 0:
                raise ValueError(f"{key} must be > 0 with kl.controller=adaptive, got {value}")
        # Each step moves the coefficient by a factor 1 + e * batch / horizon with |e| <= clip
        # (rlhf.math.kl.AdaptiveKLController); at clip * batch / horizon >= 1 it could reach 0 or flip sign.
        clip = AdaptiveKLController.PROPORTIONAL_ERROR_CLIP
        smallest = clip * self.samples_per_step
        if kl.horizon <= smallest:
            raise ValueError(
                f"kl.horizon={kl.horizon} is too small for {self.samples_per_step} samples per step: "
                f"the adaptive KL coefficient changes by up to {clip:g} x samples / horizon per step, "
                f"which must stay below 1; use kl.horizon > {smallest:g}"
            )
