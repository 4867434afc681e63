"""bench.py's sft / rm / rm-kwise / dpo comparisons: each side in a fresh child process, then the table."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from bench_common import (
    LORA,
    PAIRS_PER_RANKING,
    RANKED_K,
    RANKED_NOISE,
    REPO,
    _hh_path,
    _trl_version,
    peak_gpu,
    peak_rss,
)
from bench_ours import _ours_dpo, _ours_rm, _ours_rm_kwise, _ours_sft
from bench_trl import _trl_dpo, _trl_rm, _trl_rm_kwise, _trl_sft


def _child(args) -> None:
    os.environ.setdefault("WANDB_MODE", "disabled")
    runners = {
        ("sft", "ours"): _ours_sft,
        ("sft", "trl"): _trl_sft,
        ("rm", "ours"): _ours_rm,
        ("rm", "trl"): _trl_rm,
        ("rm-kwise", "ours"): _ours_rm_kwise,
        ("rm-kwise", "trl"): _trl_rm_kwise,
        ("dpo", "ours"): _ours_dpo,
        ("dpo", "trl"): _trl_dpo,
    }
    result = runners[(args.what, args.framework)](args)
    result["peak_rss_bytes"] = peak_rss()
    result["peak_gpu_bytes"] = peak_gpu()
    print("RESULT " + json.dumps(result), flush=True)


def _spawn(args, framework: str) -> dict:
    cmd = [sys.executable, str(Path(__file__).with_name("bench.py")), args.what, "--child", framework]
    for flag in ("model", "steps", "warmup", "batch", "max_length", "examples", "reference", "data", "layout"):
        value = getattr(args, flag)
        if value is not None:
            cmd += ["--" + flag.replace("_", "-"), str(value)]
    for flag in ("gradient_checkpointing", "lora", "packing"):
        if getattr(args, flag):
            cmd.append("--" + flag.replace("_", "-"))
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{framework} run failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def _comparison_name(args) -> str:
    name = args.what if args.what != "dpo" else f"dpo-{args.reference}"
    return name + ("-lora" if args.lora else "")


def _median_or_none(values) -> float | None:
    values = list(values)
    return None if not values or any(v is None for v in values) else statistics.median(values)


def bench_training(args) -> dict:
    """Runs the sft / rm / rm-kwise / dpo comparison, prints its table and returns it (see bench_report)."""
    import bench_report

    if args.steps <= args.warmup:
        raise SystemExit(f"--steps must be more than the {args.warmup} warm-up steps")
    if args.data == "hh" and not _hh_path().is_file():
        message = f"skipped: {_hh_path()} not found"
        print(message)
        return {"comparison": _comparison_name(args), "skipped": message}
    runs: dict[str, list[dict]] = {"ours": [], "trl": []}
    for repeat in range(args.repeats):
        for framework in ("ours", "trl") if repeat % 2 == 0 else ("trl", "ours"):
            runs[framework].append(_spawn(args, framework))
            print(f"  repeat {repeat + 1}/{args.repeats} {framework}: {runs[framework][-1]}", file=sys.stderr)
    # rm-kwise: a step is --batch prompts on both sides (TRL: their 6 pairs each).
    per_step = args.batch if args.what == "rm-kwise" else 1
    table = {}
    for framework, results in runs.items():
        step = statistics.median(r["step_time_s"] for r in results)
        tokens = statistics.median(r["tokens_per_step"] for r in results)
        gpu = [r["peak_gpu_bytes"] for r in results if r.get("peak_gpu_bytes") is not None]
        table[framework] = {
            "steps_per_s": 1.0 / step,
            "throughput": per_step / step,
            "tokens_per_s": tokens / step,
            "tokens_computed_per_step": _median_or_none(r.get("tokens_computed") for r in results),
            "tokens_unshared_per_step": _median_or_none(r.get("tokens_unshared") for r in results),
            "peak_rss_mib": statistics.median(r["peak_rss_bytes"] for r in results) / 2**20,
            "peak_gpu_mib": statistics.median(gpu) / 2**20 if gpu else None,
        }
    setting = f", data {args.data}"
    if args.what == "dpo":
        trl_reference = (
            "precompute_ref_log_probs=True"
            if args.reference == "precompute"
            else "frozen copy on the fly (TRL default)"
        )
        setting += (
            f", reference: ours reference={args.reference} vs TRL {trl_reference}"
            f", tokens = chosen + rejected reply tokens"
        )
    if args.what == "rm-kwise":
        setting += f", {args.batch} prompts x K={RANKED_K} per step (TRL: {PAIRS_PER_RANKING * args.batch} pairs)"
    if args.lora:
        setting += f", LoRA r{LORA['r']} alpha {LORA['alpha']:g} {LORA['target_modules']}"
    if args.layout:
        setting += f", layout {args.layout}"
    if args.packing:
        setting += ", packing (TRL: packing=True, bfd, padding-free)"
    if args.gradient_checkpointing:
        setting += ", gradient checkpointing"
    unit = "prompts/s" if args.what == "rm-kwise" else "steps/s"
    print(
        f"{args.what.upper()} {args.model}: batch {args.batch}, max_length {args.max_length}, fp32, {args.steps} steps "
        f"({args.warmup} warm-up not timed), median of {args.repeats}{setting}"
    )
    gpu = all(row["peak_gpu_mib"] is not None for row in table.values())
    print(
        f"{'':8}{unit:>10}{'tokens/s':>12}{'computed/step':>15}{'peak RSS MiB':>15}"
        + (f"{'peak GPU MiB':>15}" if gpu else "")
    )
    for framework, row in table.items():
        computed = row["tokens_computed_per_step"]
        print(
            f"{framework:8}{row['throughput']:>10.2f}{row['tokens_per_s']:>12.0f}"
            f"{'-' if computed is None else f'{computed:.0f}':>15}{row['peak_rss_mib']:>15.0f}"
            + (f"{row['peak_gpu_mib']:>15.0f}" if gpu else "")
        )
    ours, trl = table["ours"], table["trl"]
    memory, memory_kind = bench_report.memory_ratio(ours, trl)
    unshared = ours["tokens_unshared_per_step"]
    saved = (
        1.0 - ours["tokens_computed_per_step"] / unshared
        if unshared and ours["tokens_computed_per_step"] is not None
        else None
    )
    result = {
        "comparison": _comparison_name(args),
        "baseline": f"TRL {_trl_version()}",
        "unit": unit,
        "ours": ours,
        "trl": trl,
        "ratio": {
            "steps_per_s": bench_report.ratio(ours["steps_per_s"], trl["steps_per_s"]),
            "throughput": bench_report.ratio(ours["throughput"], trl["throughput"]),
            "tokens_per_s": bench_report.ratio(ours["tokens_per_s"], trl["tokens_per_s"]),
            "peak_memory": memory,
            "memory": memory_kind,
        },
        "saved_vs_unshared": saved,
        "settings": {
            "model": args.model,
            "batch": args.batch,
            "max_length": args.max_length,
            "steps": args.steps,
            "warmup_steps": args.warmup,
            "repeats": args.repeats,
            **({"data": args.data} if args.data != "synthetic" else {}),
            **(
                {"kwise": RANKED_K, "noise": RANKED_NOISE, "trl_pairs_per_step": PAIRS_PER_RANKING * args.batch}
                if args.what == "rm-kwise"
                else {}
            ),
            **({"reference": args.reference} if args.what == "dpo" else {}),
            **({"lora": f"r{LORA['r']}"} if args.lora else {}),
            **({"layout": args.layout} if args.layout else {}),
            **({"packing": "ours data.packing, TRL packing=True (bfd, padding-free)"} if args.packing else {}),
            **({"gradient_checkpointing": True} if args.gradient_checkpointing else {}),
        },
    }
    tokens = f", tokens/s x{result['ratio']['tokens_per_s']:.2f}" if result["ratio"]["tokens_per_s"] else ""
    saved_text = f", ours computes {saved:.1%} fewer tokens than unshared rows" if saved is not None else ""
    print(
        f"ratio ours/trl: {unit} x{result['ratio']['throughput']:.2f}{tokens}, "
        f"peak memory ({memory_kind}) x{memory:.2f}{saved_text}"
    )
    return result
