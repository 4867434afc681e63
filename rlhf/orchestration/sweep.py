"""`rlhf sweep`: trials of a stage or a pipeline over a grid or random draws of config keys.

Trials run one after another in this process, each in ``<output_dir>/trial-NNN``. Running the
same sweep again skips finished trials and resumes an interrupted one (the pipeline's and the
stages' own skip / resume rules). The table of every trial's metrics, with the best one
marked, goes to ``results.md`` and ``sweep.json``; when the trials report a KL and a reward,
``frontier.png`` plots one against the other per method.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from rlhf.config.loader import ConfigError, load_config, merge, param, to_dict
from rlhf.stages.registry import STAGE_ORDER, config_class, run_function
from rlhf.stages.stopped import RunStopped

COMMANDS = ("pipeline", *STAGE_ORDER)


@dataclass(frozen=True)
class SweepConfig:
    """A search over config keys of one stage or of a pipeline.

    Keys are dotted as on the command line: ``optim.lr`` for a stage, ``dpo.dpo.beta`` or
    ``ppo.kl.coef`` for a pipeline (section, then the stage's key).
    """

    command: Literal["pipeline", "sft", "rm", "ppo", "dpo"] = param("pipeline", "What each trial runs.")
    base: Optional[str] = param(None, "The stage or pipeline YAML every trial starts from.")
    output_dir: str = param("runs/sweep", "Folder of the trials (trial-000, ...), results.md and sweep.json.")
    method: Literal["grid", "random"] = param(
        "grid",
        "grid: every combination of `grid` values (each entry of `grids` on its own); random: "
        "`trials` draws, each key's value picked from its list or from its `ranges` interval.",
    )
    trials: int = param(0, "random: number of trials (grid: 0 = all combinations, else the first N).")
    seed: int = param(0, "Seed of the random draws.")
    fixed: dict[str, Any] = param(default_factory=dict, doc="Dotted key -> value set in every trial.")
    grid: dict[str, list[Any]] = param(default_factory=dict, doc="Dotted key -> values to try.")
    grids: list[dict[str, list[Any]]] = param(
        default_factory=list,
        doc="Several grids whose trials are run one after the other (e.g. one per method, each with its own `stages`).",
    )
    ranges: dict[str, dict[str, Any]] = param(
        default_factory=dict, doc="random: dotted key -> {min, max, log (bool), int (bool)}."
    )
    metric: str = param(
        "win_rate",
        "Column that picks the best trial (pipeline: an eval metric of a policy, "
        "e.g. win_rate, judge; stage: a summary key, e.g. eval_loss).",
    )
    mode: Literal["max", "min"] = param("max", "Whether the best trial has the largest or smallest metric.")
    frontier_x: str = param("kl", "Frontier plot: x column (KL to the reference).")
    frontier_y: str = param("judge", "Frontier plot: y column (judge or reward).")

    def __post_init__(self) -> None:
        if self.base is None:
            raise ValueError("base: give the stage or pipeline YAML the trials start from")
        if self.method == "grid" and self.ranges:
            raise ValueError("ranges are for method: random; a grid takes lists of values in `grid`")
        if self.method == "random" and self.trials <= 0:
            raise ValueError("method random needs trials > 0")
        if not (self.grid or self.grids or self.ranges):
            raise ValueError("give the keys to search in grid, grids or ranges")


def _nest(flat: dict[str, Any]) -> dict:
    out: dict = {}
    for key, value in flat.items():
        for part in reversed(key.split(".")):
            value = {part: value}
        out = merge(out, value)
    return out


def trial_params(cfg: SweepConfig) -> list[dict[str, Any]]:
    """The dotted-key values of each trial, in run order (deterministic for a given seed)."""
    grids = [cfg.grid] if cfg.grid else []
    grids += list(cfg.grids)
    if cfg.method == "grid":
        combos = []
        for grid in grids:
            keys = list(grid)
            combos += [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
        return combos[: cfg.trials] if cfg.trials > 0 else combos
    rng = random.Random(cfg.seed)
    draws = []
    for _ in range(cfg.trials):
        grid = rng.choice(grids) if grids else {}
        params = {key: rng.choice(values) for key, values in grid.items()}
        for key, spec in cfg.ranges.items():
            params[key] = _draw(rng, key, spec)
        draws.append(params)
    return draws


def _draw(rng: random.Random, key: str, spec: dict) -> float | int:
    try:
        low, high = float(spec["min"]), float(spec["max"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"sweep: ranges.{key} needs numeric min and max, got {spec!r}") from None
    unknown = set(spec) - {"min", "max", "log", "int"}
    if unknown or low > high or (spec.get("log") and low <= 0):
        raise ConfigError(
            f"sweep: ranges.{key} = {spec!r}: expected {{min, max, log, int}} with min <= max (and min > 0 for log)"
        )
    value = math.exp(rng.uniform(math.log(low), math.log(high))) if spec.get("log") else rng.uniform(low, high)
    return int(round(value)) if spec.get("int") else float(f"{value:.4g}")


def _label(params: dict[str, Any]) -> str:
    return ", ".join(f"{key.split('.')[-1]}={value}" for key, value in params.items() if key != "stages")


def _run_trial(cfg: SweepConfig, name: str, params: dict[str, Any]) -> Path:
    """Runs (or skips / resumes) one trial; returns its folder."""
    from rlhf.orchestration.pipeline import PipelineError, decide_stage
    from rlhf.orchestration.pipeline import run as run_pipeline
    from rlhf.orchestration.pipeline_config import PipelineConfig

    folder = Path(cfg.output_dir) / name
    extra = merge(_nest({**cfg.fixed, **params}), {"output_dir": str(folder)})
    where = f"{cfg.base}, {name} ({_label(params) or 'fixed keys only'})"
    if cfg.command == "pipeline":
        extra.setdefault("group", f"{Path(cfg.output_dir).name}-{name}")
        try:
            run_pipeline(load_config(PipelineConfig, cfg.base, [], extra=extra), where)
        except (ConfigError, PipelineError) as err:
            raise ConfigError(f"sweep {where}: {err}") from None
        return folder
    extra = merge(
        extra,
        {"checkpoint": {"resume_from": "latest"}, "tracking": {"group": Path(cfg.output_dir).name, "run_name": name}},
    )
    stage_cfg = load_config(config_class(cfg.command), cfg.base, [], extra=extra)
    if decide_stage(cfg.command, stage_cfg, True).action != "done":
        run_function(cfg.command)(stage_cfg)
    return folder


def _stopped_row(name: str, params: dict[str, Any], stopped: RunStopped) -> dict[str, Any]:
    values = {k: v for k, v in params.items() if k != "stages"}
    return {"trial": name, "label": _label(params), **values, "status": f"stopped at step {stopped.step}"}


def trial_rows(cfg: SweepConfig, name: str, params: dict[str, Any], folder: Path) -> list[dict[str, Any]]:
    """Table rows of a finished trial: one per evaluated policy (pipeline) or one (stage)."""
    base = {"trial": name, "label": _label(params), **{k: v for k, v in params.items() if k != "stages"}}
    if cfg.command != "pipeline":
        summary = json.loads((folder / "summary.json").read_text())
        return [
            {**base, **{k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}}
        ]
    results_file = folder / "eval" / "results.json"
    if not results_file.is_file():
        raise ConfigError(
            f"sweep: {name} has no evaluation ({results_file}); pipeline trials need eval "
            "(eval.enabled, eval.judge or a reward model)"
        )
    results = json.loads(results_file.read_text())
    rows = []
    for policy, row in results["policies"].items():
        values = {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        is_baseline = policy == results["baseline"]
        head = {"trial": name, "label": policy} if is_baseline else base  # the baseline is not what was swept
        rows.append({**head, "policy": policy, "baseline": is_baseline, "path": row["path"], **values})
    return rows


def best_index(rows: list[dict], metric: str, mode: str) -> Optional[int]:
    scored = [
        (row[metric], i)
        for i, row in enumerate(rows)
        if isinstance(row.get(metric), (int, float)) and not row.get("baseline")
    ]
    if not scored:
        return None
    return (max if mode == "max" else min)(scored)[1]


def table(rows: list[dict], keys: list[str], metric: str, best: Optional[int]) -> str:
    """Markdown table of the rows (baselines included once per trial), the best row in bold."""
    shown = ["trial"] + (["policy"] if any("policy" in r for r in rows) else []) + keys
    columns = [c for c in shown if any(c in r for r in rows)]
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for i, row in enumerate(rows):
        cells = []
        for column in columns:
            value = row.get(column, "")
            text = f"{value:.4g}" if isinstance(value, float) else str(value)
            cells.append(f"**{text}**" if i == best and column in ("trial", metric) else text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run(cfg: SweepConfig) -> dict:
    """Every trial, then the table, sweep.json and (when there is a KL and a score) frontier.png."""
    from rlhf.runtime.backend import launched_as_main, shared_process_group

    trials = trial_params(cfg)
    main = launched_as_main()
    out = Path(cfg.output_dir)
    rows: list[dict] = []
    with shared_process_group():
        for number, params in enumerate(trials):
            name = f"trial-{number:03d}"
            if main:
                print(f"\n=== sweep {out}: {name} of {len(trials)}: {_label(params) or 'fixed keys only'}", flush=True)
            try:
                folder = _run_trial(cfg, name, params)
            except RunStopped as stopped:  # a diverged trial is a result of the sweep, not its end
                if main:
                    print(f"sweep: {name} stopped: {stopped.reason}", flush=True)
                    rows.append(_stopped_row(name, params, stopped))
                continue
            if main:
                rows += trial_rows(cfg, name, params, folder)
    if not main:
        return {}
    swept = list(dict.fromkeys(k for p in trials for k in p if k != "stages"))
    metrics = ["judge", "reward", "win_rate", "kl", "length", "eos_rate"] if cfg.command == "pipeline" else []
    keys = swept + [m for m in metrics if m != cfg.metric] + [cfg.metric] + ["status"]
    stopped = [row for row in rows if row.get("status", "").startswith("stopped")]
    best = best_index(rows, cfg.metric, cfg.mode)
    # a baseline policy shared by the trials (one SFT run) is shown once
    shown, paths = [], set()
    for i, row in enumerate(rows):
        if row.get("baseline"):
            if row.get("path") in paths:
                continue
            paths.add(row.get("path"))
        shown.append(i)
    text = table([rows[i] for i in shown], keys, cfg.metric, shown.index(best) if best is not None else None)
    best_line = (
        (
            f"Best ({cfg.mode} {cfg.metric}): {rows[best]['trial']}"
            + (f" {rows[best]['policy']}" if "policy" in rows[best] else "")
            + f" ({rows[best]['label']}): {cfg.metric} = {rows[best][cfg.metric]:.4g}\n"
        )
        if best is not None
        else f"No trial reported {cfg.metric!r}.\n"
    )
    if stopped:
        best_line += f"{len(stopped)} of {len(trials)} trial(s) stopped on a non-finite value (status column).\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(text + "\n" + best_line, encoding="utf-8")
    record = {"config": to_dict(cfg), "trials": trials, "rows": rows, "best": best, "stopped": len(stopped)}
    frontier = _frontier(cfg, rows, out)
    if frontier:
        record["frontier_png"] = str(frontier)
    (out / "sweep.json").write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    print("\n" + text + "\n" + best_line + (f"Frontier: {frontier}\n" if frontier else ""), flush=True)
    return record


def _frontier(cfg: SweepConfig, rows: list[dict], out: Path) -> Optional[Path]:
    x, y = cfg.frontier_x, cfg.frontier_y
    points = [r for r in rows if x in r and y in r]
    if cfg.command != "pipeline" or len(points) < 2:
        return None
    from rlhf.eval.plots import plot_frontier

    seen_baseline = False
    plotted = []
    for row in points:
        if row.get("baseline"):
            if seen_baseline:  # the same SFT policy in every trial: one point
                continue
            seen_baseline = True
            plotted.append({**row, "method": "baseline", "label": row["policy"]})
        else:
            plotted.append({**row, "method": row["policy"]})
    return plot_frontier(plotted, out / "frontier.png", x=x, y=y, series="method", label="label")
