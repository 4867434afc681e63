"""2 CPU processes (DDP over gloo, DeepSpeed ZeRO-2 and ZeRO-3) agree with 1 process.

The global batch is the same in every run (16 rows: 1 x 16 x 1, 2 x 8 x 1 and 2 x 4 x 2), so the
updates must match up to floating-point reduction order.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from helpers import REPO, launch, sft_overrides
from safetensors.torch import load_file

from rlhf.config.loader import load_config
from rlhf.stages.sft import SFTConfig, run

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def launch_sft(tmp_path, name, engine, port, *extra):
    out = tmp_path / name
    launch(engine, port, ["sft", "--config", "configs/sft/tiny.yaml", *sft_overrides(out, "max_steps=3", *extra)])
    return out


def single(tmp_path):
    cfg = load_config(
        SFTConfig,
        str(REPO / "configs/sft/tiny.yaml"),
        sft_overrides(tmp_path / "single", "max_steps=3", "batch.micro_batch_size=16"),
    )
    run(cfg)
    return tmp_path / "single"


def assert_close_weights(a_dir, b_dir):
    a = load_file(str(a_dir / "model" / "model.safetensors"))
    b = load_file(str(b_dir / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=5e-6, rtol=1e-4, msg=key)


def test_ddp_two_processes_match_one(tmp_path):
    ddp = launch_sft(tmp_path, "ddp", "ddp", 29531, "batch.micro_batch_size=8")
    summary = json.loads((ddp / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["distributed_type"] == "MULTI_CPU"
    assert_close_weights(single(tmp_path), ddp)


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_two_processes_match_one(tmp_path, stage):
    zero = launch_sft(
        tmp_path, f"zero{stage}", f"zero{stage}", 29530 + stage, "batch.micro_batch_size=4", "batch.grad_accum=2"
    )
    summary = json.loads((zero / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["distributed_type"] == "DEEPSPEED"
    assert summary["zero_stage"] == stage
    # Under ZeRO-3 the saved model is gathered from the shards of both processes.
    assert_close_weights(single(tmp_path), zero)
    assert (zero / "checkpoints" / "step-00000003" / "trainer_state.json").is_file()


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_resume_restores_the_engine_state_without_pickle(tmp_path, stage):
    """A ZeRO run resumed from its step-2 checkpoint ends with the weights of the uninterrupted run,
    and the engine's checkpoint files are safetensors state trees, not torch.save pickles."""
    args = ("batch.micro_batch_size=4", "batch.grad_accum=2", "checkpoint.save_steps=2")
    full = tmp_path / "full"
    launch(
        f"zero{stage}",
        29540 + stage,
        ["sft", "--config", "configs/sft/tiny.yaml", *sft_overrides(full, "max_steps=4", *args)],
    )
    engine_files = [p for p in (full / "checkpoints" / "step-00000002" / "engine").rglob("*") if p.is_file()]
    states = [p for p in engine_files if p.suffix == ".pt"]
    assert states and all(p.read_bytes()[8:9] == b"{" for p in states)  # safetensors: u64 size, then JSON
    resumed = tmp_path / "resumed"
    shutil.copytree(full / "checkpoints" / "step-00000002", resumed / "checkpoints" / "step-00000002")
    (resumed / "run.json").write_text('{"stage": "sft"}')
    launch(
        f"zero{stage}",
        29550 + stage,
        [
            "sft",
            "--config",
            "configs/sft/tiny.yaml",
            *sft_overrides(resumed, "max_steps=4", *args, "checkpoint.resume_from=latest"),
        ],
    )
    assert [json.loads(ln)["step"] for ln in (resumed / "metrics.jsonl").read_text().splitlines()][0] == 3
    assert_close_weights(full, resumed)


def test_deepspeed_dropped_by_cpu_flag_is_refused(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCELERATE_")}
    env.update(ACCELERATE_USE_CPU="1", ACCELERATE_USE_DEEPSPEED="true", WORLD_SIZE="1")
    code = "from rlhf.runtime.backend import Backend; Backend(seed=0)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0
    assert "DeepSpeed was requested" in result.stderr
