"""`rlhf pipeline` end to end on the tiny preset (shortened): wiring, skip on re-run, evaluation,
and a run killed mid-PPO that, started again, finishes with the weights of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import PIPELINE_SHORT as SHORT
from safetensors.torch import load_file

from rlhf.cli.main import main


@pytest.mark.slow
def test_tiny_pipeline_wires_the_stages_evaluates_and_skips_finished_ones(tmp_path, capsys):
    out = tmp_path / "p"
    args = ["pipeline", "--config", "configs/pipeline/tiny.yaml", f"output_dir={out}", *SHORT]
    assert main(args) == 0
    record = json.loads((out / "pipeline.json").read_text())
    assert {s: e["action"] for s, e in record["stages"].items()} == dict.fromkeys(("sft", "rm", "ppo", "dpo"), "run")
    ppo_cfg = (out / "ppo" / "config.yaml").read_text()
    assert f"name_or_path: {out / 'sft' / 'model'}" in ppo_cfg and f"model: {out / 'rm' / 'model'}" in ppo_cfg
    assert record["stages"]["ppo"]["summary"]["steps"] == 3
    results = json.loads((out / "eval" / "results.json").read_text())
    assert set(results["policies"]) == {"sft", "ppo", "dpo"} and results["baseline"] == "sft"
    assert results["policies"]["sft"]["kl"] == pytest.approx(0.0, abs=1e-5)  # the reference is the SFT policy
    assert {"judge", "reward", "win_rate", "win_rate_ci95"} <= set(results["policies"]["dpo"])
    assert (out / "eval" / "win_rates.png").is_file() and (out / "eval" / "results.md").is_file()

    # The same command again: nothing is trained or evaluated anew.
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("summary.json")}
    stamps[out / "eval" / "results.json"] = (out / "eval" / "results.json").stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert printed.count("done, skipped") == 5 and "eval: done, skipped" in printed  # 4 stages + eval
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}


def _pipeline(out: Path, sft_dir: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rlhf.cli.main",
        "pipeline",
        "--config",
        "configs/pipeline/tiny.yaml",
        f"output_dir={out}",
        "stages=[sft,ppo]",
        f"sft.output_dir={sft_dir}",
        "eval.enabled=false",
        *SHORT,
        "ppo.max_steps=8",
        "ppo.checkpoint.save_steps=2",
        "ppo.checkpoint.keep_last=0",
    ]


@pytest.mark.slow
def test_killed_mid_ppo_the_same_command_finishes_like_an_uninterrupted_run(tmp_path):
    sft_dir = tmp_path / "sft"  # shared: trained by the first run, skipped by the others
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(_pipeline(tmp_path / "whole", sft_dir), check=True, env=env, capture_output=True)

    cut = _pipeline(tmp_path / "cut", sft_dir)
    process = subprocess.Popen(cut, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "cut" / "ppo" / "checkpoints" / "step-00000004" / "trainer_state.json"
    deadline = time.time() + 300
    while not checkpoint.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "cut" / "ppo" / "summary.json").exists(), "the run ended before it could be killed"

    again = subprocess.run(cut, env=env, capture_output=True, text=True, check=True)
    assert "resume from step-0000000" in again.stdout
    whole = load_file(tmp_path / "whole" / "ppo" / "model" / "model.safetensors")
    resumed = load_file(tmp_path / "cut" / "ppo" / "model" / "model.safetensors")
    assert whole.keys() == resumed.keys()
    for name in whole:
        torch.testing.assert_close(resumed[name], whole[name], rtol=0, atol=1e-6, msg=name)
    scores = [
        [json.loads(line)["score"] for line in (tmp_path / run / "ppo" / "metrics.jsonl").read_text().splitlines()]
        for run in ("whole", "cut")
    ]
    assert scores[0] == pytest.approx(scores[1], abs=1e-6)
