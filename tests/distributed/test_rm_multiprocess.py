"""The reward-model stage on 2 CPU processes (DDP and ZeRO-2) matches 1 process."""

import json

import pytest
import torch
from helpers import REPO, launch
from safetensors.torch import load_file

from rlhf.config.loader import load_config
from rlhf.stages.rm import RMConfig, run

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

ARGS = [
    "tracking.mode=disabled",
    "tracking.progress=false",
    "eval_steps=0",
    "data.max_length=96",
    "checkpoint.save_steps=0",
    "max_steps=3",
    "normalize.data=null",
    "data.train=['builtin:judged-ranked?n=60']",
    "data.eval=['builtin:judged-pairwise?n=30&seed=5']",
]


def weights(folder):
    return load_file(str(folder / "model" / "model.safetensors"))


@pytest.mark.parametrize("engine", ["ddp", "zero2"])
def test_two_processes_match_one(tmp_path, engine):
    run(
        load_config(
            RMConfig,
            str(REPO / "configs/rm/tiny_ranked.yaml"),
            [f"output_dir={tmp_path / 'single'}", *ARGS, "batch.micro_batch_size=8"],
        )
    )
    launch(
        engine,
        29541 if engine == "ddp" else 29542,
        [
            "rm",
            "--config",
            "configs/rm/tiny_ranked.yaml",
            f"output_dir={tmp_path / engine}",
            *ARGS,
            "batch.micro_batch_size=2",
            "batch.grad_accum=2",
        ],
    )
    summary = json.loads((tmp_path / engine / "summary.json").read_text())
    single = json.loads((tmp_path / "single" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["eval_pairs"] == single["eval_pairs"] == 30
    assert summary["eval_accuracy"] == pytest.approx(single["eval_accuracy"])
    a, b = weights(tmp_path / "single"), weights(tmp_path / engine)
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=5e-6, rtol=1e-4, msg=key)
