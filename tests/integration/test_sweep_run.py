"""`rlhf sweep` over a stage on builtin:tiny: trials run, the table marks the best, a re-run skips them."""

import json

import yaml

from rlhf.cli.main import main


def test_stage_sweep_writes_the_table_and_skips_finished_trials(tmp_path, capsys):
    config = tmp_path / "sweep.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "command": "sft",
                "base": "configs/sft/tiny.yaml",
                "output_dir": str(tmp_path / "sweep"),
                "fixed": {
                    "max_steps": 4,
                    "eval_steps": 0,
                    "tracking.mode": "disabled",
                    "tracking.progress": False,
                    "data.train": ["builtin:judged-sft?n=200"],
                    "data.max_length": 96,
                },
                "grid": {"optim.lr": [1e-5, 3e-3]},
                "metric": "eval_loss",
                "mode": "min",
            }
        )
    )
    assert main(["sweep", "--config", str(config)]) == 0
    record = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    losses = [row["eval_loss"] for row in record["rows"]]
    # the larger learning rate moves the model further in 4 steps: its eval loss is lower
    assert losses[1] < losses[0] and record["best"] == 1
    for number, lr in enumerate((1e-5, 3e-3)):
        saved = yaml.safe_load((tmp_path / "sweep" / f"trial-00{number}" / "config.yaml").read_text())
        assert saved["optim"]["lr"] == lr and saved["max_steps"] == 4
    assert "| **trial-001** |" in (tmp_path / "sweep" / "results.md").read_text()

    stamps = [(tmp_path / "sweep" / f"trial-00{n}" / "summary.json").stat().st_mtime_ns for n in (0, 1)]
    capsys.readouterr()
    assert main(["sweep", "--config", str(config)]) == 0
    assert stamps == [(tmp_path / "sweep" / f"trial-00{n}" / "summary.json").stat().st_mtime_ns for n in (0, 1)]
    assert "Best (min eval_loss): trial-001" in capsys.readouterr().out


def test_a_diverged_trial_is_a_row_of_the_table_and_the_sweep_goes_on(tmp_path, capsys):
    config = tmp_path / "sweep.yaml"
    fixed = {
        "max_steps": 3,
        "eval_steps": 0,
        "tracking.mode": "disabled",
        "tracking.progress": False,
        "data.train": ["builtin:judged-sft?n=200"],
        "data.max_length": 96,
    }
    config.write_text(
        yaml.safe_dump(
            {
                "command": "sft",
                "base": "configs/sft/tiny.yaml",
                "output_dir": str(tmp_path / "sweep"),
                "fixed": fixed,
                "grid": {"optim.lr": [1e10, 3e-3]},
                "metric": "eval_loss",
                "mode": "min",
            }
        )
    )
    assert main(["sweep", "--config", str(config)]) == 0
    record = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert record["rows"][0]["status"] == "stopped at step 2" and "eval_loss" not in record["rows"][0]
    assert record["best"] == 1 and record["stopped"] == 1
    results = (tmp_path / "sweep" / "results.md").read_text()
    assert "stopped at step 2" in results and "1 of 2 trial(s) stopped" in results
