"""Configuration of `rlhf pipeline`: which stages run, where, and how their outputs are wired.

A stage section (``sft:``, ``rm:``, ``ppo:``, ``dpo:``) holds ``config:`` (the stage YAML to
start from), the wiring switches ``from_sft`` / ``from_rm``, and any key of that stage's own
config, nested as in the stage YAML (``optim: {lr: 1e-4}``), which overrides the file.
On the command line the same keys are dotted: ``ppo.kl.coef=0.3 dpo.max_steps=100``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional

from rlhf.config.loader import param
from rlhf.eval.run import DEFAULT_PROMPTS
from rlhf.stages.registry import STAGE_ORDER

# keys of a stage section that belong to the pipeline, not to the stage's config
SECTION_KEYS = ("config", "from_sft", "from_rm")


@dataclass(frozen=True)
class PipelineEvalConfig:
    """`rlhf eval` after the stages: every trained policy against the SFT policy."""

    enabled: bool = param(True, "Evaluate the policies once the stages are done (main process only).")
    prompts: str = param(DEFAULT_PROMPTS, "Held-out prompt file.")
    judge: Optional[str] = param(None, "Reward function 'module:function(prompt, response)' used as the judge.")
    reward_model: bool = param(True, "Also score responses with the pipeline's reward model (when there is one).")
    seeds: list[int] = param(
        default_factory=lambda: [0, 1, 2],
        doc="Sampling seeds; one full pass over the prompts each, so the spread between seeds is reported.",
    )
    temperature: float = param(1.0, "Sampling temperature (KL is measured at this temperature).")
    top_p: float = param(1.0, "Nucleus sampling mass.")
    max_new_tokens: int = param(48, "Longest response.")
    batch_size: int = param(50, "Prompts sampled at once.")
    device: Literal["auto", "cpu", "cuda"] = param("auto", "Where evaluation runs (auto = CUDA when available).")


@dataclass(frozen=True)
class PipelineConfig:
    """SFT -> reward model -> PPO, and/or DPO from the SFT model, then evaluation.

    Each stage writes to ``<output_dir>/<stage>`` (unless its section sets ``output_dir``).
    A stage whose folder holds a finished run with the same config, trained from the models its
    upstream stages hand on now, is skipped; an interrupted one resumes from its newest
    checkpoint; one made from other upstream models is replaced (it and the stages after it run
    again); one finished with a different config is an error (remove its folder to run it
    again). Under ``accelerate launch`` every stage runs on all
    processes with the launcher's engine (DDP, ZeRO-1/2/3).

    Stage sections: ``config`` (stage YAML, path relative to the working directory),
    ``from_sft`` (rm, ppo, dpo: start from the SFT stage's model; default true for ppo and dpo,
    false for rm), ``from_rm`` (ppo: score with the rm stage's model, replacing any reward
    functions; default true when the rm stage is part of the pipeline), plus any key of the
    stage's config.
    """

    output_dir: str = param("runs/pipeline", "Folder holding one sub-folder per stage, eval/ and pipeline.json.")
    stages: list[Literal["sft", "rm", "ppo", "dpo"]] = param(
        default_factory=lambda: list(STAGE_ORDER),
        doc="Stages to run, in the order sft, rm, ppo, dpo (a stage left out but finished earlier still "
        "feeds the others).",
    )
    seed: Optional[int] = param(None, "Seed of every stage (null = each stage config's own).")
    group: Optional[str] = param(None, "wandb group of the stage runs (null = the output folder's name).")
    tracking_mode: Optional[Literal["offline", "online", "disabled"]] = param(
        None, "wandb mode of every stage (null = each stage config's own)."
    )
    sft: dict[str, Any] = param(default_factory=dict, doc="SFT stage section.")
    rm: dict[str, Any] = param(default_factory=dict, doc="Reward-model stage section.")
    ppo: dict[str, Any] = param(default_factory=dict, doc="PPO stage section.")
    dpo: dict[str, Any] = param(default_factory=dict, doc="DPO stage section.")
    eval: PipelineEvalConfig = param(default_factory=PipelineEvalConfig, doc="Evaluation after the stages.")

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("stages: give at least one stage")
        if len(set(self.stages)) != len(self.stages):
            raise ValueError(f"stages: {self.stages} names a stage twice")
        ordered = [s for s in STAGE_ORDER if s in self.stages]
        if list(self.stages) != ordered:
            raise ValueError(f"stages: run in the order {ordered}, got {self.stages}")
