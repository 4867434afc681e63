"""The report side of ``python scripts/bench/bench.py all``: one table from the per-stage results, the
machine it ran on, and the marked block of docs/benchmarks.md that the table replaces.

Pure formatting (no torch at import time), so the unit tests can feed it hand-made results.

A comparison's result, as ``bench.bench_training`` and ``bench_ppo.bench`` return it::

    {"comparison": "sft", "baseline": "TRL 1.16.0", "unit": "steps/s",
     "ours": {"steps_per_s": 81.1, "tokens_per_s": 30144.0, "peak_rss_mib": 436.0, "peak_gpu_mib": None},
     "trl":  {... the same keys ...},
     "ratio": {"steps_per_s": 1.32, "tokens_per_s": 1.33, "peak_memory": 0.75, "memory": "RSS"},
     "settings": {"model": "builtin:tiny", "batch": 8, "max_length": 256, "steps": 30,
                  "warmup_steps": 3, "repeats": 3}}

``ratio["tokens_per_s"]`` is None where tokens are not counted (RM). A comparison that failed is
``{"comparison": name, "error": "..."}`` and shows as a FAILED row; one that could not run here
(its data file is absent) is ``{"comparison": name, "skipped": "skipped: ... not found"}``, a
skipped row.

Optional keys, shown in the columns after the settings when present: ``ours`` / ``trl``
``throughput`` (the unit's value where it is not steps/s, with ``ratio["throughput"]``),
``tokens_computed_per_step`` (token slots fed to the model per step, padding included),
``saved_vs_unshared`` (ours: 1 - computed / what separate right-padded rows would hold),
``goal`` ({"throughput": 2.0, "memory": 1.0, "met": True}: ours / baseline at least / at most)
and ``wall_s`` (the comparison's wall time).
"""

from __future__ import annotations

import datetime
import os
import platform
from typing import Optional

START = "<!-- bench:all:start -->"
END = "<!-- bench:all:end -->"

COLUMNS = [
    "comparison",
    "baseline",
    "unit",
    "ours",
    "baseline /s",
    "throughput ours/base",
    "tokens/s ours/base",
    "peak memory ours/base",
    "settings",
    "tokens/step ours",
    "tokens/step base",
    "ours saved vs unshared",
    "goal",
    "wall s",
]
ALIGN = ["---", "---", "---", "---:", "---:", "---:", "---:", "---:", "---", "---:", "---:", "---:", "---", "---:"]


def ratio(ours: Optional[float], baseline: Optional[float]) -> Optional[float]:
    """ours / baseline, or None where either side was not measured (None or 0)."""
    if not ours or not baseline:
        return None
    return ours / baseline


def memory_ratio(ours: dict, trl: dict) -> tuple[Optional[float], str]:
    """Peak GPU memory where both sides ran on a GPU (what limits a GPU run), else peak RSS."""
    gpu = ratio(ours.get("peak_gpu_mib"), trl.get("peak_gpu_mib"))
    if gpu is not None:
        return gpu, "GPU"
    return ratio(ours.get("peak_rss_mib"), trl.get("peak_rss_mib")), "RSS"


def format_settings(settings: dict) -> str:
    parts = [str(settings["model"])]
    if "response_length" in settings:  # PPO
        parts.append(f"batch {settings['batch']} prompts")
        parts.append(f"response <= {settings['response_length']} tokens")
        parts.append(f"{settings['epochs']} epochs x {settings['mini_batches']} mini-batch")
    else:
        parts.append(f"batch {settings['batch']}")
        parts.append(f"max_length {settings['max_length']}")
    if settings.get("data"):
        parts.append(f"data {settings['data']}")
    if settings.get("kwise"):
        parts.append(
            f"judged ranked K={settings['kwise']} (noise {settings.get('noise', 0)}%, full rankings), "
            f"TRL {settings['trl_pairs_per_step']} pairs/step"
        )
    if settings.get("reference"):
        parts.append(f"reference {settings['reference']}")
    if settings.get("lora"):
        parts.append(f"LoRA {settings['lora']}")
    if settings.get("layout"):
        parts.append(f"layout {settings['layout']}")
    if settings.get("packing"):
        parts.append(f"packing: {settings['packing']}")
    if settings.get("gradient_checkpointing"):
        parts.append("gradient checkpointing")
    parts.append(f"{settings['steps']} steps ({settings['warmup_steps']} warm-up)")
    repeats = settings["repeats"]
    parts.append(f"median of {repeats} repeats" if repeats != 1 else "1 repeat")
    return ", ".join(parts)


def _number(value: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{value:,.3f}" if value < 10 else f"{value:,.2f}"


def _times(value: Optional[float]) -> str:
    return "-" if value is None else f"x{value:.2f}"


def format_goal(goal: Optional[dict]) -> str:
    """ "throughput >= x2.0, memory <= x1.0: met" (empty without a goal)."""
    if not goal:
        return ""
    parts = [f"throughput >= x{goal['throughput']:.1f}"]
    if goal.get("memory") is not None:
        parts.append(f"memory <= x{goal['memory']:.1f}")
    if goal.get("met") is None:  # the comparison did not run
        return ", ".join(parts) + ": not measured"
    return ", ".join(parts) + (": met" if goal["met"] else ": missed")


def format_duration(seconds: float) -> str:
    """65.2 -> "1 min 5 s"; under a minute, "42 s"."""
    seconds = round(seconds)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min {seconds} s"
    return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def _tokens(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:,.0f}"


def _extra_cells(result: dict) -> list[str]:
    """The columns after the settings: tokens computed per step, share saved, goal, wall time."""
    ours, trl = result.get("ours") or {}, result.get("trl") or {}
    saved = result.get("saved_vs_unshared")
    wall = result.get("wall_s")
    return [
        _tokens(ours.get("tokens_computed_per_step")),
        _tokens(trl.get("tokens_computed_per_step")),
        "-" if saved is None else f"{saved:.1%}",
        format_goal(result.get("goal")),
        "-" if wall is None else f"{wall:,.0f}",
    ]


def format_table(results: list[dict]) -> str:
    """A markdown table, one row per comparison, in the order given."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "| " + " | ".join(ALIGN) + " |"]
    for result in results:
        if "error" in result or "skipped" in result:
            status, text = ("FAILED", result["error"]) if "error" in result else ("skipped", result["skipped"])
            first_line = (text.strip().splitlines() or ["?"])[0]
            cells = [result["comparison"], status, "", "", "", "", "", "", first_line.replace("|", "/")[:120]]
            wall = result.get("wall_s")
            cells += ["", "", "", format_goal(result.get("goal")), "-" if wall is None else f"{wall:,.0f}"]
        else:
            r = result["ratio"]
            memory = _times(r["peak_memory"]) + (f" ({r['memory']})" if r["peak_memory"] is not None else "")
            throughput = r.get("throughput", r["steps_per_s"])
            cells = [
                result["comparison"],
                result["baseline"],
                result["unit"],
                _number(result["ours"].get("throughput", result["ours"]["steps_per_s"])),
                _number(result["trl"].get("throughput", result["trl"]["steps_per_s"])),
                _times(throughput),
                _times(r["tokens_per_s"]),
                memory,
                format_settings(result["settings"]),
                *_extra_cells(result),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine_info() -> dict:
    """Where the numbers came from: CPU, cores, RAM, GPU, library versions, date (UTC)."""
    from importlib import metadata

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ram = None
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        pass
    try:
        cores = len(os.sched_getaffinity(0))  # what this process may use, not the host's total
    except AttributeError:
        cores = os.cpu_count()
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass

    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "cpu": cpu,
        "cores": cores,
        "ram_gib": None if ram is None else ram / 2**30,
        "gpu": gpu,
        "python": platform.python_version(),
        "torch": version("torch"),
        "transformers": version("transformers"),
        "trl": version("trl"),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def format_machine(machine: dict, ppo_trl: Optional[str] = None) -> str:
    ram = "RAM unknown" if machine.get("ram_gib") is None else f"{machine['ram_gib']:.0f} GiB RAM"
    trl = f"trl {machine['trl']}" + (f" (trl {ppo_trl} for PPO)" if ppo_trl else "")
    return (
        f"{machine['cpu']}, {machine['cores']} cores, {ram}, GPU: {machine.get('gpu') or 'none'}; "
        f"Python {machine['python']}, torch {machine['torch']}, transformers {machine['transformers']}, "
        f"{trl}; {machine['date']}"
    )


def render_block(table: str, machine: str, command: str, quick: bool, wall_s: Optional[float] = None) -> str:
    """The whole marked block, markers included, without a trailing newline."""
    lines = [
        START,
        "<!-- Written by `python scripts/bench/bench.py all --write ...`; edits inside this block are overwritten. -->",
        "",
        "## All comparisons in one run",
        "",
    ]
    if quick:
        lines += [
            "**Quick smoke run (`--quick`: few steps, 1 repeat). Not a measurement; do not quote these numbers.**",
            "",
        ]
    lines += [
        f"`{command}`" + ("" if wall_s is None else f" (total wall time {format_duration(wall_s)})"),
        "",
        table,
        "",
        f"Machine: {machine}.",
        "",
        "Ratios are ours / baseline (throughput above 1 = we are faster, memory below 1 = we use "
        "less). Each side runs in fresh processes, alternating; medians over the repeats. "
        "PPO throughput is PPO updates (one rollout batch + its epochs) per second and its tokens "
        "are generated response tokens; DPO tokens are chosen + rejected reply tokens; RM counts "
        "no tokens. rm-kwise throughput is prompts/s (TRL gets the 6 pairs of each K=4 ranking). "
        "Tokens/step are the token slots fed to the model per optimizer step, padding included (TRL: "
        "input_ids of its collated batches); ours saved vs unshared is 1 - computed / what separate "
        "right-padded rows of the same batches would hold. Goals (SmolLM2 rows) are ours / baseline "
        "ratios: throughput at least, peak memory at most. Wall s is each row's wall time (both sides, "
        "all repeats, model loading included). Memory is peak GPU memory where both sides ran on a GPU, else peak RSS of "
        "the process. The per-stage sections below explain each setting.",
        END,
    ]
    return "\n".join(lines)


def _insertion_point(text: str) -> int:
    """Offset of the first second-level heading outside code fences (so: after the intro), or the end."""
    offset = 0
    fenced = False
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("## "):
            return offset
        offset += len(line)
    return len(text)


def replace_block(text: str, block: str) -> str:
    """``text`` with its marked block replaced by ``block``, or ``block`` inserted before the first
    ``## `` heading when there is none. Everything outside the block is kept byte for byte."""
    start = text.find(START)
    end = text.find(END)
    if start == -1 and end == -1:
        at = _insertion_point(text)
        before, after = text[:at], text[at:]
        if before and not before.endswith("\n"):
            before += "\n"
        if before and not before.endswith("\n\n"):
            before += "\n"
        return before + block + ("\n\n" if after else "\n") + after
    if start == -1 or end == -1 or end < start or text.count(START) > 1 or text.count(END) > 1:
        raise ValueError(f"malformed bench block: expected one {START} followed by one {END}")
    return text[:start] + block + text[end + len(END) :]
