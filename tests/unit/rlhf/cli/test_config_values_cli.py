"""Out-of-range config values and missing data files are refused at config time through the
CLI: exit status 2, a message naming the key and the valid range, no traceback, nothing written."""

from __future__ import annotations

import pytest

from rlhf.cli.main import main


@pytest.mark.parametrize(
    ("stage", "overrides", "expected"),
    [
        ("sft", ["batch.micro_batch_size=0"], "batch.micro_batch_size must be >= 1, got 0"),
        ("dpo", ["batch.grad_accum=0"], "batch.grad_accum must be >= 1, got 0"),
        ("sft", ["optim.betas=[0.9]"], "optim.betas must be two numbers in [0, 1), got [0.9]"),
        ("rm", ["optim.betas=[0.9, 1.5]"], "optim.betas must be two numbers in [0, 1), got [0.9, 1.5]"),
        ("sft", ["optim.lr=-1"], "optim.lr must be a finite number >= 0, got -1"),
        ("ppo", ["optim.eps=0"], "optim.eps must be > 0, got 0"),
        ("sft", ["data.eval_fraction=2"], "data.eval_fraction must be in [0, 1), got 2"),
        ("dpo", ["data.eval_fraction=-0.1"], "data.eval_fraction must be in [0, 1), got -0.1"),
        ("rm", ["data.eval_fraction=1"], "data.eval_fraction must be in [0, 1), got 1"),
        ("sft", ["max_steps=-5", "epochs=0"], "epochs must be > 0 when max_steps <= 0, got epochs=0"),
        ("sft", ["data.max_record_bytes=-1"], "data.max_record_bytes must be >= 0 (0 = no limit), got -1"),
    ],
)
def test_bad_values_fail_at_config_time(tmp_path, capsys, stage, overrides, expected):
    out = tmp_path / "run"
    assert main([stage, f"output_dir={out}", *overrides]) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert overrides[-1].split("=")[0] in err  # the key, spelled as on the command line
    assert "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(("stage", "key"), [("sft", "data.train"), ("dpo", "data.eval"), ("ppo", "data.prompts")])
def test_missing_data_file_is_found_before_anything_is_written(tmp_path, capsys, stage, key):
    out = tmp_path / "run"
    missing = tmp_path / "nonexistent.jsonl"
    assert main([stage, f"output_dir={out}", f"{key}=[{missing}]"]) == 2
    err = capsys.readouterr().err
    assert f"{key}: {missing}: no such file" in err
    assert "Traceback" not in err
    assert not out.exists()
