"""Logging for every stage: wandb (offline by default), metrics.jsonl, summary.json, a progress
bar and PNG curves. Everything here acts on the main process only; other processes get no-ops.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class MetricsFileError(RuntimeError):
    """``metrics.jsonl`` has a damaged line that a crash cannot explain (message names file and line)."""


def _metrics_record(raw: bytes) -> dict:
    """One line of ``metrics.jsonl`` as its record; ValueError saying what is wrong with it."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("not UTF-8") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError("not valid JSON") from None
    step = record.get("step") if isinstance(record, dict) else None
    if isinstance(step, bool) or not isinstance(step, (int, float)):
        raise ValueError("not a JSON object with a numeric 'step'")
    return record


def _drop_samples_after(path: Path, step: int) -> None:
    """On resume, keep only the generations logged up to the checkpoint's step, as for the
    metrics (a line that is not a JSON object, torn by a crash while written, goes too)."""
    kept = []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError:
            logger.warning("%s:%d: dropped a damaged line (what a crash leaves while it is written)", path, number)
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), (int, float)) and record["step"] <= step:
            kept.append(raw + b"\n")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(b"".join(kept))
    os.replace(tmp, path)


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN / inf
    return value


class Tracker:
    """Writes ``metrics.jsonl`` (one object per logged step) and ``summary.json`` in ``output_dir``,
    mirrors both to wandb, and draws a progress bar with rate and ETA.

    Args:
        output_dir: the stage's output folder.
        is_main: only the main process writes or prints.
        mode: wandb mode, 'offline' | 'online' | 'disabled'.
        project, run_name, group: wandb identifiers.
        config: the resolved config, stored with the wandb run.
        total_steps: length of the progress bar.
        start_step: first step (a resumed run starts mid-way and keeps appending).
        progress: draw the progress bar.
    """

    def __init__(
        self,
        output_dir: str,
        *,
        is_main: bool,
        mode: str = "offline",
        project: str = "rlhf",
        run_name: str | None = None,
        group: str | None = None,
        config: dict | None = None,
        total_steps: int = 0,
        start_step: int = 0,
        progress: bool = True,
        stage: str = "",
    ) -> None:
        self.is_main = is_main
        self.output_dir = Path(output_dir)
        self.started = time.time()
        self.history: list[dict] = []
        self._wandb_run = None
        self._bar = None
        if not is_main:
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.output_dir / "metrics.jsonl"
        if start_step == 0 and self.metrics_path.exists():
            self.metrics_path.unlink()  # a fresh run in a reused folder starts a fresh log
        elif start_step > 0 and self.metrics_path.exists():
            self._truncate_after(start_step)
        samples = self.output_dir / "samples.jsonl"
        if start_step == 0 and samples.exists():
            samples.unlink()
        elif start_step > 0 and samples.exists():
            _drop_samples_after(samples, start_step)
        if mode != "disabled":
            import wandb  # imported late: it is slow to import and not needed when disabled

            os.environ.setdefault("WANDB_SILENT", "true")
            self._wandb_run = wandb.init(
                project=project,
                name=run_name or f"{self.output_dir.name}-{stage}".strip("-"),
                group=group,
                job_type=stage or None,
                dir=str(self.output_dir),
                mode=mode,
                config=config,
                reinit="finish_previous",
            )
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total_steps, initial=start_step, desc=stage or "train", unit="step", dynamic_ncols=True
            )

    def _truncate_after(self, step: int) -> None:
        """On resume, drop log lines written after the checkpoint so no step appears twice.

        A crash or a full disk can tear only the line being appended, the last one: it is dropped
        with a warning. A damaged line before it is MetricsFileError, and the file is left as is.
        """
        lines = self.metrics_path.read_bytes().split(b"\n")
        numbered = [(number, raw) for number, raw in enumerate(lines, start=1) if raw.strip()]
        kept = []
        for number, raw in numbered:
            try:
                record = _metrics_record(raw)
            except ValueError as err:
                if number == numbered[-1][0]:
                    logger.warning(
                        "%s:%d: dropped the last line, which is incomplete or damaged (what a crash or a full "
                        "disk leaves while it is written)",
                        self.metrics_path,
                        number,
                    )
                    break
                raise MetricsFileError(
                    f"{self.metrics_path}:{number}: {err}; only the last line of a metrics log can be torn by a "
                    "crash. Repair or delete that line, or start afresh with overwrite=true"
                ) from None
            if record["step"] <= step:
                kept.append(raw + b"\n")
                self.history.append(record)
        # Replaced whole, so that a crash (or a full disk) now cannot cut the kept lines short.
        tmp = self.metrics_path.with_name(self.metrics_path.name + ".tmp")
        tmp.write_bytes(b"".join(kept))
        os.replace(tmp, self.metrics_path)

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.is_main:
            return
        record = {"step": step, **{key: _plain(value) for key, value in metrics.items()}}
        self.history.append(record)
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self._wandb_run is not None:
            self._wandb_run.log({k: v for k, v in record.items() if k != "step"}, step=step)
        if self._bar is not None and "loss" in record:
            self._bar.set_postfix(loss=f"{record['loss']:.4f}", refresh=False)

    def log_samples(self, step: int, rows: list[dict[str, Any]]) -> None:
        """A few generations: appended to ``samples.jsonl`` and shown as a wandb table."""
        if not self.is_main or not rows:
            return
        with open(self.output_dir / "samples.jsonl", "a", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps({"step": step, **{k: _plain(v) for k, v in row.items()}}) + "\n")
        if self._wandb_run is not None:
            import wandb

            columns = list(rows[0])
            table = wandb.Table(columns=["step", *columns], data=[[step, *(r[c] for c in columns)] for r in rows])
            self._wandb_run.log({"samples": table}, step=step)

    def advance(self, steps: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(steps)

    def write(self, message: str) -> None:
        """Prints on the main process without breaking the progress bar."""
        if not self.is_main:
            return
        if self._bar is not None:
            self._bar.write(message)
        else:
            print(message, flush=True)

    def finish(self, summary: dict[str, Any], plot_keys: Iterable[str] = ("loss", "eval_loss")) -> None:
        if not self.is_main:
            return
        if self._bar is not None:
            self._bar.close()
        summary = {key: _plain(value) for key, value in summary.items()}
        summary.setdefault("wall_time_s", round(time.time() - self.started, 3))
        tmp = self.output_dir / "summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, self.output_dir / "summary.json")
        plot_curves(self.history, list(plot_keys), self.output_dir / "curves.png")
        if self._wandb_run is not None:
            self._wandb_run.summary.update(summary)
            self._wandb_run.finish()


def plot_curves(history: list[dict], keys: list[str], path: Path) -> Path | None:
    """One PNG panel per metric in ``keys`` that appears in ``history`` (x = step)."""
    present = [key for key in keys if any(key in record for record in history)]
    if not present:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(present), figsize=(5 * len(present), 3.5), squeeze=False)
    for axis, key in zip(axes[0], present):
        points = [(r["step"], r[key]) for r in history if isinstance(r.get(key), (int, float))]
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="." if len(points) < 50 else None)
        axis.set_title(key)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_histogram(values: list[float], path: Path, *, title: str, bins: int = 40) -> Path:
    """A PNG histogram with a line at 0 (e.g. reward margins: right of 0 = ranked correctly)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axis = plt.subplots(figsize=(6, 3.5))
    axis.hist(values, bins=bins, color="tab:blue", alpha=0.8)
    axis.axvline(0.0, color="black", linewidth=1)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
