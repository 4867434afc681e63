"""`rlhf pipeline` under `accelerate launch` on 2 CPU processes: every stage runs on the launcher's
engine in one process group (set up once per launch), and the main process evaluates alone."""

import json

import pytest
from helpers import PIPELINE_SHORT, launch

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


@pytest.mark.parametrize("engine, port", [("ddp", 29631), ("zero3", 29632)])
def test_pipeline_runs_every_stage_on_the_launched_engine(tmp_path, engine, port):
    out = tmp_path / "p"
    launch(
        engine,
        port,
        [
            "pipeline",
            "--config",
            "configs/pipeline/tiny.yaml",
            f"output_dir={out}",
            *PIPELINE_SHORT,
            "ppo.batch.micro_batch_size=8",
        ],
    )
    record = json.loads((out / "pipeline.json").read_text())
    expected = ("DEEPSPEED", 3) if engine == "zero3" else ("MULTI_CPU", None)
    for stage in ("sft", "rm", "ppo", "dpo"):
        summary = record["stages"][stage]["summary"]
        assert (summary["world_size"], summary["distributed_type"], summary["zero_stage"]) == (2, *expected), stage
    # the reward model's normalisation was fitted by the main process alone (no ZeRO-3 partitioning)
    assert (out / "rm" / "model" / "normalization.json").is_file()
    results = json.loads((out / "eval" / "results.json").read_text())
    assert set(results["policies"]) == {"sft", "ppo", "dpo"}
