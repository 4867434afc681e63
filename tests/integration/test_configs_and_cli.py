"""Every YAML under configs/ loads; the rlhf command behaves."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import REPO

from rlhf.cli.main import main
from rlhf.config.loader import ConfigError, load_config
from rlhf.stages.registry import config_class

STAGE_CONFIGS = sorted((REPO / "configs").glob("*/*.yaml"))


@pytest.mark.parametrize("path", STAGE_CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_config_file_loads(path: Path):
    folder = path.parent.name
    if folder == "accelerate":
        data = yaml.safe_load(path.read_text())
        assert data["distributed_type"] in {"NO", "MULTI_GPU", "DEEPSPEED"}
        if data["distributed_type"] == "DEEPSPEED":
            assert data["deepspeed_config"]["zero_stage"] in (1, 2, 3)
        return
    if folder in ("pipeline", "sweep"):
        _plan_every_stage(path, folder)
        return
    cfg = load_config(config_class(folder), path)
    assert cfg.output_dir and (cfg.max_steps > 0 or cfg.epochs > 0)
    # The same top-level keys work for every stage.
    moved = load_config(config_class(folder), path, ["output_dir=/tmp/x", "max_steps=20", "seed=3"])
    assert (moved.output_dir, moved.max_steps, moved.seed) == ("/tmp/x", 20, 3)


def _plan_every_stage(path: Path, folder: str) -> None:
    """A pipeline preset, or every trial of a sweep, resolves into valid stage configs."""
    from rlhf.orchestration.pipeline import plan
    from rlhf.orchestration.pipeline_config import PipelineConfig
    from rlhf.orchestration.sweep import SweepConfig, _nest, trial_params

    if folder == "pipeline":
        trials = [(path, {})]
    else:
        sweep = load_config(SweepConfig, path)
        assert sweep.command == "pipeline" and trial_params(sweep)
        trials = [(Path(sweep.base), _nest({**sweep.fixed, **params})) for params in trial_params(sweep)]
    for base, extra in trials:
        cfg = load_config(PipelineConfig, base, [], extra={**extra, "output_dir": "/tmp/never-written"})
        plans = plan(cfg, str(path))
        assert set(cfg.stages) <= set(plans)  # (a sweep's shared SFT may already be done here)


def test_accelerate_configs_cover_the_engines():
    names = {p.stem for p in (REPO / "configs" / "accelerate").glob("*.yaml")}
    assert {"single", "ddp", "zero1", "zero2", "zero3", "zero3_offload"} <= names


def test_unknown_key_names_the_key_and_suggests(capsys):
    assert main(["sft", "--config", str(REPO / "configs/sft/tiny.yaml"), "optim.lrr=1"]) == 2
    err = capsys.readouterr().err
    assert "optim.lrr" in err and "did you mean 'optim.lr'" in err
    with pytest.raises(ConfigError, match="model.adapt.strategy"):
        load_config(config_class("sft"), None, ["model.adapt.strategy=lorra"])


def test_help_lists_every_command_and_a_pipeline_without_config_is_refused():
    out = subprocess.run(
        [sys.executable, "-m", "rlhf.cli.main", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("sft", "rm", "ppo", "dpo", "pipeline", "sweep", "eval", "export", "chat", "data"):
        assert command in out
    result = subprocess.run([sys.executable, "-m", "rlhf.cli.main", "pipeline"], capture_output=True, text=True)
    assert result.returncode == 2 and "--config" in result.stderr


def test_a_missing_model_folder_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "dpo"
    assert (
        main(
            [
                "dpo",
                "--config",
                "configs/dpo/tiny.yaml",
                f"output_dir={out}",
                f"model.name_or_path={tmp_path / 'no-sft-yet' / 'model'}",
            ]
        )
        == 2
    )
    assert "model.name_or_path: model folder" in capsys.readouterr().err and not out.exists()


def test_help_config_documents_keys(capsys):
    assert main(["sft", "--help-config"]) == 0
    out = capsys.readouterr().out
    assert "optim.lr (float" in out and "data.packing (bool" in out


def test_import_rlhf_stays_light():
    code = "import sys, rlhf, rlhf.cli.main, rlhf.math.losses; print(sorted(m for m in ('deepspeed', 'wandb', 'accelerate', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
