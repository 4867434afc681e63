"""PNG plots of evaluation results: each plot is a readable PNG, plots without data are skipped,
and the frontier plot names a missing key."""

import copy

import pytest

from rlhf.eval.plots import plot_frontier, plot_results

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

RESULTS = {
    "prompts": "builtin:judged-prompts?n=200&seed=4242",
    "n_prompts": 200,
    "seeds": [0, 1, 2],
    "baseline": "sft",
    "reference": "runs/sft",
    "win_metric": "judge",
    "temperature": 1.0,
    "max_new_tokens": 48,
    "policies": {
        "sft": {
            "path": "runs/sft",
            "judge": 0.1,
            "judge_seed_std": 0.02,
            "reward": -0.2,
            "reward_seed_std": 0.05,
            "kl": 0.0,
            "kl_seed_std": 0.0,
            "length": 30.2,
            "length_seed_std": 1.0,
            "eos_rate": 0.7,
        },
        "dpo": {
            "path": "runs/dpo",
            "judge": 0.45,
            "judge_seed_std": 0.03,
            "reward": 0.6,
            "reward_seed_std": 0.1,
            "kl": 4.2,
            "kl_seed_std": 0.4,
            "length": 22.0,
            "length_seed_std": 2.0,
            "eos_rate": 0.9,
            "win_rate_per_seed": [0.66, 0.7, 0.68],
            "win_rate": 0.68,
            "win_rate_seed_std": 0.02,
            "win_rate_ci95": [0.61, 0.75],
            "wins": 0.6,
            "ties": 0.16,
            "losses": 0.24,
        },
        "ppo": {
            "path": "runs/ppo",
            "judge": 0.3,
            "judge_seed_std": 0.05,
            "reward": 0.9,
            "reward_seed_std": 0.1,
            "kl": 8.0,
            "kl_seed_std": 1.0,
            "length": 40.0,
            "length_seed_std": 3.0,
            "eos_rate": 0.5,
            "win_rate_per_seed": [0.55, 0.6, 0.59],
            "win_rate": 0.58,
            "win_rate_seed_std": 0.03,
            "win_rate_ci95": [0.5, 0.66],
            "wins": 0.5,
            "ties": 0.16,
            "losses": 0.34,
        },
    },
}


def assert_png(path):
    import matplotlib.image

    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100 and image.shape[2] in (3, 4)


def test_plot_results_writes_three_pngs(tmp_path):
    paths = plot_results(RESULTS, tmp_path / "plots")  # the folder is created
    assert [p.name for p in paths] == ["scores.png", "win_rates.png", "kl_length.png"]
    for path in paths:
        assert path.parent == tmp_path / "plots"
        assert_png(path)


def test_plot_results_does_not_change_its_input(tmp_path):
    results = copy.deepcopy(RESULTS)
    plot_results(results, tmp_path)
    assert results == RESULTS


def test_plot_results_without_reward_model(tmp_path):
    results = copy.deepcopy(RESULTS)
    for row in results["policies"].values():
        del row["reward"], row["reward_seed_std"]
    paths = plot_results(results, tmp_path)
    assert [p.name for p in paths] == ["scores.png", "win_rates.png", "kl_length.png"]
    for path in paths:
        assert_png(path)


def test_plot_results_single_policy_skips_win_rates(tmp_path):
    results = copy.deepcopy(RESULTS)
    results["seeds"] = [0]
    results["policies"] = {"sft": results["policies"]["sft"]}
    paths = plot_results(results, tmp_path)
    assert [p.name for p in paths] == ["scores.png", "kl_length.png"]
    assert not (tmp_path / "win_rates.png").exists()
    for path in paths:
        assert_png(path)


def test_plot_results_sparse_rows(tmp_path):
    # no seed stds, no CI, no per-seed points, no wins / ties / losses, no judge or reward at all
    results = {
        "baseline": "a",
        "policies": {"a": {"kl": 0.0, "length": 5.0}, "b": {"kl": 1.5, "eos_rate": 0.25, "win_rate": 0.4}},
    }
    paths = plot_results(results, tmp_path)
    assert [p.name for p in paths] == ["win_rates.png", "kl_length.png"]
    for path in paths:
        assert_png(path)
    assert plot_results({"policies": {}}, tmp_path / "empty") == []


FRONTIER = [
    {"method": "baseline", "kl": 0.0, "judge": 0.1, "label": "sft"},
    # out of x order on purpose: the series is sorted by KL before the line is drawn
    {"method": "DPO", "kl": 4.0, "judge": 0.45, "label": "beta=0.1", "kl_seed_std": 0.3, "judge_seed_std": 0.02},
    {"method": "DPO", "kl": 1.0, "judge": 0.2, "label": "beta=0.5", "kl_seed_std": 0.1, "judge_seed_std": 0.01},
    {"method": "PPO", "kl": 8.0, "judge": 0.3, "label": "kl_coef=0.05"},
    {"method": "PPO", "kl": 2.0, "judge": 0.15},  # no label: drawn, not annotated
]


def test_plot_frontier_two_series_and_baseline(tmp_path):
    path = plot_frontier(FRONTIER, tmp_path / "sweep" / "frontier.png")
    assert path == tmp_path / "sweep" / "frontier.png"
    assert_png(path)


def test_plot_frontier_other_keys(tmp_path):
    points = [{"group": "a", "reward": 1.0, "length": 10, "name": "x"}, {"group": "b", "reward": 2.0, "length": 20}]
    assert_png(
        plot_frontier(
            points, tmp_path / "f.png", x="length", y="reward", series="group", label="name", title="Reward vs length"
        )
    )


def test_plot_frontier_missing_key_is_named(tmp_path):
    points = copy.deepcopy(FRONTIER)
    del points[2]["kl"]
    with pytest.raises(ValueError, match=r"point 2 has no 'kl' key"):
        plot_frontier(points, tmp_path / "f.png")
    with pytest.raises(ValueError, match=r"point 0 has no 'win_rate' key"):
        plot_frontier(FRONTIER, tmp_path / "f.png", y="win_rate")
    with pytest.raises(ValueError, match=r"non-numeric 'judge'"):
        plot_frontier([{"kl": 1.0, "judge": None}], tmp_path / "f.png")
    with pytest.raises(ValueError, match="at least one point"):
        plot_frontier([], tmp_path / "f.png")
    assert not (tmp_path / "f.png").exists()
