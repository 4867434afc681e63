"""`rlhf pipeline` after the SFT folder is deleted: the stages trained from the old SFT model, and
the evaluation, run again from the new one (tiny preset, cut to a few steps a stage)."""

import json
import shutil

import pytest
from helpers import PIPELINE_SHORT

from rlhf.cli.main import main
from rlhf.models.fingerprint import folder_fingerprint

CHEAP = [
    *PIPELINE_SHORT,
    "rm.from_sft=true",  # the reward model starts from the SFT model as well
    "sft.max_steps=6",
    "rm.max_steps=3",
    "ppo.max_steps=1",
    "dpo.max_steps=2",
    "eval.seeds=[0]",
    "eval.prompts='builtin:judged-prompts?n=6&seed=4242'",
]


def _summary(out, stage):
    return json.loads((out / stage / "summary.json").read_text())


@pytest.mark.slow
def test_deleting_the_sft_run_retrains_the_stages_after_it(tmp_path, capsys):
    out = tmp_path / "p"
    args = ["pipeline", "--config", "configs/pipeline/tiny.yaml", f"output_dir={out}", *CHEAP]
    assert main(args) == 0
    old_sft = folder_fingerprint(out / "sft" / "model")
    assert {_summary(out, s)["inputs"]["model"]["fingerprint"] for s in ("rm", "ppo", "dpo")} == {old_sft}

    shutil.rmtree(out / "sft")
    capsys.readouterr()
    assert main([*args, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    for stage in ("rm", "ppo", "dpo"):
        assert f"{stage}: rerun, its input sft model changed (sft runs again)" in printed
    assert "done, skipped" not in printed

    # SFT is trained again (here with another learning rate, so that its weights surely differ).
    retrain = [*args, "sft.optim.lr=0.001"]
    assert main(retrain) == 0
    printed = capsys.readouterr().out
    assert all(f"== {stage} (rerun)" in printed for stage in ("rm", "ppo", "dpo"))
    assert "== eval ->" in printed and "eval: done, skipped" not in printed
    new = {stage: folder_fingerprint(out / stage / "model") for stage in ("sft", "rm", "ppo", "dpo")}
    assert new["sft"] != old_sft
    for stage in ("rm", "ppo", "dpo"):
        inputs = _summary(out, stage)["inputs"]
        assert inputs["model"]["fingerprint"] == new["sft"], stage
    assert _summary(out, "ppo")["inputs"]["reward_model"]["fingerprint"] == new["rm"]
    settings = json.loads((out / "eval" / "settings.json").read_text())
    assert settings["fingerprints"] == {"sft": new["sft"], "ppo": new["ppo"], "dpo": new["dpo"], "rm": new["rm"]}

    # Everything is now made from the current models: the same command skips all of it.
    assert main(retrain) == 0
    printed = capsys.readouterr().out
    assert printed.count("done, skipped") == 5 and "eval: done, skipped" in printed
