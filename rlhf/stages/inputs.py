"""The models a stage starts from, by role, and their fingerprints as recorded in its summary.

Roles: ``model`` (the policy or reward model it initialises from), ``reference`` (PPO and DPO:
the starting policy again, unless DPO runs reference-free), ``reward_model`` (PPO's
``reward.model``) and ``critic`` (PPO's ``critic.init_from``, when set). The pipeline compares
these fingerprints with the upstream stages' model folders to tell a finished stage from one
trained on models that have since changed.
"""

from __future__ import annotations

from rlhf.models.fingerprint import model_fingerprint


def input_models(cfg) -> dict[str, str]:
    """Role -> model name or folder of the stage config ``cfg`` (no file is read)."""
    models = {"model": cfg.model.name_or_path}
    resolved_reference = getattr(cfg, "resolved_reference", None)
    if resolved_reference is not None and resolved_reference() != "none":
        models["reference"] = cfg.model.name_or_path
    reward_model = getattr(getattr(cfg, "reward", None), "model", None)
    if reward_model:
        models["reward_model"] = reward_model
    critic = getattr(getattr(cfg, "critic", None), "init_from", None)
    if critic:
        models["critic"] = critic
    return models


def input_fingerprints(cfg) -> dict[str, dict[str, str]]:
    """Role -> {name_or_path, fingerprint}: what a stage's summary records as its ``inputs``."""
    revision = cfg.model.revision
    return {
        role: {
            "name_or_path": path,
            "fingerprint": model_fingerprint(path, revision if role in ("model", "reference") else None),
        }
        for role, path in input_models(cfg).items()
    }
