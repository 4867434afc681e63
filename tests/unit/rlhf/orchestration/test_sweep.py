"""`rlhf sweep`: which trials a sweep config gives, the results table, and the frontier points."""

import json

import pytest

from rlhf.cli.sweep import main
from rlhf.config.loader import ConfigError, load_config
from rlhf.orchestration.sweep import SweepConfig, _frontier, best_index, table, trial_params


def sweep(*overrides):
    return load_config(SweepConfig, None, ["base=configs/sft/tiny.yaml", "command=sft", *overrides])


def test_a_grid_is_every_combination_in_order_and_grids_are_joined():
    cfg = sweep("grid={optim.lr: [0.1, 0.2], seed: [1, 2, 3]}")
    assert trial_params(cfg) == [{"optim.lr": a, "seed": b} for a in (0.1, 0.2) for b in (1, 2, 3)]
    assert len(trial_params(sweep("grid={seed: [1, 2, 3]}", "trials=2"))) == 2
    joined = sweep("grids=[{seed: [1, 2]}, {optim.lr: [0.5]}]")
    assert trial_params(joined) == [{"seed": 1}, {"seed": 2}, {"optim.lr": 0.5}]


def test_random_draws_are_fixed_by_the_seed_and_stay_in_their_ranges():
    overrides = [
        "method=random",
        "trials=20",
        "grid={seed: [1, 2]}",
        "ranges={optim.lr: {min: 1e-4, max: 1e-2, log: true}, max_steps: {min: 5, max: 9, int: true}}",
    ]
    first, again, other = (
        trial_params(sweep(*overrides)),
        trial_params(sweep(*overrides)),
        trial_params(sweep(*overrides, "seed=1")),
    )
    assert first == again and first != other
    assert all(
        1e-4 <= t["optim.lr"] <= 1e-2
        and 5 <= t["max_steps"] <= 9
        and isinstance(t["max_steps"], int)
        and t["seed"] in (1, 2)
        for t in first
    )
    # log-uniform: about half of the draws below the geometric middle 1e-3
    assert 4 <= sum(t["optim.lr"] < 1e-3 for t in first) <= 16


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["grid={}"], "give the keys to search"),
        (["method=random", "grid={seed: [1]}"], "trials > 0"),
        (["ranges={optim.lr: {min: 1, max: 2}}"], "ranges are for method: random"),
    ],
)
def test_bad_sweeps_are_refused_with_the_reason(overrides, message):
    with pytest.raises(ConfigError, match=message):
        sweep(*overrides)


def test_a_bad_range_names_its_key():
    cfg = sweep("method=random", "trials=1", "ranges={optim.lr: {min: 0, max: 1, log: true}}")
    with pytest.raises(ConfigError, match="ranges.optim.lr"):
        trial_params(cfg)


def test_the_best_row_ignores_baselines_and_is_bold():
    rows = [
        {"trial": "trial-000", "policy": "sft", "baseline": True, "win_rate": 0.99},
        {"trial": "trial-000", "policy": "dpo", "win_rate": 0.6, "kl": 1.0},
        {"trial": "trial-001", "policy": "dpo", "win_rate": 0.8, "kl": 2.0},
    ]
    assert best_index(rows, "win_rate", "max") == 2 and best_index(rows, "kl", "min") == 1
    assert best_index(rows, "missing", "max") is None
    text = table(rows, ["kl", "win_rate"], "win_rate", 2)
    assert text.splitlines()[0] == "| trial | policy | kl | win_rate |"
    assert "| **trial-001** | dpo | 2 | **0.8** |" in text and "| trial-000 | sft |  | 0.99 |" in text


def test_the_frontier_has_one_baseline_point_and_a_series_per_method(tmp_path, monkeypatch):
    drawn = {}

    def fake_plot(points, path, **kwargs):
        drawn.update(points=points, kwargs=kwargs)
        return path

    monkeypatch.setattr("rlhf.eval.plots.plot_frontier", fake_plot)
    cfg = load_config(SweepConfig, None, ["base=configs/pipeline/tiny.yaml", "grid={dpo.dpo.beta: [0.1, 0.3]}"])
    rows = [
        {"trial": f"trial-00{i}", "label": f"beta={b}", "policy": p, "baseline": p == "sft", "kl": k, "judge": j}
        for i, b in enumerate((0.1, 0.3))
        for p, k, j in (("sft", 0.0, 1.0), ("dpo", 3.0 - 2 * i, 2.5 - i))
    ]
    assert _frontier(cfg, rows, tmp_path) == tmp_path / "frontier.png"
    methods = [p["method"] for p in drawn["points"]]
    assert methods == ["baseline", "dpo", "dpo"] and drawn["kwargs"]["x"] == "kl"


def test_cli_lists_trials_and_refuses_a_missing_config(tmp_path, capsys):
    path = tmp_path / "s.yaml"
    path.write_text(json.dumps({"command": "dpo", "base": "configs/dpo/tiny.yaml", "grid": {"dpo.beta": [0.1, 1.0]}}))
    assert main(["--config", str(path), "--list"]) == 0
    assert capsys.readouterr().out.splitlines() == ["trial-000: {'dpo.beta': 0.1}", "trial-001: {'dpo.beta': 1.0}"]
    assert main([]) == 2
    assert main(["--config", str(path), "metod=grid"]) == 2 and "did you mean 'method'" in capsys.readouterr().err
