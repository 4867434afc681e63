"""The one list of stages: name -> module, config class and description, in pipeline order.

Stage modules are imported only when a stage is asked for (``config_class`` / ``run_function``),
so that listing the stages, as ``rlhf --help`` does, pulls in no model code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Stage:
    name: str
    module: str
    config: str  # class name in ``module``
    description: str


STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in (
        Stage("sft", "rlhf.stages.sft", "SFTConfig", "supervised fine-tuning on prompt/completion or chat data"),
        Stage("rm", "rlhf.stages.rm", "RMConfig", "train a reward model on pairwise, ranked or rated preferences"),
        Stage(
            "ppo",
            "rlhf.stages.ppo",
            "PPOConfig",
            "RLHF with PPO (clipped surrogate) against a reward model or function",
        ),
        Stage(
            "dpo", "rlhf.stages.dpo", "DPOConfig", "direct preference optimisation (alternative to reward model + PPO)"
        ),
    )
}
STAGE_ORDER: tuple[str, ...] = tuple(STAGES)


def _stage(name: str) -> Stage:
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; expected one of {', '.join(STAGES)}")
    return STAGES[name]


def config_class(name: str) -> type:
    """The config dataclass of stage ``name``."""
    stage = _stage(name)
    return getattr(importlib.import_module(stage.module), stage.config)


def run_function(name: str) -> Callable[[Any], dict]:
    """``run(cfg) -> summary`` of stage ``name``."""
    return importlib.import_module(_stage(name).module).run


def input_models(cfg: Any) -> dict[str, str]:
    """Role (model, reference, reward_model, critic) -> model that the stage config ``cfg``
    starts from; the stage's summary records their fingerprints as ``inputs``."""
    from rlhf.stages.inputs import input_models as models

    return models(cfg)
