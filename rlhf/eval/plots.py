"""PNG plots of evaluation results: scores, win rates and KL of `rlhf eval`, and the reward-vs-KL
frontier of a sweep. matplotlib's Agg backend only (no display needed); a plot without data is
skipped, not drawn empty.
"""

from __future__ import annotations

from pathlib import Path

KL_LABEL = "KL to reference (nats per response)"
AXIS_LABELS = {
    "kl": KL_LABEL,
    "judge": "mean judge reward",
    "reward": "mean reward-model score",
    "length": "response length (tokens)",
    "win_rate": "win rate vs baseline",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _bars(axis, names: list[str], rows: list[dict], key: str, baseline: str, color: str) -> None:
    """One bar per policy with its seed std as error bar; the baseline's tick says so."""
    std = f"{key}_seed_std"
    yerr = [row.get(std, 0.0) for row in rows] if any(std in row for row in rows) else None
    axis.bar(range(len(rows)), [row[key] for row in rows], yerr=yerr, capsize=4, color=color, alpha=0.85)
    axis.set_xticks(range(len(rows)), [f"{n}\n(baseline)" if n == baseline else n for n in names])
    axis.axhline(0.0, color="black", linewidth=0.8)
    axis.grid(axis="y", alpha=0.3)


def _panels(count: int):
    fig, axes = _pyplot().subplots(1, count, figsize=(5 * count, 4), squeeze=False)
    return fig, list(axes[0])


def plot_results(results: dict, out_dir) -> list[Path]:
    """Write the plots of one `rlhf eval` results dict (see `rlhf.eval.run.evaluate`) to ``out_dir``.

    - ``scores.png``: judge and / or reward-model score per policy, seed std as error bars;
    - ``win_rates.png``: win rate vs the baseline with its 95% interval, per-seed points and a
      dashed line at 0.5, next to the wins / ties / losses shares;
    - ``kl_length.png``: KL to the reference, response length and EOS rate per policy.

    Returns the paths written; a plot whose keys no policy has (no reward model, a single
    policy so no win rate) is not written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    policies = results.get("policies", {})
    baseline = results.get("baseline", "baseline")
    n_seeds = len(results.get("seeds", [])) or 1
    written: list[Path] = []

    def having(key: str) -> tuple[list[str], list[dict]]:
        pairs = [(name, row) for name, row in policies.items() if row.get(key) is not None]
        return [name for name, _ in pairs], [row for _, row in pairs]

    scores = [key for key in ("judge", "reward") if having(key)[1]]
    if scores:
        fig, axes = _panels(len(scores))
        for axis, key, color in zip(axes, scores, ("tab:blue", "tab:green")):
            _bars(axis, *having(key), key, baseline, color)
            source = "judge" if key == "judge" else "reward model"
            axis.set_title(f"Mean {source} score (± std over {n_seeds} seed(s))")
            axis.set_ylabel(AXIS_LABELS[key] + " (per response)")
        written.append(_save(fig, out_dir / "scores.png"))

    names, rows = having("win_rate")
    if rows:
        fig, (rate_axis, share_axis) = _panels(2)
        xs = range(len(rows))
        rates = [row["win_rate"] for row in rows]
        cis = [row.get("win_rate_ci95") or [rate, rate] for row, rate in zip(rows, rates)]
        yerr = [[max(0.0, r - ci[0]) for r, ci in zip(rates, cis)], [max(0.0, ci[1] - r) for r, ci in zip(rates, cis)]]
        rate_axis.errorbar(xs, rates, yerr=yerr, fmt="o", capsize=5, markersize=8, label="mean (95% CI)")
        for x, row in zip(xs, rows):
            per_seed = row.get("win_rate_per_seed") or []
            rate_axis.scatter(
                [x + 0.12] * len(per_seed),
                per_seed,
                s=14,
                color="tab:orange",
                zorder=3,
                label="per seed" if x == 0 else None,
            )
        rate_axis.axhline(0.5, color="gray", linestyle="--", linewidth=1, label="0.5 (no difference)")
        rate_axis.set_ylim(0, 1)
        rate_axis.set_xticks(list(xs), names)
        rate_axis.set_ylabel(f"win rate vs {baseline} (ties count half)")
        rate_axis.set_title(f"Win rate vs {baseline} by {results.get('win_metric', 'score')}")
        rate_axis.legend(fontsize=8)
        rate_axis.grid(axis="y", alpha=0.3)
        bottom = [0.0] * len(rows)
        for part, color in (("wins", "tab:green"), ("ties", "tab:gray"), ("losses", "tab:red")):
            heights = [row.get(part, 0.0) for row in rows]
            share_axis.bar(xs, heights, bottom=bottom, color=color, label=part)
            bottom = [b + h for b, h in zip(bottom, heights)]
        share_axis.set_ylim(0, 1)
        share_axis.set_xticks(list(xs), names)
        share_axis.set_ylabel("share of prompts")
        share_axis.set_title(f"Wins / ties / losses vs {baseline}")
        share_axis.legend(fontsize=8)
        written.append(_save(fig, out_dir / "win_rates.png"))

    panels = [key for key in ("kl", "length", "eos_rate") if having(key)[1]]
    if panels:
        fig, axes = _panels(len(panels))
        titles = {
            "kl": f"KL to reference ({results.get('reference', baseline)})",
            "length": "Mean response length",
            "eos_rate": "Responses that ended with EOS",
        }
        ylabels = {"kl": KL_LABEL, "length": "response length (tokens)", "eos_rate": "EOS rate (share of responses)"}
        for axis, key, color in zip(axes, panels, ("tab:purple", "tab:cyan", "tab:olive")):
            _bars(axis, *having(key), key, baseline, color)
            axis.set_title(titles[key])
            axis.set_ylabel(ylabels[key])
            if key == "eos_rate":
                axis.set_ylim(0, 1)
        written.append(_save(fig, out_dir / "kl_length.png"))
    return written


def _number(point: dict, key: str, index: int) -> float:
    if key not in point:
        raise ValueError(f"plot_frontier: point {index} has no {key!r} key (it has: {', '.join(point) or 'none'})")
    try:
        return float(point[key])
    except (TypeError, ValueError):
        raise ValueError(f"plot_frontier: point {index} has a non-numeric {key!r}: {point[key]!r}") from None


def plot_frontier(
    points: list[dict],
    path,
    *,
    x: str = "kl",
    y: str = "judge",
    series: str = "method",
    label: str = "label",
    title: str | None = None,
) -> Path:
    """The reward-vs-KL frontier as one PNG: a line + markers per ``series`` value (e.g. DPO
    sweeping beta, PPO sweeping the KL coefficient), points sorted by ``x`` within a series and
    annotated with their ``label`` (e.g. "beta=0.1").

    ``f"{x}_seed_std"`` / ``f"{y}_seed_std"`` keys, when a series has them, become error bars.
    Points of series "baseline" are drawn as single starred points, not joined.
    Raises ValueError naming the key when a point lacks ``x`` or ``y``.
    """
    if not points:
        raise ValueError("plot_frontier needs at least one point")
    coords = [(_number(p, x, i), _number(p, y, i)) for i, p in enumerate(points)]
    groups: dict[str, list[tuple[float, float, dict]]] = {}
    for (px, py), point in zip(coords, points):
        groups.setdefault(str(point.get(series, "points")), []).append((px, py, point))

    plt = _pyplot()
    fig, axis = plt.subplots(figsize=(7, 5))
    for name, members in groups.items():
        members.sort(key=lambda member: member[0])
        xs, ys, rows = [m[0] for m in members], [m[1] for m in members], [m[2] for m in members]

        def err(key, rows=rows):
            return [float(r.get(key, 0.0)) for r in rows] if any(key in r for r in rows) else None

        if name == "baseline":
            axis.scatter(xs, ys, marker="*", s=220, color="black", zorder=4, label=name)
        else:
            axis.errorbar(xs, ys, xerr=err(f"{x}_seed_std"), yerr=err(f"{y}_seed_std"), fmt="-o", capsize=3, label=name)
        for px, py, row in zip(xs, ys, rows):
            text = row.get(label, name if name == "baseline" else None)
            if text is not None:
                axis.annotate(str(text), (px, py), textcoords="offset points", xytext=(5, 5), fontsize=8)
    x_label, y_label = AXIS_LABELS.get(x, x), AXIS_LABELS.get(y, y)
    axis.set_xlabel(x_label)
    axis.set_ylabel(y_label)
    axis.set_title(title or f"{y_label[:1].upper()}{y_label[1:]} vs {x_label.split(' (')[0]}")
    axis.grid(alpha=0.3)
    axis.legend()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return _save(fig, path)
