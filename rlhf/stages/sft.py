"""Supervised fine-tuning: setup -> loop -> save, on the shared backend.

Loss is next-token cross-entropy on assistant tokens only, divided by the number of assistant
tokens in the whole global batch, so 1 process x 8 micro-batches and 2 processes x 4 give the
same update.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import torch

from preference_data.collate import TooLong, collate_rows, pack, single_row, tokenize_sft
from preference_data.sampling import mixture_stream
from preference_data.splits import split_by_prompt
from preference_data.validate import load_sft
from rlhf.config.loader import param
from rlhf.config.sections import (
    MAX_RECORD_BYTES_DOC,
    DatasetStageConfig,
    check_eval_fraction,
    check_max_record_bytes,
)
from rlhf.math.losses import sft_loss_on_targets
from rlhf.math.ops import IGNORE_INDEX, shift_labels
from rlhf.models.adapt import apply_adaptation, count_parameters
from rlhf.models.layout import kept_logits
from rlhf.models.loading import load_causal_lm, load_tokenizer
from rlhf.runtime.backend import Backend
from rlhf.runtime.optim import build_optimizer
from rlhf.stages import common
from rlhf.stages.inputs import input_fingerprints
from rlhf.stages.nonfinite import NonFiniteGuard


@dataclass(frozen=True)
class SFTDataConfig:
    """Where the SFT examples come from and how they become sequences."""

    train: list[str] = param(
        default_factory=lambda: ["builtin:judged-sft"],
        doc="Training files (jsonl / json / csv / parquet / datasets folder / builtin:NAME).",
    )
    weights: Optional[list[float]] = param(
        None, "Mixture weights, one per train source (None = concatenate and shuffle)."
    )
    eval: list[str] = param(default_factory=list, doc="Evaluation files (empty = hold out eval_fraction).")
    eval_fraction: float = param(0.05, "Share of training prompts held out for evaluation when `eval` is empty.")
    field_map: dict[str, str] = param(default_factory=dict, doc="Canonical field -> column name in the files.")
    max_length: int = param(512, "Longest sequence in tokens.")
    truncation: Literal["truncate", "reject"] = param(
        "truncate", "Longer examples: keep the first max_length tokens, or reject them to quarantine."
    )
    packing: bool = param(False, "Pack several examples per row (no cross-example attention).")
    chat_template: bool = param(True, "Render with the tokenizer's chat template.")
    strict: bool = param(False, "Fail on the first rejected record instead of quarantining it.")
    max_record_bytes: int = param(1 << 20, MAX_RECORD_BYTES_DOC)

    def __post_init__(self) -> None:
        check_eval_fraction(self.eval_fraction)
        check_max_record_bytes(self.max_record_bytes)


@dataclass(frozen=True)
class SFTConfig(DatasetStageConfig):
    """Supervised fine-tuning of a causal LM on prompt/completion or chat records."""

    output_dir: str = param("runs/sft", "Folder for the model, checkpoints, logs and plots.")
    data: SFTDataConfig = param(default_factory=SFTDataConfig, doc="Data.")


def _tokenize_all(records, tokenizer, cfg: SFTDataConfig, report):
    examples = []
    for record in records:
        try:
            examples.append(
                tokenize_sft(
                    record,
                    tokenizer,
                    max_length=cfg.max_length,
                    truncation=cfg.truncation,
                    chat_template=cfg.chat_template,
                )
            )
        except TooLong as err:
            report.reject_accepted(record, str(err))
    return examples


def _load_data(cfg: SFTConfig, tokenizer, backend: Backend):
    """Validated, tokenized train sources (one list per source) and eval rows."""
    data = cfg.data
    quarantine = str(Path(cfg.output_dir) / "quarantine.jsonl") if backend.is_main else None
    # One load for every file, so one quarantine file and one report cover the run.
    records, report = load_sft(
        list(data.train) + list(data.eval),
        field_map=data.field_map or None,
        quarantine_path=quarantine,
        strict=data.strict,
        max_record_bytes=data.max_record_bytes or None,
    )
    sources = [[r for r in records if r.source == path] for path in data.train]
    eval_records = [r for r in records if r.source in data.eval]
    if not data.eval and data.eval_fraction > 0:
        # By prompt, so a prompt never lands on both sides; each source keeps its own share.
        splits = [split_by_prompt(source, data.eval_fraction, cfg.seed) for source in sources]
        sources = [train for train, _ in splits]
        eval_records = [record for _, held_out in splits for record in held_out]
    train = [_tokenize_all(source, tokenizer, data, report) for source in sources]
    evaluation = [single_row(e) for e in _tokenize_all(eval_records, tokenizer, data, report)]
    report.quarantine.close()
    empty = [path for path, examples in zip(data.train, train) if not examples]
    if empty:
        raise ValueError(f"no valid training example left in {empty}\n{report.summary()}")
    return train, evaluation, report


def _row_stream(train, data: SFTDataConfig, seed: int):
    stream = mixture_stream([len(t) for t in train], data.weights, seed)
    examples = (train[d][i] for d, i in stream)
    return pack(examples, data.max_length) if data.packing else map(single_row, examples)


def _loss(model, batch: dict, device, num_target_tokens):
    """sft_loss of a collated batch; only the positions that predict a target go through the LM head."""
    targets = shift_labels(batch["labels"].to(device))
    keep = targets != IGNORE_INDEX
    inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
    return sft_loss_on_targets(kept_logits(model, inputs, keep), targets[keep], num_target_tokens)


@torch.no_grad()
def evaluate(model, rows, backend: Backend, micro_batch_size: int, pad_id: int) -> dict:
    """Token-weighted eval loss over every process's shard of ``rows``."""
    if not rows:
        return {}
    model.eval()
    nll, tokens = 0.0, 0.0
    for chunk in common.eval_shards(len(rows), backend, micro_batch_size):
        weight = 1.0 if chunk else 0.0  # an empty shard still runs a forward pass (see eval_shards)
        batch = collate_rows([rows[i] for i in chunk] or rows[:1], pad_id)
        _, metrics = _loss(model, batch, backend.device, 1.0)
        nll += weight * float(metrics["nll_sum"])
        tokens += weight * float(metrics["tokens"])
    total_nll, total_tokens = backend.all_reduce_sum(torch.tensor([nll, tokens])).tolist()
    model.train()
    loss = total_nll / max(total_tokens, 1.0)
    return {"eval_loss": loss, "eval_perplexity": math.exp(min(loss, 50.0)), "eval_tokens": total_tokens}


def run(cfg: SFTConfig) -> dict:
    started = time.time()
    out = Path(cfg.output_dir)
    backend = common.start(cfg)
    guard = NonFiniteGuard(cfg, backend, "sft")

    # Setup: model, data, optimizer, resume.
    tokenizer = load_tokenizer(cfg.model)
    model = apply_adaptation(load_causal_lm(cfg.model), cfg.model.adapt)
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    trainable, total = count_parameters(model)
    train, eval_rows, report = _load_data(cfg, tokenizer, backend)
    global_batch = cfg.batch.micro_batch_size * cfg.batch.grad_accum * backend.world_size
    n_rows = sum(len(t) for t in train)
    if cfg.data.packing and cfg.max_steps <= 0:
        n_rows = sum(1 for _ in pack((e for t in train for e in t), cfg.data.max_length))
    max_steps = common.total_steps(cfg, n_rows, global_batch)
    optimizer, scheduler = build_optimizer(model, cfg.optim, max_steps)
    model, optimizer = backend.prepare(model, optimizer, scheduler)
    start_step, resume = common.resume(cfg, backend)
    tracker = common.tracker(cfg, backend, steps=max_steps, start_step=start_step, stage="sft")
    guard.begin(model, tracker, resume, started=started, plot_keys=("loss", "eval_loss"))
    tracker.write(report.summary())
    tracker.write(
        f"sft: {backend.world_size} process(es), {backend.distributed_type}, precision "
        f"{backend.mixed_precision}; trainable {trainable:,} / {total:,} parameters; {max_steps} steps "
        f"of {global_batch} rows" + (f"; resumed at step {start_step} from {resume}" if resume else "")
    )

    # Loop: every process walks the same global batches and takes its own slice of each.
    batches = common.global_batches(_row_stream(train, cfg.data, cfg.seed), global_batch, start_step)
    pad_id = tokenizer.pad_token_id
    last_eval: dict = {}
    model.train()
    for step in range(start_step + 1, max_steps + 1):
        backend.at_step(step)
        step_start = time.time()
        rows = next(batches)
        target_tokens = sum(row.num_targets for row in rows)
        nll_sum = loss_sum = computed = 0.0
        for chunk in common.micro_batches(rows, backend, cfg.batch.micro_batch_size, cfg.batch.grad_accum):
            batch = collate_rows(chunk, pad_id)
            with backend.accumulate(model):
                loss, metrics = _loss(model, batch, backend.device, target_tokens)
                backend.backward(loss)
            nll_sum += float(metrics["nll_sum"])
            computed += batch["input_ids"].numel()
            loss_sum += float(loss.detach())
        grad_norm, stepped = guard.optimizer_step(step, model, optimizer, scheduler, loss_sum)
        totals = backend.all_reduce_sums({"nll": nll_sum, "tokens_computed": computed})
        step_loss = totals["nll"] / target_tokens
        elapsed = time.time() - step_start
        if not stepped:
            tracker.log(step, guard.counts())
        elif step % cfg.tracking.log_every == 0 or step == max_steps:
            tracker.log(
                step,
                {
                    "loss": step_loss,
                    "lr": scheduler.get_last_lr()[0],
                    "grad_norm": grad_norm,
                    "target_tokens": target_tokens,
                    "tokens_per_s": sum(len(r.input_ids) for r in rows) / max(elapsed, 1e-9),
                    "step_time_s": elapsed,
                    "tokens_computed": totals["tokens_computed"],
                    **guard.counts(),
                },
            )
        if cfg.eval_steps and step % cfg.eval_steps == 0 and step != max_steps:
            last_eval = evaluate(model, eval_rows, backend, cfg.batch.micro_batch_size, pad_id)
            tracker.log(step, last_eval)
        if cfg.checkpoint.save_steps and step % cfg.checkpoint.save_steps == 0 and step != max_steps:
            guard.save_checkpoint(step, model, {"data_position": step * global_batch})
        tracker.advance()

    # Save: final checkpoint (resumable, parameters checked), eval, and the model as a save_pretrained folder.
    guard.save_checkpoint(max_steps, model, {"data_position": max_steps * global_batch})
    last_eval = evaluate(model, eval_rows, backend, cfg.batch.micro_batch_size, pad_id)
    if last_eval:
        tracker.log(max_steps, last_eval)
    model_dir = common.save_final_model(backend, model, tokenizer, out / "model", merge=cfg.model.adapt.merge)
    final = [r for r in tracker.history if "loss" in r]
    summary = {
        "stage": "sft",
        **guard.finished(),
        "steps": max_steps,
        "final_loss": final[-1]["loss"] if final else None,
        **last_eval,
        "model_dir": str(model_dir),
        "inputs": input_fingerprints(cfg),  # what it was trained from (the pipeline compares)
        "trainable_parameters": trainable,
        "total_parameters": total,
        "global_batch_rows": global_batch,
        "data": report.to_dict(),
        **common.run_facts(backend, started),
    }
    tracker.finish(summary)
    backend.end()
    return summary
