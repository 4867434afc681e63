"""Direct preference optimisation: setup -> (reference log-probs) -> loop -> save.

Chosen and rejected responses go through the policy in one concatenated forward pass; only the
final assistant reply's tokens count (the prompt, including earlier turns, is masked out).
The reference is a frozen copy, the LoRA base with adapters disabled (no second copy), or
log-probs precomputed once with the initial policy before any update and cached in the output
folder (the default; it works under every engine, ZeRO-3 included, and survives resume).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Union

import torch

from preference_data import transforms
from preference_data.collate import TooLong, single_row, tokenize_sft
from preference_data.records import SFTRecord
from preference_data.splits import split_by_prompt
from preference_data.validate_preferences import load_kind
from rlhf.config.loader import param
from rlhf.config.sections import (
    MAX_RECORD_BYTES_DOC,
    PACK_DOC,
    REFERENCE_DOC,
    ROW_TOKENS_DOC,
    SHARED_PROMPT_DOC,
    DatasetStageConfig,
    ReferenceChoice,
    check_eval_fraction,
    check_max_record_bytes,
    check_reference,
    check_row_tokens,
    resolve_reference,
)
from rlhf.math.losses import dpo_loss
from rlhf.models.adapt import apply_adaptation, count_parameters, disable_dropout
from rlhf.models.layout import layout_options
from rlhf.models.loading import load_causal_lm, load_tokenizer
from rlhf.runtime.optim import build_optimizer
from rlhf.stages import common, dpo_logps, dpo_reference
from rlhf.stages.inputs import input_fingerprints
from rlhf.stages.nonfinite import NonFiniteGuard


@dataclass(frozen=True)
class DPODataConfig:
    """Preference pairs for DPO (ranked / rated records are expanded to pairs)."""

    train: list[str] = param(default_factory=lambda: ["builtin:judged-pairwise?n=2000"], doc="Training files.")
    kind: Literal["pairwise", "ranked", "rated"] = param("pairwise", "Record kind of the files.")
    adapter: Optional[str] = param(None, "Source format adapter (e.g. 'hh-rlhf').")
    field_map: dict[str, str] = param(default_factory=dict, doc="Canonical field -> column name.")
    eval: list[str] = param(default_factory=list, doc="Evaluation files (empty = hold out eval_fraction by prompt).")
    eval_fraction: float = param(0.1, "Share of prompts held out when `eval` is empty.")
    max_length: int = param(512, "Longest prompt + response in tokens (longer pairs are truncated on the right).")
    chat_template: bool = param(True, "Render with the tokenizer's chat template (as SFT does).")
    strict: bool = param(False, "Fail on the first rejected record.")
    max_record_bytes: int = param(1 << 20, MAX_RECORD_BYTES_DOC)
    shared_prompt: bool = param(True, SHARED_PROMPT_DOC)
    pack: bool = param(True, PACK_DOC)
    row_tokens: int = param(0, ROW_TOKENS_DOC)

    def __post_init__(self) -> None:
        check_eval_fraction(self.eval_fraction)
        check_max_record_bytes(self.max_record_bytes)
        check_row_tokens(self.row_tokens)


@dataclass(frozen=True)
class DPOLossConfig:
    """The DPO objective."""

    MOVED_KEYS = {"reference": "reference"}  # top level, the same key and values as in PPO

    beta: float = param(0.1, "Strength of the KL constraint to the reference (inverse temperature).")
    loss_type: Literal["sigmoid", "ipo", "hinge"] = param("sigmoid", "DPO, IPO or SLiC-style hinge.")
    label_smoothing: float = param(0.0, "sigmoid: assumed label-noise rate (conservative DPO).")
    length_normalize: Union[bool, Literal["auto"]] = param(
        "auto",
        "Average log-probs over response tokens instead of summing them. auto = true for ipo (its "
        "target 1/(2 beta) would otherwise depend on the response lengths, as in the IPO paper and "
        "TRL), false for sigmoid and hinge; true / false are used as given.",
    )
    sft_weight: float = param(
        0.0,
        "Weight of an added NLL term on the chosen replies (per-token mean; RPO, Pang et al. 2024): "
        "keeps the chosen replies likely while DPO widens the margin.",
    )

    def resolved_length_normalize(self) -> bool:
        """``length_normalize`` with auto made concrete: true for ipo, false otherwise."""
        if self.length_normalize == "auto":
            return self.loss_type == "ipo"
        return bool(self.length_normalize)


@dataclass(frozen=True)
class DPOConfig(DatasetStageConfig):
    """Direct preference optimisation of a causal LM (batch sizes count pairs)."""

    output_dir: str = param("runs/dpo", "Folder for the model, checkpoints, logs and plots.")
    max_steps: int = param(200, "Optimizer steps (<= 0: derive from `epochs`).")
    data: DPODataConfig = param(default_factory=DPODataConfig, doc="Data.")
    dpo: DPOLossConfig = param(default_factory=DPOLossConfig, doc="Objective.")
    reference: ReferenceChoice = param("precompute", REFERENCE_DOC)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_reference(
            self.reference,
            self.model.adapt.strategy,
            stage="DPO",
            allowed=("auto", "copy", "lora_disabled", "precompute", "none"),
        )

    def resolved_reference(self) -> str:
        """``reference`` with auto made concrete: lora_disabled for LoRA, else precompute."""
        return resolve_reference(self.reference, self.model.adapt.strategy, full_default="precompute")


@dataclass(frozen=True)
class Pair:
    chosen: object  # preference_data.collate.Row
    rejected: object
    index: int  # position in its split, the key of the cached reference log-probs


def _pairs(records, tokenizer, data: DPODataConfig, report) -> list[Pair]:
    pairs = []
    for record in records:
        prompt = [{"role": "user", "content": record.prompt}] if isinstance(record.prompt, str) else list(record.prompt)
        try:
            rows = [
                single_row(
                    tokenize_sft(
                        SFTRecord(
                            tuple(prompt) + ({"role": "assistant", "content": reply},), record.source, record.line
                        ),
                        tokenizer,
                        max_length=data.max_length,
                        chat_template=data.chat_template,
                        last_turn_only=True,
                    )
                )
                for reply in (record.chosen, record.rejected)
            ]
        except TooLong as err:
            report.reject_accepted(record, str(err))
            continue
        pairs.append(Pair(rows[0], rows[1], len(pairs)))
    return pairs


def _as_pairs(records, kind: str):
    if kind == "ranked":
        return transforms.ranked_to_pairwise(records)[0]
    if kind == "rated":
        return transforms.rated_to_pairwise(records)[0]
    return records


def _load_data(cfg: DPOConfig, tokenizer, backend):
    data = cfg.data
    quarantine = str(Path(cfg.output_dir) / "quarantine.jsonl") if backend.is_main else None
    records, report = load_kind(
        list(data.train),
        data.kind,
        field_map=data.field_map or None,
        quarantine_path=quarantine,
        strict=data.strict,
        adapter=data.adapter,
        max_record_bytes=data.max_record_bytes or None,
    )
    if data.eval:
        eval_records, _ = load_kind(
            list(data.eval),
            data.kind,
            field_map=data.field_map or None,
            quarantine_path=None,
            strict=data.strict,
            adapter=data.adapter,
            max_record_bytes=data.max_record_bytes or None,
        )
    else:
        records, eval_records = split_by_prompt(records, data.eval_fraction, cfg.seed)
    train = _pairs(_as_pairs(records, data.kind), tokenizer, data, report)
    evaluation = _pairs(_as_pairs(eval_records, data.kind), tokenizer, data, report)
    report.quarantine.close()
    if not train:
        raise ValueError(f"no training pair left\n{report.summary()}")
    return train, evaluation, report


def _reference_for(pairs, split: str, cfg: DPOConfig, cache, reference_model, policy, backend, pad_id: int):
    """Reference log-probs (chosen [B], rejected [B]) for these pairs by the configured method."""
    device = backend.device
    if cfg.resolved_reference() == "precompute":
        table = cache[split][[p.index for p in pairs]].to(device, torch.float32)
        return table[:, 0], table[:, 1]
    if cfg.resolved_reference() == "none":
        zeros = torch.zeros(len(pairs), device=device)
        return zeros, zeros
    with torch.no_grad():
        if cfg.resolved_reference() == "copy":
            # Under the policy's autocast also outside backend.accumulate (in evaluate).
            with backend.autocast():
                chosen, rejected, _, _ = dpo_logps.sequence_logps(reference_model, pairs, pad_id, device, cfg)
        else:
            with backend.unwrap(policy).disable_adapter():
                chosen, rejected, _, _ = dpo_logps.sequence_logps(policy, pairs, pad_id, device, cfg)
    return chosen.float(), rejected.float()


def _step_loss(cfg, policy, pairs, split, cache, reference_model, backend, pad_id, normalizer):
    chosen, rejected, chosen_nll, counts = dpo_logps.sequence_logps(policy, pairs, pad_id, backend.device, cfg)
    ref_chosen, ref_rejected = _reference_for(pairs, split, cfg, cache, reference_model, policy, backend, pad_id)
    loss, metrics = dpo_loss(
        chosen,
        rejected,
        ref_chosen,
        ref_rejected,
        beta=cfg.dpo.beta,
        loss_type=cfg.dpo.loss_type,
        label_smoothing=cfg.dpo.label_smoothing,
        reference_free=cfg.resolved_reference() == "none",
        normalizer=normalizer,
    )
    # Logged "loss" is the DPO loss alone (ln 2 at the start whatever sft_weight is).
    metrics["dpo_loss"] = loss.detach()
    metrics["nll_chosen"] = chosen_nll.detach().mean()
    if cfg.dpo.sft_weight:
        nll = chosen_nll.mean() if normalizer is None else chosen_nll.sum() / normalizer
        loss = loss + cfg.dpo.sft_weight * nll
    return loss, metrics, counts


METRICS = ("rewards_chosen", "rewards_rejected", "margins", "accuracy", "nll_chosen")
TOKEN_COUNTS = ("tokens", "tokens_computed", "tokens_unshared")  # reply tokens; slots fed; slots unshared


@torch.no_grad()
def evaluate(cfg, policy, pairs, cache, reference_model, backend, pad_id) -> dict:
    if not pairs:
        return {}
    policy.eval()
    micro = cfg.batch.micro_batch_size
    sums = dict.fromkeys(("loss", *METRICS), 0.0)  # each weighted by the pairs it covers
    for indices in common.eval_shards(len(pairs), backend, micro):
        chunk = [pairs[i] for i in indices]
        loss, metrics, _ = _step_loss(
            cfg, policy, chunk or pairs[:1], "eval", cache, reference_model, backend, pad_id, None
        )
        weight = len(chunk)
        sums["loss"] += float(metrics["dpo_loss"]) * weight
        for key in METRICS:
            sums[key] += float(metrics[key]) * weight
    policy.train()
    totals = backend.all_reduce_sums(sums)
    return {f"eval_{key}": value / len(pairs) for key, value in totals.items()}


def run(cfg: DPOConfig) -> dict:
    started = time.time()
    backend = common.start(cfg)
    guard = NonFiniteGuard(cfg, backend, "dpo")

    # Setup: policy (dropout off), reference, data, optimizer, resume.
    tokenizer = load_tokenizer(cfg.model)
    policy = disable_dropout(apply_adaptation(load_causal_lm(cfg.model), cfg.model.adapt))
    if cfg.model.gradient_checkpointing:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    trainable, total = count_parameters(policy)
    train, evaluation, report = _load_data(cfg, tokenizer, backend)
    global_batch = cfg.batch.micro_batch_size * cfg.batch.grad_accum * backend.world_size
    max_steps = common.total_steps(cfg, len(train), global_batch)
    optimizer, scheduler = build_optimizer(policy, cfg.optim, max_steps)
    policy, optimizer = backend.prepare(policy, optimizer, scheduler)
    reference_model = None
    if cfg.resolved_reference() == "copy":  # after the engine: under ZeRO-3 it gets an inference engine
        reference_model = backend.prepare_frozen(disable_dropout(load_causal_lm(cfg.model)))
    pad_id = tokenizer.pad_token_id
    cache = None
    if cfg.resolved_reference() == "precompute":  # before any update (and before resume loads weights)
        cache = dpo_reference.cached_or_computed(cfg, policy, train, evaluation, backend, pad_id)
    start_step, resume = common.resume(cfg, backend)
    tracker = common.tracker(cfg, backend, steps=max_steps, start_step=start_step, stage="dpo")
    guard.begin(policy, tracker, resume, started=started, plot_keys=("loss", "accuracy", "margins", "eval_accuracy"))
    tracker.write(report.summary())
    tracker.write(
        f"dpo: {len(train)} training pairs, {len(evaluation)} eval pairs; reference {cfg.resolved_reference()}; "
        f"{backend.world_size} process(es), {backend.distributed_type}; trainable {trainable:,} / {total:,}; "
        f"{max_steps} steps of {global_batch} pairs" + (f"; resumed at {start_step}" if resume else "")
    )
    _, no_layout = layout_options(cfg.data, policy)
    if no_layout:
        tracker.write(f"dpo: shared-prompt rows off ({no_layout}); chosen and rejected as separate padded rows")

    # Loop: every process walks the same global batches of pairs and takes its own slice.
    batches = common.global_batches(common.shuffled_stream(train, cfg.seed), global_batch, start_step)
    micro = cfg.batch.micro_batch_size
    policy.train()
    for step in range(start_step + 1, max_steps + 1):
        backend.at_step(step)
        step_start = time.time()
        pairs = next(batches)
        sums = dict.fromkeys(("loss", *TOKEN_COUNTS, *METRICS), 0.0)  # metrics weighted by the pairs they cover
        objective = 0.0  # what was back-propagated (the DPO loss plus the sft_weight term)
        for chunk in common.micro_batches(pairs, backend, micro, cfg.batch.grad_accum):
            with backend.accumulate(policy):
                loss, metrics, counts = _step_loss(
                    cfg, policy, chunk, "train", cache, reference_model, backend, pad_id, normalizer=len(pairs)
                )
                backend.backward(loss)
            objective += float(loss.detach())
            sums["loss"] += float(metrics["dpo_loss"])
            for key in TOKEN_COUNTS:
                sums[key] += counts[key]
            for key in METRICS:
                sums[key] += float(metrics[key]) * len(chunk)
        grad_norm, stepped = guard.optimizer_step(step, policy, optimizer, scheduler, objective)
        totals = backend.all_reduce_sums(sums)
        elapsed = time.time() - step_start
        if not stepped:
            tracker.log(step, guard.counts())
        elif step % cfg.tracking.log_every == 0 or step == max_steps or step == 1:
            tracker.log(
                step,
                {
                    "loss": totals["loss"],
                    "lr": scheduler.get_last_lr()[0],
                    "grad_norm": grad_norm,
                    **{key: totals[key] / len(pairs) for key in METRICS},
                    "tokens_per_s": totals["tokens"] / max(elapsed, 1e-9),
                    "step_time_s": elapsed,
                    "tokens_computed": totals["tokens_computed"],
                    "tokens_unshared": totals["tokens_unshared"],
                    **guard.counts(),
                },
            )
        if cfg.eval_steps and step % cfg.eval_steps == 0 and step != max_steps:
            tracker.log(step, evaluate(cfg, policy, evaluation, cache, reference_model, backend, pad_id))
        if cfg.checkpoint.save_steps and step % cfg.checkpoint.save_steps == 0 and step != max_steps:
            guard.save_checkpoint(step, policy, {"data_position": step * global_batch})
        tracker.advance()

    # Save: checkpoint (parameters checked), eval, and the policy as a save_pretrained folder.
    guard.save_checkpoint(max_steps, policy, {"data_position": max_steps * global_batch})
    last_eval = evaluate(cfg, policy, evaluation, cache, reference_model, backend, pad_id)
    if last_eval:
        tracker.log(max_steps, last_eval)
    model_dir = common.save_final_model(
        backend, policy, tokenizer, Path(cfg.output_dir) / "model", merge=cfg.model.adapt.merge
    )
    history = [r for r in tracker.history if "loss" in r]
    summary = {
        "stage": "dpo",
        **guard.finished(),
        "steps": max_steps,
        "first_loss": history[0]["loss"] if history and start_step == 0 else None,
        "final_loss": history[-1]["loss"] if history else None,
        **last_eval,
        "model_dir": str(model_dir),
        "inputs": input_fingerprints(cfg),  # what it was trained from (the pipeline compares)
        "reference": cfg.resolved_reference(),
        "trainable_parameters": trainable,
        "total_parameters": total,
        "global_batch_pairs": global_batch,
        "data": report.to_dict(),
        **common.run_facts(backend, started),
    }
    tracker.finish(summary, plot_keys=("loss", "accuracy", "margins", "eval_accuracy"))
    backend.end()
    return summary
