"""Which config keys differ between a saved run and a planned one."""

from rlhf.config.diff import RESUME_SAFE, config_changes


def test_changes_name_each_key_and_skip_ignored_sections():
    saved = {"optim": {"lr": 1e-3, "eps": float("nan")}, "tracking": {"mode": "offline"}, "max_steps": 10}
    planned = {"optim": {"lr": 1e10, "eps": float("nan")}, "tracking": {"mode": "disabled"}, "max_steps": 20}
    assert config_changes(saved, planned, RESUME_SAFE) == ["optim.lr: 0.001 -> 10000000000.0"]
    assert config_changes(saved, planned) == [
        "max_steps: 10 -> 20",
        "optim.lr: 0.001 -> 10000000000.0",
        "tracking.mode: 'offline' -> 'disabled'",
    ]
