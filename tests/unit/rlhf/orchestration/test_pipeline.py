"""Pipeline planning: how stage configs are resolved and wired, and when a stage runs, resumes or is skipped."""

import json

import pytest
import yaml

from rlhf.cli.pipeline import main
from rlhf.config.loader import ConfigError, load_config, to_dict
from rlhf.orchestration.pipeline import PipelineError, config_changes, plan
from rlhf.orchestration.pipeline_config import PipelineConfig

TINY = "configs/pipeline/tiny.yaml"


def pipeline(tmp_path, *overrides):
    return load_config(PipelineConfig, TINY, [f"output_dir={tmp_path / 'p'}", *overrides])


def test_outputs_feed_the_next_stages(tmp_path):
    plans = plan(pipeline(tmp_path, "group=g1"))
    assert list(plans) == ["sft", "rm", "ppo", "dpo"] and all(p.action == "run" for p in plans.values())
    sft, rm, ppo, dpo = (plans[s].cfg for s in ("sft", "rm", "ppo", "dpo"))
    assert sft.output_dir == str(tmp_path / "p" / "sft")
    # PPO and DPO start from the SFT model; PPO scores with the trained reward model only.
    assert ppo.model.name_or_path == dpo.model.name_or_path == str(tmp_path / "p" / "sft" / "model")
    assert ppo.reward.model == str(tmp_path / "p" / "rm" / "model") and ppo.reward.functions == []
    assert rm.model.name_or_path == "builtin:tiny"  # from_sft is off for the reward model by default
    # section keys override the stage file; every stage resumes from its newest checkpoint
    assert rm.max_steps == 1500 and ppo.kl.coef == 0.3 and dpo.dpo.beta == 0.3
    assert {p.cfg.checkpoint.resume_from for p in plans.values()} == {"latest"}
    assert {p.cfg.tracking.group for p in plans.values()} == {"g1"} and dpo.tracking.run_name == "g1-dpo"


def test_command_line_keys_reach_the_stages_and_the_pipeline_seed_wins(tmp_path):
    plans = plan(pipeline(tmp_path, "seed=7", "ppo.kl.coef=0.1", "sft.optim.lr=0.01", "tracking_mode=disabled"))
    assert plans["ppo"].cfg.kl.coef == 0.1 and plans["sft"].cfg.optim.lr == 0.01
    assert {p.cfg.seed for p in plans.values()} == {7}
    assert {p.cfg.tracking.mode for p in plans.values()} == {"disabled"}


def test_lora_sft_hands_on_merged_weights(tmp_path):
    plans = plan(pipeline(tmp_path, "sft.model.adapt.strategy=lora", "stages=[sft,dpo]"))
    assert plans["sft"].cfg.model.adapt.merge is True
    assert plans["dpo"].cfg.model.name_or_path == str(tmp_path / "p" / "sft" / "model" / "merged")
    with pytest.raises(ConfigError, match="prefix"):
        plan(pipeline(tmp_path, "sft.model.adapt.strategy=prefix"))


@pytest.mark.parametrize(
    "override, message",
    [
        ("ppo.kl.cof=1", "unknown key 'ppo.kl.cof'; did you mean 'ppo.kl.coef'"),
        ("ppo.model.name_or_path=x", "set 'ppo.from_sft: false'"),
        ("ppo.reward.model=x", "set 'ppo.from_rm: false'"),
        ("dpo.from_rm=true", "only exists for the ppo stage"),
        ("ppo.from_sft=maybe", "'ppo.from_sft' expects bool"),
    ],
)
def test_bad_sections_name_the_key(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        plan(pipeline(tmp_path, override))


def test_stage_order_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="run in the order"):
        pipeline(tmp_path, "stages=[dpo,sft]")


def test_a_stage_fed_by_a_missing_one_is_refused_until_that_one_exists(tmp_path):
    with pytest.raises(PipelineError, match="stage sft is not among the stages"):
        plan(pipeline(tmp_path, "stages=[dpo]"))
    # a finished SFT run in the folder is enough (e.g. shared between trials of a sweep)
    sft = plan(pipeline(tmp_path))["sft"]
    _fake_finished(sft)
    assert plan(pipeline(tmp_path, "stages=[dpo]"))["sft"].action == "done"
    # PPO without the rm stage keeps the stage file's reward functions
    ppo = plan(pipeline(tmp_path, "stages=[ppo]"))["ppo"].cfg
    assert ppo.reward.model is None and ppo.reward.functions == ["preference_data.synthetic:judge"]


def _fake_finished(stage_plan, *, checkpoint_only=False):
    out = stage_plan.output_dir
    out.mkdir(parents=True)
    (out / "config.yaml").write_text(yaml.safe_dump(to_dict(stage_plan.cfg)))
    (out / "checkpoints" / "step-00000020").mkdir(parents=True)
    (out / "checkpoints" / "step-00000020" / "trainer_state.json").write_text('{"step": 20}')
    if not checkpoint_only:
        (out / "model").mkdir()
        (out / "summary.json").write_text(json.dumps({"stage": stage_plan.name}))


def test_finished_stages_are_skipped_interrupted_ones_resume(tmp_path):
    first = plan(pipeline(tmp_path))
    _fake_finished(first["sft"])
    _fake_finished(first["rm"], checkpoint_only=True)
    again = plan(pipeline(tmp_path))
    assert again["sft"].action == "done"
    assert again["rm"].action == "resume" and again["rm"].checkpoint.endswith("step-00000020")
    assert again["ppo"].action == "run"
    assert main(["--config", TINY, f"output_dir={tmp_path / 'p'}", "--dry-run"]) == 0


def test_a_finished_stage_with_another_config_is_an_error_naming_the_keys(tmp_path, capsys):
    _fake_finished(plan(pipeline(tmp_path))["sft"])
    with pytest.raises(PipelineError, match=r"optim\.lr: 0\.003 -> 0\.01.*Remove"):
        plan(pipeline(tmp_path, "sft.optim.lr=0.01"))
    # the tracking keys and resume_from may differ: it is the same run
    assert plan(pipeline(tmp_path, "tracking_mode=disabled", "group=other"))["sft"].action == "done"
    assert main(["--config", TINY, f"output_dir={tmp_path / 'p'}", "sft.optim.lr=0.01", "--dry-run"]) == 2
    assert "another config" in capsys.readouterr().err


def test_config_changes_lists_added_removed_and_changed_keys():
    saved = {"a": 1, "b": {"c": 2, "d": 3}, "tracking": {"mode": "offline"}, "checkpoint": {"resume_from": None}}
    planned = {"a": 1, "b": {"c": 5}, "e": 0, "tracking": {"mode": "disabled"}, "checkpoint": {"resume_from": "latest"}}
    assert config_changes(saved, planned) == ["b.c: 2 -> 5", "b.d: 3 -> '<absent>'", "e: '<absent>' -> 0"]


def test_cli_without_config_and_help_config(capsys):
    assert main([]) == 2 and "--config" in capsys.readouterr().err
    assert main(["--help-config"]) == 0
    out = capsys.readouterr().out
    assert "eval.seeds (list[int]" in out and "from_sft" in out


def test_a_stopped_stage_is_not_done_even_beside_an_older_model(tmp_path):
    from rlhf.orchestration.pipeline import is_done

    (tmp_path / "model").mkdir()
    (tmp_path / "summary.json").write_text(json.dumps({"stage": "sft", "status": "finished"}))
    assert is_done(tmp_path)
    (tmp_path / "summary.json").write_text(json.dumps({"stage": "sft", "status": "stopped"}))
    assert not is_done(tmp_path)
