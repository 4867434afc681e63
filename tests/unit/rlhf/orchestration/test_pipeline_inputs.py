"""Pipeline planning against the fingerprints of the models a finished stage was trained from."""

import json
import shutil

import yaml

from rlhf.cli.pipeline import main
from rlhf.config.loader import load_config, to_dict
from rlhf.models.fingerprint import model_fingerprint, write_fingerprint
from rlhf.orchestration.pipeline import plan
from rlhf.orchestration.pipeline_config import PipelineConfig
from rlhf.stages.inputs import input_fingerprints

TINY = "configs/pipeline/tiny.yaml"
FROM_SFT = "rm.from_sft=true"  # the reward model starts from the SFT model too


def pipeline(tmp_path, *overrides):
    return load_config(PipelineConfig, TINY, [f"output_dir={tmp_path / 'p'}", FROM_SFT, *overrides])


def _finish(stage_plan, weights: bytes = b"weights", inputs: bool = True):
    """A finished run of the planned stage: model folder with its fingerprint, summary with the
    fingerprints of the model folders its config starts from, as a stage records them."""
    out = stage_plan.output_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(to_dict(stage_plan.cfg)))
    (out / "model").mkdir(exist_ok=True)
    (out / "model" / "model.safetensors").write_bytes(weights)
    write_fingerprint(out / "model")
    summary = {"stage": stage_plan.name}
    if inputs:
        summary["inputs"] = input_fingerprints(stage_plan.cfg)
    (out / "summary.json").write_text(json.dumps(summary))


def _finish_all(tmp_path, *overrides):
    for stage in ("sft", "rm", "ppo", "dpo"):
        _finish(plan(pipeline(tmp_path, *overrides))[stage])


def test_stages_trained_from_a_deleted_sft_model_run_again_with_the_reason(tmp_path, capsys):
    _finish_all(tmp_path)
    assert {s: p.action for s, p in plan(pipeline(tmp_path)).items()} == dict.fromkeys(
        ("sft", "rm", "ppo", "dpo"), "done"
    )
    shutil.rmtree(tmp_path / "p" / "sft")
    plans = plan(pipeline(tmp_path))
    assert {s: p.action for s, p in plans.items()} == {"sft": "run", "rm": "rerun", "ppo": "rerun", "dpo": "rerun"}
    assert plans["rm"].reason == "its input sft model changed (sft runs again)"
    assert plans["ppo"].reason == (
        "its input sft model changed (sft runs again); its input rm model changed (rm runs again)"
    )
    # the stale runs are replaced, not resumed or refused
    assert all(plans[s].cfg.overwrite for s in ("rm", "ppo", "dpo")) and not plans["sft"].cfg.overwrite
    capsys.readouterr()
    assert main(["--config", TINY, f"output_dir={tmp_path / 'p'}", FROM_SFT, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "rm: rerun, its input sft model changed (sft runs again)" in printed
    assert "dpo: rerun, its input sft model changed (sft runs again)" in printed
    assert "done, skipped" not in printed


def test_a_changed_upstream_model_makes_the_stages_after_it_stale(tmp_path):
    _finish_all(tmp_path)
    sft = plan(pipeline(tmp_path))["sft"]
    old = model_fingerprint(str(sft.output_dir / "model"))
    _finish(sft, weights=b"other weights")  # sft trained again into its folder, e.g. by hand
    plans = plan(pipeline(tmp_path))
    new = model_fingerprint(str(sft.output_dir / "model"))
    assert {s: p.action for s, p in plans.items()} == {"sft": "done", "rm": "rerun", "ppo": "rerun", "dpo": "rerun"}
    assert old != new
    assert plans["dpo"].reason == f"its input sft model changed (trained from {old[:19]}, now {new[:19]})"
    # PPO is stale through both its inputs: the SFT model changed, and the reward model is retrained
    assert plans["ppo"].reason.endswith("its input rm model changed (rm runs again)")


def test_a_summary_without_input_fingerprints_is_not_taken_as_done(tmp_path):
    _finish_all(tmp_path)
    _finish(plan(pipeline(tmp_path))["dpo"], inputs=False)
    plans = plan(pipeline(tmp_path))
    assert {s: p.action for s, p in plans.items()} == {"sft": "done", "rm": "done", "ppo": "done", "dpo": "rerun"}
    assert plans["dpo"].reason == "its summary records no fingerprint of its input sft model"


def test_a_stage_that_does_not_start_from_sft_stays_done(tmp_path):
    # by default the reward model starts from its own model, so a new SFT model leaves it valid
    overrides = ("rm.from_sft=false",)
    _finish_all(tmp_path, *overrides)
    shutil.rmtree(tmp_path / "p" / "sft")
    plans = plan(pipeline(tmp_path, *overrides))
    assert {s: p.action for s, p in plans.items()} == {"sft": "run", "rm": "done", "ppo": "rerun", "dpo": "rerun"}
    assert plans["ppo"].reason == "its input sft model changed (sft runs again)"
