"""Helpers shared by the tests (importable because tests/ is on sys.path via conftest)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sft_overrides(output_dir: Path, *extra: str) -> list[str]:
    """A fast tiny SFT run: no progress bar, no wandb, few steps."""
    return [
        f"output_dir={output_dir}",
        "tracking.mode=disabled",
        "tracking.progress=false",
        "max_steps=6",
        "eval_steps=0",
        "data.train=['builtin:judged-sft?n=200']",
        "data.max_length=96",
        *extra,
    ]


def launch_command(config_file: str | None, num_processes: int, port: int) -> list[str]:
    """`accelerate launch` arguments that really give N CPU processes (see DESIGN.md)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if config_file is None:
        cmd += ["--multi_gpu", "--num_processes", str(num_processes), "--num_machines", "1",
                "--mixed_precision", "no", "--dynamo_backend", "no"]
    else:
        cmd += ["--config_file", config_file, "--num_processes", str(num_processes)]
    return cmd + ["--main_process_port", str(port), str(REPO / "scripts" / "train.py")]


def constant_reward(prompt, response) -> float:
    """A reward function for tests (given as `helpers:constant_reward`)."""
    return 7.0
