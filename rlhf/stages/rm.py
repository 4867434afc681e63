"""Reward-model training from pairwise, ranked (K-wise) or rated preferences: setup -> loop -> save.

Every response of a prompt is scored once per step (a prompt's responses share a batch). The
loss is the Bradley-Terry pairwise loss, the InstructGPT K-wise loss (mean over a prompt's
pairs, then over prompts) or a regression on ratings, each divided by its count over the
whole global batch so the update does not depend on how the batch is split.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import torch

from preference_data import transforms
from preference_data.splits import split_by_prompt
from preference_data.validate_preferences import load_kind
from reward_models import losses, metrics
from reward_models.batching import Group, TooLong, make_group, score_groups
from reward_models.model import load_reward_model, save_reward_model
from rlhf.config.loader import param
from rlhf.config.sections import (
    MAX_RECORD_BYTES_DOC,
    PACK_DOC,
    ROW_TOKENS_DOC,
    SHARED_PROMPT_DOC,
    DatasetStageConfig,
    check_eval_fraction,
    check_max_record_bytes,
    check_row_tokens,
)
from rlhf.models.adapt import count_parameters
from rlhf.models.fingerprint import write_fingerprint
from rlhf.models.layout import layout_options
from rlhf.models.loading import load_tokenizer
from rlhf.runtime.optim import build_optimizer
from rlhf.runtime.tracking import plot_histogram
from rlhf.stages import common
from rlhf.stages.inputs import input_fingerprints
from rlhf.stages.nonfinite import NonFiniteGuard


@dataclass(frozen=True)
class RMDataConfig:
    """Preference data for the reward model."""

    train: list[str] = param(default_factory=lambda: ["builtin:judged-pairwise?n=2000"], doc="Training files.")
    kind: Literal["pairwise", "ranked", "rated"] = param("pairwise", "Record kind of the training files.")
    adapter: Optional[str] = param(None, "Source format adapter (e.g. 'hh-rlhf'); see docs/data-formats.md.")
    field_map: dict[str, str] = param(default_factory=dict, doc="Canonical field -> column name in the files.")
    eval: list[str] = param(default_factory=list, doc="Evaluation files (empty = hold out eval_fraction by prompt).")
    eval_kind: Optional[Literal["pairwise", "ranked", "rated"]] = param(None, "Record kind of `eval` (default: kind).")
    eval_fraction: float = param(0.1, "Share of training prompts held out when `eval` is empty.")
    rated_as: Literal["pairs", "ranked", "regression"] = param(
        "pairs", "Rated data: pairs with margin = score difference, K-wise ranks, or regression on the scores."
    )
    rated_threshold: float = param(0.0, "Rated -> pairs: smallest score difference that makes a pair.")
    max_length: int = param(512, "Longest prompt + response in tokens.")
    truncation: Literal["keep_end", "reject"] = param(
        "keep_end", "Longer sequences: keep the last max_length tokens (where the reward is read), or reject."
    )
    chat_template: bool = param(True, "Render prompt + response with the tokenizer's chat template.")
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
class NormalizeConfig:
    """Reward normalisation fitted after training."""

    data: Optional[str] = param(
        None, "SFT-style data (prompt, completion) whose completions should score mean 0, std 1 (None = skip)."
    )
    max_examples: int = param(512, "Completions scored to fit the gain and bias.")


@dataclass(frozen=True)
class RMConfig(DatasetStageConfig):
    """Reward model from preference data (batch sizes count prompts / groups)."""

    output_dir: str = param("runs/rm", "Folder for the model, checkpoints, logs and plots.")
    max_steps: int = param(200, "Optimizer steps (<= 0: derive from `epochs`).")
    center_coef: float = param(0.0, "Weight of the reward-centering regulariser coef * mean(r^2).")
    data: RMDataConfig = param(default_factory=RMDataConfig, doc="Data.")
    normalize: NormalizeConfig = param(default_factory=NormalizeConfig, doc="Normalisation.")


def _as_training_records(records, data: RMDataConfig):
    """Rated records become pairs or rankings unless they are regressed on directly."""
    if data.kind != "rated" or data.rated_as == "regression":
        return records
    if data.rated_as == "pairs":
        return transforms.rated_to_pairwise(records, threshold=data.rated_threshold)[0]
    return [r for r in transforms.rated_to_ranked(records)[0] if len(set(r.ranks)) > 1]


def _groups(records, tokenizer, data: RMDataConfig, report) -> list[Group]:
    groups = []
    for record in records:
        try:
            groups.append(
                make_group(
                    record,
                    tokenizer,
                    max_length=data.max_length,
                    truncation=data.truncation,
                    chat_template=data.chat_template,
                )
            )
        except TooLong as err:
            report.reject_accepted(record, str(err))
    return groups


def _load_data(cfg: RMConfig, tokenizer, backend):
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
            data.eval_kind or data.kind,
            field_map=data.field_map or None,
            strict=data.strict,
            quarantine_path=None,
            adapter=data.adapter,
            max_record_bytes=data.max_record_bytes or None,
        )
    else:
        records, eval_records = split_by_prompt(records, data.eval_fraction, cfg.seed)
    train = _groups(_as_training_records(records, data), tokenizer, data, report)
    eval_kind = data.eval_kind or data.kind
    eval_data = eval_records if eval_kind != "rated" else transforms.rated_to_pairwise(eval_records)[0]
    evaluation = _groups(eval_data, tokenizer, data, report)
    report.quarantine.close()
    if not train:
        raise ValueError(f"no training group left after tokenisation\n{report.summary()}")
    return train, evaluation, report


def _objective(rewards: torch.Tensor, batch: dict, objective: str, global_count: float):
    """The data's loss for one micro-batch of groups, divided by its count over the global batch."""
    if objective == "regression":
        return losses.regression_loss(rewards, batch["targets"], batch["mask"], normalizer=global_count)
    if objective == "pairwise":  # groups of (chosen, rejected), optional margin
        return losses.pairwise_loss(rewards[:, 0], rewards[:, 1], batch["margin"], normalizer=global_count)
    return losses.kwise_loss(rewards, batch["ranks"], batch["mask"], normalizer=global_count)


def _objective_for(data: RMDataConfig) -> str:
    if data.kind == "rated":
        return {"regression": "regression", "pairs": "pairwise", "ranked": "kwise"}[data.rated_as]
    return "pairwise" if data.kind == "pairwise" else "kwise"


def _score_groups(model, groups, backend, micro: int, pad_id: int, layout) -> list[list[float]]:
    """Rewards of every group's responses, gathered on all processes (same order as ``groups``)."""
    model.eval()
    scored: list[tuple[int, list[float]]] = []
    with torch.no_grad():
        for chunk in common.eval_shards(len(groups), backend, micro):
            per_group, _ = score_groups(model, [groups[i] for i in chunk] or groups[:1], pad_id, backend.device, layout)
            per_group = per_group.float().cpu()
            for row, i in enumerate(chunk):
                scored.append((i, per_group[row, : groups[i].size].tolist()))
    model.train()
    gathered = sorted(backend.gather_objects(scored))
    return [rewards for _, rewards in gathered]


def evaluate(model, groups, backend, micro: int, pad_id: int, layout=None) -> tuple[dict, list[float]]:
    """Pairwise accuracy, precision / recall / F1, Kendall tau, calibration; and the margins."""
    if not groups:
        return {}, []
    scored = _score_groups(model, groups, backend, micro, pad_id, layout)
    chosen, rejected, items = [], [], []
    for group, rewards in zip(groups, scored):
        if group.ranks is None:
            continue
        items.append((rewards, list(group.ranks)))
        for i in range(group.size):
            for j in range(group.size):
                if group.ranks[i] < group.ranks[j]:
                    chosen.append(rewards[i])
                    rejected.append(rewards[j])
    if not chosen:
        return {}, []
    result = {f"eval_{k}": v for k, v in metrics.precision_recall_f1(chosen, rejected).items()}
    result["eval_accuracy"] = metrics.pairwise_accuracy(chosen, rejected)
    result.update({f"eval_{k}": v for k, v in metrics.reward_summary(chosen, rejected).items()})
    if any(len(ranks) > 2 for _, ranks in items):
        result["eval_kendall_tau"] = metrics.mean_kendall_tau(items)
    table = metrics.calibration_table(chosen, rejected)
    result["eval_ece"] = metrics.expected_calibration_error(table)
    result["eval_pairs"] = len(chosen)
    result["calibration"] = table
    return result, [c - r for c, r in zip(chosen, rejected)]


def run(cfg: RMConfig) -> dict:
    started = time.time()
    out = Path(cfg.output_dir)
    backend = common.start(cfg)
    guard = NonFiniteGuard(cfg, backend, "rm")

    # Setup: tokenizer, reward model, data, optimizer, resume.
    tokenizer = load_tokenizer(cfg.model)
    model = load_reward_model(cfg.model, pad_token_id=tokenizer.pad_token_id)
    trainable, total = count_parameters(model)
    train, eval_groups, report = _load_data(cfg, tokenizer, backend)
    objective = _objective_for(cfg.data)
    global_batch = cfg.batch.micro_batch_size * cfg.batch.grad_accum * backend.world_size
    max_steps = common.total_steps(cfg, len(train), global_batch)
    optimizer, scheduler = build_optimizer(model, cfg.optim, max_steps)
    model, optimizer = backend.prepare(model, optimizer, scheduler)
    layout, no_layout = layout_options(cfg.data, backend.unwrap(model))
    start_step, resume = common.resume(cfg, backend)
    tracker = common.tracker(cfg, backend, steps=max_steps, start_step=start_step, stage="rm")
    guard.begin(model, tracker, resume, started=started, plot_keys=("loss", "train_accuracy", "eval_accuracy"))
    tracker.write(report.summary())
    tracker.write(
        f"rm: {len(train)} training groups ({cfg.data.kind}), {len(eval_groups)} eval groups; "
        f"{backend.world_size} process(es), {backend.distributed_type}; trainable {trainable:,} / {total:,}; "
        f"{max_steps} steps of {global_batch} groups" + (f"; resumed at {start_step} from {resume}" if resume else "")
    )
    if no_layout:
        tracker.write(f"rm: shared-prompt rows off ({no_layout}); one padded row per response")

    # Loop: every process walks the same global batches of groups and takes its own slice.
    batches = common.global_batches(common.shuffled_stream(train, cfg.seed), global_batch, start_step)
    pad_id = tokenizer.pad_token_id
    micro = cfg.batch.micro_batch_size
    model.train()
    for step in range(start_step + 1, max_steps + 1):
        backend.at_step(step)
        step_start = time.time()
        groups = next(batches)
        # The counts each loss is averaged over, for the whole global batch.
        count = sum(g.size for g in groups) if objective == "regression" else len(groups)
        responses = sum(g.size for g in groups)
        sums = dict.fromkeys(("loss", "correct_pairs", "pairs", "tokens_computed", "tokens_unshared"), 0.0)
        for chunk in common.micro_batches(groups, backend, micro, cfg.batch.grad_accum):
            with backend.accumulate(model):
                rewards, batch = score_groups(model, chunk, pad_id, backend.device, layout)
                loss, info = _objective(rewards, batch, objective, count)
                if cfg.center_coef > 0:
                    center, _ = losses.centering_loss(rewards, cfg.center_coef, batch["mask"], normalizer=responses)
                    loss = loss + center
                backend.backward(loss)
            pairs = float(info.get("num_pairs", 0))
            sums["loss"] += float(loss.detach())
            sums["correct_pairs"] += float(info.get("accuracy", 0.0)) * pairs
            sums["pairs"] += pairs
            sums["tokens_computed"] += float(batch["tokens_computed"])
            sums["tokens_unshared"] += float(batch["tokens_unshared"])
        grad_norm, stepped = guard.optimizer_step(step, model, optimizer, scheduler, sums["loss"])
        totals = backend.all_reduce_sums(sums)
        pairs = totals["pairs"]
        if not stepped:
            tracker.log(step, guard.counts())
        elif step % cfg.tracking.log_every == 0 or step == max_steps:
            row = {
                "loss": totals["loss"],
                "lr": scheduler.get_last_lr()[0],
                "grad_norm": grad_norm,
                "sequences_per_s": responses / max(time.time() - step_start, 1e-9),
                "step_time_s": time.time() - step_start,
                "tokens_computed": totals["tokens_computed"],
                "tokens_unshared": totals["tokens_unshared"],
                **guard.counts(),
            }
            if pairs:
                row["train_accuracy"] = totals["correct_pairs"] / pairs
            tracker.log(step, row)
        if cfg.eval_steps and step % cfg.eval_steps == 0 and step != max_steps:
            result, _ = evaluate(model, eval_groups, backend, micro, pad_id, layout)
            tracker.log(step, {k: v for k, v in result.items() if k != "calibration"})
        if cfg.checkpoint.save_steps and step % cfg.checkpoint.save_steps == 0 and step != max_steps:
            guard.save_checkpoint(step, model, {"data_position": step * global_batch})
        tracker.advance()

    # Save: checkpoint (parameters checked), eval, the model folder, then the normalisation fitted with it.
    guard.save_checkpoint(max_steps, model, {"data_position": max_steps * global_batch})
    result, margins = evaluate(model, eval_groups, backend, micro, pad_id, layout)
    if result:
        tracker.log(max_steps, {k: v for k, v in result.items() if k != "calibration"})
    state_dict = backend.full_state_dict(model)
    unwrapped = backend.unwrap(model)
    info = {"kind": cfg.data.kind, "chat_template": cfg.data.chat_template, "max_length": cfg.data.max_length}
    model_dir = common.write_folder_atomically(
        backend,
        out / "model",
        lambda tmp: save_reward_model(
            unwrapped, tokenizer, str(tmp), state_dict=state_dict, merge=cfg.model.adapt.merge, extra=info
        ),
    )
    normalization = _fit_normalization(cfg, model_dir) if backend.is_main and cfg.normalize.data else None
    backend.barrier()
    if backend.is_main and margins:
        plot_histogram(margins, out / "reward_margins.png", title="eval reward margin (chosen - rejected)")
    final = [r for r in tracker.history if "loss" in r]
    summary = {
        "stage": "rm",
        **guard.finished(),
        "steps": max_steps,
        "final_loss": final[-1]["loss"] if final else None,
        **result,
        "normalization": normalization,
        "model_dir": str(model_dir),
        "inputs": input_fingerprints(cfg),  # what it was trained from (the pipeline compares)
        "trainable_parameters": trainable,
        "total_parameters": total,
        "global_batch_groups": global_batch,
        "data": report.to_dict(),
        **common.run_facts(backend, started),
    }
    tracker.finish(summary, plot_keys=("loss", "train_accuracy", "eval_accuracy"))
    backend.end()
    return summary


def _fit_normalization(cfg: RMConfig, model_dir: Path) -> dict:
    """Gain and bias that give the normalisation data's completions mean 0 and std 1."""
    from preference_data.validate import load_sft
    from reward_models.normalization import fit_normalization, save_normalization
    from reward_models.scorer import RewardModel
    from rlhf.runtime.backend import unpartitioned_loading

    records, _ = load_sft([cfg.normalize.data], quarantine_path=None)
    records = records[: cfg.normalize.max_examples]
    with unpartitioned_loading():  # the main process scores alone
        scorer = RewardModel.from_pretrained(str(model_dir), trust_remote_code=cfg.model.trust_remote_code)
    scores = scorer.score([list(r.prompt) for r in records], [r.completion for r in records], normalize=False)
    norm = fit_normalization(scores)
    save_normalization(str(model_dir), norm, data=cfg.normalize.data, examples=len(scores))
    write_fingerprint(model_dir)  # the folder changed: its fingerprint covers the normalisation too
    return norm
