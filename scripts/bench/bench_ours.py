"""bench.py's runs of our stages, in the benchmark process, with the benchmark settings."""

from __future__ import annotations

import json
import os
import statistics
import tempfile

from bench_common import lora_overrides
from bench_records import _pairs, _rankings, _sft_examples


def _run_ours(stage: str, args, records: list[dict], *extra: str) -> list[dict]:
    """Runs our stage on ``records`` with the benchmark settings; its timed metrics rows."""
    from rlhf.config.loader import load_config
    from rlhf.stages.registry import config_class, run_function

    overrides = list(extra)
    if args.lora:
        overrides += [f"model.adapt.{key}={value}" for key, value in lora_overrides().items()]
    if args.layout and stage in ("rm", "dpo"):
        overrides.append(f"data.shared_prompt={'true' if args.layout == 'shared' else 'false'}")
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "train.jsonl")
        with open(data, "w") as f:
            for record in records:
                f.write(json.dumps(record) + "\n")
        cfg = load_config(
            config_class(stage),
            None,
            [
                f"output_dir={tmp}/out",
                f"max_steps={args.steps}",
                f"model.name_or_path={args.model}",
                f"data.train=[{data}]",
                f"data.max_length={args.max_length}",
                f"batch.micro_batch_size={args.batch}",
                "optim.lr=1e-4",
                "optim.schedule=constant",
                "tracking.mode=disabled",
                "tracking.progress=false",
                "precision.mixed_precision=no",
                *overrides,
            ],
        )
        run_function(stage)(cfg)
        rows = [json.loads(line) for line in open(f"{tmp}/out/metrics.jsonl")]
    return [r for r in rows if "step_time_s" in r][args.warmup :]


def _mean_of(rows: list[dict], key: str) -> float | None:
    """Mean of ``key`` over the rows, None where a row lacks it (older stages)."""
    values = [r.get(key) for r in rows]
    if not values or any(v is None for v in values):
        return None
    return statistics.mean(values)


def _ours_result(steps: list[dict], reply_tokens: bool = True) -> dict:
    return {
        # The mean: batches differ in length, and a user waits for their sum.
        "step_time_s": statistics.mean(r["step_time_s"] for r in steps),
        # Our tokens_per_s counts SFT row tokens / DPO reply tokens (chosen + rejected).
        "tokens_per_step": statistics.mean(r["tokens_per_s"] * r["step_time_s"] for r in steps)
        if reply_tokens
        else 0.0,
        "tokens_computed": _mean_of(steps, "tokens_computed"),
        "tokens_unshared": _mean_of(steps, "tokens_unshared"),
    }


def _ours_sft(args) -> dict:
    extra = ["data.eval_fraction=0", "model.gradient_checkpointing=false"]
    if args.packing:
        extra.append("data.packing=true")
    return _ours_result(_run_ours("sft", args, _sft_examples(args), *extra))


def _ours_rm(args) -> dict:
    steps = _run_ours("rm", args, _pairs(args), "data.eval_fraction=0.01", "model.gradient_checkpointing=false")
    return _ours_result(steps, reply_tokens=False)


def _ours_rm_kwise(args) -> dict:
    steps = _run_ours(
        "rm", args, _rankings(args), "data.kind=ranked", "data.eval_fraction=0.01", "model.gradient_checkpointing=false"
    )
    return _ours_result(steps, reply_tokens=False)


def _ours_dpo(args) -> dict:
    extra = [
        "data.eval_fraction=0",
        "dpo.loss_type=sigmoid",
        "dpo.beta=0.1",
        "dpo.sft_weight=0",
        f"reference={args.reference}",
        "data.chat_template=true",
        f"model.gradient_checkpointing={'true' if args.gradient_checkpointing else 'false'}",
    ]
    return _ours_result(_run_ours("dpo", args, _pairs(args), *extra))
