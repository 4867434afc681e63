"""bench.py all: every comparison (tiny and SmolLM2-135M rows) in one run, one table, the docs block."""

from __future__ import annotations

import contextlib
import copy
import json
import shlex
import sys
import time
import traceback

from bench_common import SMOLLM2
from bench_training import bench_training

QUICK = {"steps": 6, "repeats": 1, "examples": 200, "ppo_steps": 4}
# SmolLM2-135M-Instruct rows: fp32, max_length 512, batch 4 (rm-kwise: 2 prompts), 12 steps with 2 warm-up
# (batches differ in length from step to step: 10 timed steps keep the mean within a few percent).
SMOLLM2_SETTINGS = {"max_length": 512, "batch": 4, "kwise_batch": 2, "steps": 12, "warmup": 2, "examples": 64}
SMOLLM2_PPO = {"batch": 8, "response_length": 24, "epochs": 4, "steps": 6}
SMOLLM2_QUICK = {"steps": 3, "warmup": 1, "examples": 24, "ppo_steps": 3}
# ours / TRL goals of the SmolLM2 rows: throughput at least, peak memory at most.
GOALS = {
    "sft": {"throughput": 1.3},
    "rm": {"throughput": 2.0, "memory": 1.0},
    "rm-kwise": {"throughput": 3.0},
    "dpo-precompute": {"throughput": 1.5, "memory": 1.0},
    "dpo-precompute-lora": {"throughput": 1.5, "memory": 1.0},
    "ppo-lora": {"throughput": 3.0, "memory": 0.7},
}


def _smollm2_comparisons(args, stage, ppo_parser) -> dict:
    """The SmolLM2-135M rows: name -> a function returning its result."""
    import bench_ppo

    base = copy.copy(stage)
    base.model = SMOLLM2
    base.max_length, base.batch = SMOLLM2_SETTINGS["max_length"], SMOLLM2_SETTINGS["batch"]
    base.steps = args.smollm2_steps or (SMOLLM2_QUICK["steps"] if args.quick else SMOLLM2_SETTINGS["steps"])
    base.warmup = args.smollm2_warmup or (SMOLLM2_QUICK["warmup"] if args.quick else SMOLLM2_SETTINGS["warmup"])
    base.examples = args.smollm2_examples or (SMOLLM2_QUICK["examples"] if args.quick else SMOLLM2_SETTINGS["examples"])
    base.repeats = args.smollm2_repeats

    def training(what: str, **changes):
        def run() -> dict:
            run_args = copy.copy(base)
            run_args.what = what
            for key, value in changes.items():
                setattr(run_args, key, value)
            return bench_training(run_args)

        return run

    ppo_steps = SMOLLM2_QUICK["ppo_steps"] if args.quick else SMOLLM2_PPO["steps"]
    ppo_args = ppo_parser.parse_args(
        [
            "--model", SMOLLM2, "--lora", "--repeats", str(args.smollm2_repeats), "--steps", str(ppo_steps),
            "--batch", str(SMOLLM2_PPO["batch"]), "--response-length", str(SMOLLM2_PPO["response_length"]),
            "--epochs", str(SMOLLM2_PPO["epochs"]),
        ]
    )  # fmt: skip
    shared = args.layout or "shared"
    return {
        # Packed rows hold several examples: 4x the examples keep the steps within one pass.
        "sft": training("sft", data="hh", packing=True, examples=4 * base.examples),
        "rm": training("rm", data="hh", layout=shared),
        "rm-kwise": training("rm-kwise", batch=SMOLLM2_SETTINGS["kwise_batch"], layout=shared),
        "dpo-precompute": training("dpo", data="hh", reference="precompute", layout=shared),
        "dpo-precompute-lora": training("dpo", data="hh", reference="precompute", layout=shared, lora=True),
        "ppo-lora": lambda: bench_ppo.bench(ppo_args),
    }


def _goal(name: str, result: dict) -> dict | None:
    goal = GOALS.get(name)
    if goal is None:
        return None
    if "ratio" not in result:  # failed or skipped
        return {**goal, "met": None}
    ratio = result["ratio"]
    throughput = ratio.get("throughput", ratio["steps_per_s"])
    met = throughput is not None and throughput >= goal["throughput"]
    if "memory" in goal:
        met = met and ratio["peak_memory"] is not None and ratio["peak_memory"] <= goal["memory"]
    return {**goal, "met": met}


def bench_all(args, argv: list[str]) -> int:
    """Every comparison in one run, then one table; with --write, the docs block. Exit status."""
    import bench_ppo
    import bench_report

    wall_start = time.perf_counter()
    sizes = args.sizes.split(",")
    unknown = [s for s in sizes if s not in ("tiny", "smollm2")]
    if unknown:
        raise SystemExit(f"--sizes: unknown size(s) {unknown}; choose from tiny, smollm2")
    stage = copy.copy(args)
    stage.data, stage.lora, stage.packing, stage.reference = "synthetic", False, False, "precompute"
    # Tiny rows keep their documented settings: the stage's default prompt layout, no --layout.
    stage.layout = None
    if args.quick:
        stage.steps, stage.repeats, stage.examples = QUICK["steps"], QUICK["repeats"], QUICK["examples"]
        args.smollm2_repeats = 1
    if stage.steps <= stage.warmup:
        raise SystemExit(f"--steps must be more than the {stage.warmup} warm-up steps")
    if args.write:  # fail now, not after the whole run
        try:
            with open(args.write, encoding="utf-8", newline="") as handle:
                bench_report.replace_block(handle.read(), bench_report.render_block("", "", "", args.quick))
        except (OSError, ValueError) as error:
            raise SystemExit(f"--write {args.write}: {error}") from None
    # PPO gets bench_ppo.py's own defaults, overridden only where asked.
    ppo_parser = bench_ppo.build_parser()
    ppo_argv = ["--model", args.model, "--repeats", str(stage.repeats)]
    ppo_steps = QUICK["ppo_steps"] if args.quick and args.ppo_steps is None else args.ppo_steps
    for flag, value in (
        ("--steps", ppo_steps),
        ("--batch", args.ppo_batch),
        ("--response-length", args.response_length),
    ):
        if value is not None:
            ppo_argv += [flag, str(value)]
    ppo_args = ppo_parser.parse_args(ppo_argv)

    def training(what: str, reference: str = "precompute"):
        def run() -> dict:
            run_args = copy.copy(stage)
            run_args.what, run_args.reference = what, reference
            return bench_training(run_args)

        return run

    comparisons = {}
    if "tiny" in sizes:
        comparisons.update(
            {
                "sft": training("sft"),
                "rm": training("rm"),
                "dpo-precompute": training("dpo", "precompute"),
                "dpo-copy": training("dpo", "copy"),
                "ppo": lambda: bench_ppo.bench(ppo_args),
            }
        )
    if "smollm2" in sizes:
        for name, run in _smollm2_comparisons(args, stage, ppo_parser).items():
            comparisons[f"smollm2:{name}"] = run
    if args.only:
        wanted = args.only.split(",")
        selected = [name for name in comparisons if name in wanted or name.split(":")[-1] in wanted]
        unknown = [w for w in wanted if not any(n == w or n.split(":")[-1] == w for n in comparisons)]
        if unknown:
            raise SystemExit(f"--only: unknown comparison(s) {unknown}; choose from {list(comparisons)}")
    else:
        selected = list(comparisons)
    results = []
    for name in selected:
        print(f"== {name} ==", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            # The per-stage table goes to stderr so that stdout holds the one final table.
            with contextlib.redirect_stdout(sys.stderr):
                result = comparisons[name]()
        except (Exception, SystemExit) as error:  # one failed comparison must not lose the others
            traceback.print_exc(file=sys.stderr)
            result = {"error": f"{type(error).__name__}: {error}"}
        result["comparison"] = name
        result["wall_s"] = time.perf_counter() - start
        if name.startswith("smollm2:"):
            result["goal"] = _goal(name.split(":", 1)[1], result)
        results.append(result)
        print(f"== {name}: {result['wall_s']:.0f} s ==", file=sys.stderr, flush=True)

    table = bench_report.format_table(results)
    machine = bench_report.format_machine(bench_report.machine_info(), ppo_trl=bench_ppo.TRL_VERSION)
    command = "python scripts/bench/bench.py " + shlex.join(argv)
    total = time.perf_counter() - wall_start
    if args.quick:
        print("QUICK SMOKE RUN (few steps, 1 repeat): not for quoting")
    print(table)
    print(f"\nMachine: {machine}\nCommand: {command}\nTotal wall time: {bench_report.format_duration(total)}")
    failed = [r["comparison"] for r in results if "error" in r]
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(
                {"results": results, "machine": machine, "command": command, "quick": args.quick, "wall_s": total},
                handle,
                indent=2,
            )
    if failed:
        print(f"failed: {', '.join(failed)}" + ("; not writing " + args.write if args.write else ""), file=sys.stderr)
        return 1
    if args.write:
        with open(args.write, encoding="utf-8", newline="") as handle:
            text = handle.read()
        block = bench_report.render_block(table, machine, command, quick=args.quick, wall_s=total)
        with open(args.write, "w", encoding="utf-8", newline="") as handle:
            handle.write(bench_report.replace_block(text, block))
        print(f"wrote the bench:all block of {args.write}", file=sys.stderr)
    return 0
