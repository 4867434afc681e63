"""The nonfinite policy: its config section, RunStopped, and the guard's decisions (step, drop,
stop, a loss scaler's own skips, a resumed checkpoint) on a stand-in backend."""

import json
import math
import types

import pytest

from rlhf.config.loader import ConfigError, load_config
from rlhf.config.sections import CheckpointConfig, NonFiniteConfig
from rlhf.runtime.tracking import Tracker
from rlhf.stages.nonfinite import NonFiniteGuard
from rlhf.stages.stopped import RunStopped

NAN, INF = float("nan"), float("inf")


class FakeBackend:
    """What the guard asks of a Backend, on one process; records what it is told to do."""

    world_size, distributed_type, zero_stage, mixed_precision = 1, "NO", None, "no"

    def __init__(self, norms=(), *, can_skip=True, loss_scaling=False, scaler_applies=True, params_finite=True):
        self.norms = iter(norms)
        self.can_skip_steps, self.loss_scaling = can_skip, loss_scaling
        self.scaler_applies, self.params_finite = scaler_applies, params_finite
        self.applied = self.dropped = 0
        self.ended = False

    def clip_gradients(self, model):
        return next(self.norms)

    def nonfinite_names(self, values):
        return [k for k, v in values.items() if v is not None and not math.isfinite(v)]

    def apply_step(self, optimizer):
        self.applied += 1
        return self.scaler_applies

    def skip_step(self, optimizer):
        self.dropped += 1

    def parameters_finite(self, model):
        return self.params_finite

    def max_over_processes(self, value):
        return value

    def peak_memory_bytes(self):
        return 0

    def end(self):
        self.ended = True


class Scheduler:
    steps = 0

    def step(self):
        self.steps += 1


def guard_for(tmp_path, backend, policy="stop", max_skips=3, resumed=None):
    cfg = types.SimpleNamespace(
        nonfinite=NonFiniteConfig(policy=policy, max_consecutive_skips=max_skips),
        output_dir=str(tmp_path),
        checkpoint=CheckpointConfig(),
    )
    guard = NonFiniteGuard(cfg, backend, "sft")
    tracker = Tracker(str(tmp_path), is_main=True, mode="disabled", progress=False)
    guard.begin(object(), tracker, resumed, started=0.0, plot_keys=("loss",))
    return guard


def summary(tmp_path):
    return json.loads((tmp_path / "summary.json").read_text())


def test_config_section_is_shared_by_every_stage_and_checked():
    from rlhf.stages.dpo import DPOConfig
    from rlhf.stages.ppo_config import PPOConfig
    from rlhf.stages.rm import RMConfig
    from rlhf.stages.sft import SFTConfig

    for stage in (SFTConfig, RMConfig, DPOConfig, PPOConfig):
        cfg = load_config(stage, None, ["nonfinite.policy=skip", "nonfinite.max_consecutive_skips=5"])
        assert cfg.nonfinite == NonFiniteConfig(policy="skip", max_consecutive_skips=5)
        assert load_config(stage, None).nonfinite == NonFiniteConfig(policy="stop", max_consecutive_skips=3)
    with pytest.raises(ConfigError, match="key 'nonfinite.policy' expects one of 'stop', 'skip', got 'skp'"):
        load_config(SFTConfig, None, ["nonfinite.policy=skp"])
    with pytest.raises(ConfigError, match="section 'nonfinite': max_consecutive_skips must be >= 0, got -1"):
        load_config(SFTConfig, None, ["nonfinite.max_consecutive_skips=-1"])


def test_run_stopped_says_what_where_and_what_was_kept():
    err = RunStopped("rm", 7, "non-finite loss (nan) at step 7", "out/checkpoints/step-00000006", "out/summary.json")
    text = str(err)
    assert text.startswith("stopped at step 7: non-finite loss (nan) at step 7. Nothing non-finite was saved")
    assert "the last good checkpoint is out/checkpoints/step-00000006" in text and "out/summary.json" in text
    assert "\n" not in text and RunStopped.EXIT_CODE == 3
    assert "none (no checkpoint was written)" in str(RunStopped("rm", 1, "x", None, "s"))


def test_skip_is_refused_where_a_step_cannot_be_dropped(tmp_path):
    backend = FakeBackend(can_skip=False)
    with pytest.raises(ConfigError, match=r"nonfinite.policy=skip \(stage sft\) is not available under DeepSpeed"):
        guard_for(tmp_path, backend, policy="skip")
    assert backend.ended  # the backend (and the output folder's lock) is released
    guard_for(tmp_path, FakeBackend(can_skip=False), policy="stop")  # stop works with any engine


def test_stop_writes_the_reason_and_applies_nothing(tmp_path):
    backend, scheduler = FakeBackend([0.5, NAN]), Scheduler()
    guard = guard_for(tmp_path, backend)
    assert guard.optimizer_step(1, None, None, scheduler, 2.0) == (0.5, True)
    with pytest.raises(RunStopped) as info:
        guard.optimizer_step(2, None, None, scheduler, INF)
    assert info.value.step == 2 and info.value.reason == "non-finite loss (inf), grad_norm (nan) at step 2"
    assert (backend.applied, backend.dropped, scheduler.steps, backend.ended) == (1, 0, 1, True)
    saved = summary(tmp_path)
    assert saved["status"] == "stopped" and saved["stopped_at_step"] == 2
    assert saved["nonfinite"] == ["loss", "grad_norm"] and saved["last_good_checkpoint"] is None
    assert saved["reason"] == info.value.reason and saved["skipped_steps"] == 0


def test_skip_counts_bad_steps_in_a_row_and_stops_on_one_too_many(tmp_path):
    # bad, bad, good, bad, bad, bad with at most 2 in a row: the good step resets the count.
    norms = [NAN, NAN, 1.0, NAN, NAN, NAN]
    backend, scheduler = FakeBackend(norms), Scheduler()
    guard = guard_for(tmp_path, backend, policy="skip", max_skips=2)
    results = [guard.optimizer_step(step, None, None, scheduler, 1.0)[1] for step in range(1, 6)]
    assert results == [False, False, True, False, False]
    assert (backend.applied, backend.dropped, scheduler.steps) == (1, 4, 1)
    assert guard.counts() == {"skipped_steps": 4} and guard.consecutive == 2
    with pytest.raises(RunStopped, match=r"grad_norm \(nan\) at step 6, after 2 skipped in a row"):
        guard.optimizer_step(6, None, None, scheduler, 1.0)
    assert backend.dropped == 4 and summary(tmp_path)["skipped_steps"] == 4


def test_a_loss_scaler_overflow_is_its_own_skip_not_a_stop(tmp_path):
    # fp16: overflowing gradients (finite loss) are routine; the scaler drops the update itself.
    backend, scheduler = FakeBackend([INF, 2.0], loss_scaling=True, scaler_applies=False), Scheduler()
    guard = guard_for(tmp_path, backend, policy="stop")
    assert guard.optimizer_step(1, None, None, scheduler, 0.3) == (INF, False)
    assert (backend.applied, backend.dropped, scheduler.steps) == (1, 0, 0)
    assert guard.counts() == {"skipped_steps": 1} and guard.consecutive == 0
    backend.scaler_applies = True
    assert guard.optimizer_step(2, None, None, scheduler, 0.3) == (2.0, True) and scheduler.steps == 1
    # A non-finite loss is never the scaler's business.
    backend.norms = iter([INF])
    with pytest.raises(RunStopped, match="non-finite loss"):
        guard.optimizer_step(3, None, None, scheduler, NAN)


def test_rollout_check_names_the_bad_values(tmp_path):
    guard = guard_for(tmp_path, FakeBackend(), policy="skip", max_skips=1)
    assert guard.check_rollout(1, {"score from m:f": 1.0, "advantages": 0.5})
    assert not guard.check_rollout(2, {"score from m:f": NAN, "advantages": 0.5})
    with pytest.raises(RunStopped, match=r"non-finite score from m:f \(nan\) at step 3 \(rollout\)"):
        guard.check_rollout(3, {"score from m:f": NAN, "advantages": 0.5})
    assert summary(tmp_path)["nonfinite"] == ["score from m:f"]


def test_resuming_restores_the_counts_and_refuses_non_finite_parameters(tmp_path):
    checkpoint = tmp_path / "checkpoints" / "step-00000004"
    checkpoint.mkdir(parents=True)
    state = {"step": 4, "nonfinite": {"skipped_steps": 2, "consecutive": 1}}
    (checkpoint / "trainer_state.json").write_text(json.dumps(state))
    guard = guard_for(tmp_path, FakeBackend(), policy="skip", resumed=checkpoint)
    assert guard.counts() == {"skipped_steps": 2} and guard.consecutive == 1 and guard.last_good == checkpoint
    with pytest.raises(RunStopped, match="holds non-finite parameters") as info:
        guard_for(tmp_path, FakeBackend(params_finite=False), resumed=checkpoint)
    assert info.value.step == 4 and info.value.last_good_checkpoint is None
