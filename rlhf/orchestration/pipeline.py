"""`rlhf pipeline`: the stages one after another in this process, each fed by the ones before.

:func:`plan` resolves every stage's config (stage YAML <- pipeline section <- wiring) and
decides from the output folders what to do with it: run, resume, or skip as done. It only
reads files, so every process of an ``accelerate launch`` reaches the same plan. :func:`run`
then executes the plan and evaluates the policies on the main process.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

import yaml

from rlhf.config.diff import config_changes as _changes
from rlhf.config.loader import ConfigError, _build, load_config, merge, replace_path, to_dict
from rlhf.models.fingerprint import model_fingerprint
from rlhf.orchestration.pipeline_config import SECTION_KEYS, PipelineConfig
from rlhf.orchestration.stale import input_changes
from rlhf.runtime.backend import launched_as_main, shared_process_group, unpartitioned_loading
from rlhf.stages.registry import STAGE_ORDER, config_class, run_function

# keys that may differ between the run on disk and the planned one without making it another run
_VOLATILE = ("checkpoint.resume_from", "tracking.", "overwrite")


class PipelineError(RuntimeError):
    """The pipeline cannot run as configured (message says which stage, folder and key)."""


@dataclasses.dataclass
class StagePlan:
    name: str
    cfg: Any  # the stage's resolved, frozen config
    # "run", "resume", "done", "rerun" (stale: replaced) or "missing" (not part of this pipeline, never run)
    action: str
    checkpoint: str | None = None  # newest checkpoint for "resume"
    reason: str | None = None  # why a "rerun" stage's run is stale

    @property
    def output_dir(self) -> Path:
        return Path(self.cfg.output_dir)


def handoff_dir(stage_plan: StagePlan) -> str:
    """The loadable model a stage hands on, known before it runs: ``model/merged`` for a LoRA
    policy (the pipeline has SFT merge; PPO / DPO merge when their config says so), else ``model``
    (a reward model folder is always loadable as it is)."""
    folder = stage_plan.output_dir / "model"
    adapt = stage_plan.cfg.model.adapt
    if stage_plan.name != "rm" and adapt.strategy in ("lora", "qlora") and adapt.merge:
        return str(folder / "merged")
    return str(folder)


def is_done(output_dir: str | Path) -> bool:
    """A stage finished: its summary is written after its model, so both exist only at the end,
    and it does not say the run stopped (a resumed run that stopped leaves an older model)."""
    summary, model = Path(output_dir) / "summary.json", Path(output_dir) / "model"
    if not (summary.is_file() and model.is_dir()):
        return False
    try:
        return json.loads(summary.read_text(encoding="utf-8")).get("status") != "stopped"
    except (OSError, ValueError, AttributeError):
        return False


def config_changes(saved: dict, planned: dict) -> list[str]:
    """``key: old -> new`` for every key that differs, the volatile ones (resume, tracking) aside."""
    return _changes(saved, planned, _VOLATILE)


def _section(cfg: PipelineConfig, stage: str, source: str) -> tuple[dict, dict]:
    """(pipeline switches, stage keys) of a stage section, the stage keys checked strictly."""
    section = getattr(cfg, stage)
    switches = {k: section[k] for k in SECTION_KEYS if k in section}
    keys = {k: v for k, v in section.items() if k not in SECTION_KEYS}
    for name in ("from_sft", "from_rm"):
        if name in switches and not isinstance(switches[name], bool):
            raise ConfigError(f"{source}: key '{stage}.{name}' expects bool, got {switches[name]!r}")
    if "from_rm" in switches and stage != "ppo":
        raise ConfigError(f"{source}: key '{stage}.from_rm' only exists for the ppo stage")
    if "from_sft" in switches and stage == "sft":
        raise ConfigError(f"{source}: key 'sft.from_sft' makes no sense: the SFT stage is the start")
    if switches.get("config") is not None and not isinstance(switches["config"], str):
        raise ConfigError(f"{source}: key '{stage}.config' expects a path to a {stage} YAML file")
    _build(config_class(stage), keys, stage, source, partial=True)
    return switches, keys


def _resolve(cfg: PipelineConfig, stage: str, source: str, upstream: dict[str, StagePlan]) -> Any:
    """The stage config: its YAML <- section keys <- pipeline wiring (folders, models, tracking, seed)."""
    switches, keys = _section(cfg, stage, source)
    wiring: dict[str, Any] = {"checkpoint": {"resume_from": keys.get("checkpoint", {}).get("resume_from", "latest")}}
    if "output_dir" not in keys:
        wiring["output_dir"] = str(Path(cfg.output_dir) / stage)
    if cfg.seed is not None:
        wiring["seed"] = cfg.seed
    group = cfg.group or Path(cfg.output_dir).name
    tracking = {"group": group, "run_name": keys.get("tracking", {}).get("run_name") or f"{group}-{stage}"}
    if cfg.tracking_mode is not None:
        tracking["mode"] = cfg.tracking_mode
    wiring["tracking"] = tracking

    if switches.get("from_sft", stage in ("ppo", "dpo")):
        if "name_or_path" in keys.get("model", {}):
            raise ConfigError(
                f"{source}: '{stage}.model.name_or_path' is set, but the stage starts from "
                f"the SFT model; set '{stage}.from_sft: false' to choose its model"
            )
        wiring.setdefault("model", {})["name_or_path"] = handoff_dir(upstream["sft"])
    if stage == "ppo" and switches.get("from_rm", "rm" in cfg.stages):
        if "model" in keys.get("reward", {}):
            raise ConfigError(
                f"{source}: 'ppo.reward.model' is set, but PPO scores with the rm stage's "
                "model; set 'ppo.from_rm: false' to choose the reward"
            )
        # The trained reward model replaces the stage file's reward functions (a judge kept for
        # evaluation would otherwise leak into the reward); section keys may add functions back.
        wiring["reward"] = {"model": handoff_dir(upstream["rm"]), "functions": [], "weights": []}
        for key in ("functions", "weights"):
            if key in keys.get("reward", {}):
                wiring["reward"][key] = keys["reward"][key]
    stage_cfg = load_config(config_class(stage), switches.get("config"), [], extra=merge(keys, wiring))
    strategy = stage_cfg.model.adapt.strategy
    if stage == "sft" and strategy in ("lora", "qlora"):  # the next stages load merged weights
        stage_cfg = replace_path(stage_cfg, "model.adapt.merge", True)
    elif stage == "sft" and strategy == "prefix":
        raise ConfigError(
            f"{source}: sft.model.adapt.strategy 'prefix' cannot be merged into weights for "
            "the next stages; use lora or full in a pipeline"
        )
    return stage_cfg


def decide_stage(stage: str, stage_cfg: Any, in_pipeline: bool) -> StagePlan:
    from rlhf.runtime.checkpoint import complete_checkpoints

    out = Path(stage_cfg.output_dir)
    saved_path = out / "config.yaml"
    if saved_path.is_file():
        saved = yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {}
        changes = config_changes(saved, to_dict(stage_cfg))
        if changes:
            shown = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
            raise PipelineError(
                f"stage {stage}: {out} holds a run with another config ({shown}). Remove {out} to run "
                "the stage again with the new config, or give the pipeline another output_dir."
            )
    if is_done(out):
        return StagePlan(stage, stage_cfg, "done")
    if not in_pipeline:
        return StagePlan(stage, stage_cfg, "missing")
    found = complete_checkpoints(out)
    if found:
        return StagePlan(stage, stage_cfg, "resume", str(found[-1]))
    return StagePlan(stage, stage_cfg, "run")


def plan(cfg: PipelineConfig, source: str = "pipeline") -> dict[str, StagePlan]:
    """Every stage that runs or feeds one, resolved and decided (reads files, writes nothing)."""
    plans: dict[str, StagePlan] = {}
    needed = set(cfg.stages)
    for stage in ("ppo", "dpo", "rm"):
        if stage in cfg.stages and getattr(cfg, stage).get("from_sft", stage in ("ppo", "dpo")):
            needed.add("sft")
    if "ppo" in cfg.stages and cfg.ppo.get("from_rm", "rm" in cfg.stages):
        needed.add("rm")
    for stage in STAGE_ORDER:
        if stage not in needed:
            continue
        stage_cfg = _resolve(cfg, stage, source, plans)
        plans[stage] = _unless_stale(decide_stage(stage, stage_cfg, stage in cfg.stages), plans, cfg.stages)
        if plans[stage].action == "missing":
            users = [s for s in cfg.stages if s != stage]
            raise PipelineError(
                f"stage {stage} is not among the stages {cfg.stages}, but {', '.join(users)} start(s) from "
                f"its output and {stage_cfg.output_dir} holds no finished {stage} run; add '{stage}' to "
                f"stages, or set the section's from_{stage}: false"
            )
    return plans


def _unless_stale(stage_plan: StagePlan, plans: dict[str, StagePlan], stages: list[str]) -> StagePlan:
    """The plan, or a "rerun" with overwrite=true when the run in the folder was made from other
    models than its upstream stages hand on now (see ``rlhf.orchestration.stale``)."""
    if stage_plan.action not in ("done", "resume"):
        return stage_plan
    upstream = {name: (handoff_dir(p), p.action) for name, p in plans.items() if name != stage_plan.name}
    reasons = input_changes(stage_plan.cfg, stage_plan.output_dir, upstream, finished=stage_plan.action == "done")
    if not reasons:
        return stage_plan
    reason = "; ".join(reasons)
    if stage_plan.name not in stages:
        raise PipelineError(
            f"stage {stage_plan.name} is not among the stages {stages}, but others start from its output, "
            f"and its run in {stage_plan.output_dir} is stale ({reason}); add '{stage_plan.name}' to stages"
        )
    return StagePlan(stage_plan.name, replace_path(stage_plan.cfg, "overwrite", True), "rerun", reason=reason)


def describe_plan(plans: dict[str, StagePlan]) -> str:
    lines = ["stage  action                  output"]
    for name, p in plans.items():
        action = {
            "run": "run",
            "done": "done, skipped",
            "resume": f"resume from {Path(p.checkpoint).name}" if p.checkpoint else "resume",
            "rerun": "rerun (stale)",
        }[p.action]
        lines.append(f"{name:<6} {action:<23} {p.output_dir}")
    lines += [f"{name}: rerun, {p.reason}" for name, p in plans.items() if p.action == "rerun"]
    return "\n".join(lines)


def run(cfg: PipelineConfig, source: str = "pipeline") -> dict:
    """Runs the planned stages, then the evaluation; returns what pipeline.json records."""
    started = time.time()
    plans = plan(cfg, source)
    main = launched_as_main()
    if main:
        print(f"rlhf pipeline: {source} -> {cfg.output_dir}\n{describe_plan(plans)}", flush=True)
    record: dict[str, Any] = {"config": to_dict(cfg), "stages": {}}
    with shared_process_group():
        for name, p in plans.items():
            entry = {"output_dir": str(p.output_dir), "action": p.action}
            if p.action in ("run", "resume", "rerun"):
                if main:
                    print(f"\n== {name} ({p.action}) -> {p.output_dir}", flush=True)
                stage_started = time.time()
                run_function(name)(p.cfg)
                entry["wall_time_s"] = round(time.time() - stage_started, 1)
            entry["summary"] = json.loads((p.output_dir / "summary.json").read_text()) if main else None
            record["stages"][name] = entry
    if not main:  # evaluation and the record are the main process's
        return record
    if cfg.eval.enabled:
        with unpartitioned_loading():  # the main process evaluates alone
            record["eval"] = _evaluate(cfg, plans)
    record["wall_time_s"] = round(time.time() - started, 1)
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    tmp = Path(cfg.output_dir) / "pipeline.json.tmp"
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, Path(cfg.output_dir) / "pipeline.json")
    return record


def _evaluate(cfg: PipelineConfig, plans: dict[str, StagePlan]) -> dict | None:
    """`rlhf eval` of the trained policies against the SFT policy, skipped when already done."""
    from rlhf.eval.run import run_eval

    policies = {name: str(plans[name].output_dir) for name in ("sft", "ppo", "dpo") if name in plans}
    reward_model = handoff_dir(plans["rm"]) if cfg.eval.reward_model and "rm" in plans else None
    if len(policies) < 2 or not (cfg.eval.judge or reward_model):
        print(
            "\nrlhf pipeline: evaluation skipped (it needs the SFT policy and a trained one, and "
            "eval.judge or a reward model)",
            flush=True,
        )
        return None
    out = Path(cfg.output_dir) / "eval"
    # The models' fingerprints: a policy retrained into the same folder is evaluated again.
    models = {**{name: handoff_dir(plans[name]) for name in policies}, **({"rm": reward_model} if reward_model else {})}
    fingerprints = {name: model_fingerprint(path) for name, path in models.items()}
    settings = {"policies": policies, "reward_model": reward_model, "fingerprints": fingerprints, **to_dict(cfg.eval)}
    settings_file = out / "settings.json"
    if (out / "results.json").is_file() and settings_file.is_file():
        if json.loads(settings_file.read_text()) == json.loads(json.dumps(settings)):
            print(f"\n== eval: done, skipped ({out / 'results.md'})", flush=True)
            return {"output_dir": str(out), "action": "done"}
    print(f"\n== eval -> {out}", flush=True)
    run_eval(
        policies,
        out=str(out),
        judge=cfg.eval.judge,
        reward_model=reward_model,
        baseline="sft",
        prompts=cfg.eval.prompts,
        seeds=tuple(cfg.eval.seeds),
        temperature=cfg.eval.temperature,
        top_p=cfg.eval.top_p,
        max_new_tokens=cfg.eval.max_new_tokens,
        batch_size=cfg.eval.batch_size,
        device=cfg.eval.device,
    )
    settings_file.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
    return {"output_dir": str(out), "action": "run"}
