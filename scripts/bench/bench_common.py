"""Measurements every benchmark of this folder takes the same way (imported by its siblings,
which run as scripts with this folder first on sys.path)."""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss() -> int:
    """Peak resident memory of this process, in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def peak_gpu() -> int | None:
    """Peak CUDA memory allocated by this process, in bytes; None without a GPU."""
    import torch

    return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None


# The LoRA both sides get with --lora: ours model.adapt.*, TRL's peft.LoraConfig(peft_config=...).
LORA = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}


def lora_overrides() -> dict:
    """Our model.adapt section for LORA."""
    return {
        "strategy": "lora",
        "lora_r": LORA["r"],
        "lora_alpha": LORA["alpha"],
        "lora_dropout": LORA["dropout"],
        "lora_target_modules": LORA["target_modules"],
    }


def peft_lora(task_type: str):
    """LORA as a peft.LoraConfig (task_type CAUSAL_LM for a policy, SEQ_CLS for a reward model)."""
    import peft

    return peft.LoraConfig(
        task_type=task_type,
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"],
        target_modules=LORA["target_modules"],
    )


REPO = Path(__file__).resolve().parents[2]
WARMUP_STEPS = 3
HH_FILE = "../shared/data/hh-rlhf/harmless-base-test.jsonl.gz"  # relative to the repository root
SMOLLM2 = "builtin:smollm2-135m-instruct"
RANKED_K = 4
PAIRS_PER_RANKING = RANKED_K * (RANKED_K - 1) // 2
RANKED_NOISE = 10  # percent


def _hh_path() -> Path:
    return (REPO / HH_FILE).resolve()


def _trl_version() -> str:
    from importlib import metadata

    return metadata.version("trl")
