"""bench.py's runs of TRL's trainers on the same records and settings."""

from __future__ import annotations

import statistics
import tempfile
import time

from bench_common import PAIRS_PER_RANKING, peft_lora
from bench_records import _messages, _pairs, _ranking_pairs, _rankings, _sft_examples, _tokenizer, _trl_pairs


def _step_timer(times: list[float]):
    """A transformers callback appending each optimizer step's duration to ``times``."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            self.start = time.perf_counter()

        def on_step_end(self, *_, **__):
            times.append(time.perf_counter() - self.start)

    return StepTimer()


def _trl_common(args, output_dir: str, batch: int | None = None) -> dict:
    """TrainingArguments both sides share: steps, batch, LR, fp32 on CPU, no saving or logging.

    Gradient checkpointing is off unless asked: TRL's configs default it to on, ours to off.
    The GPU is used where there is one, as our stages do (accelerate's default).
    """
    import torch

    return dict(
        output_dir=output_dir,
        max_steps=args.steps,
        per_device_train_batch_size=batch or args.batch,
        gradient_accumulation_steps=1,
        learning_rate=1e-4,
        lr_scheduler_type="constant",
        warmup_steps=0,
        max_length=args.max_length,
        save_strategy="no",
        report_to="none",
        logging_steps=10**6,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
        bf16=False,
        fp16=False,
        disable_tqdm=True,
        seed=0,
        gradient_checkpointing=getattr(args, "gradient_checkpointing", False),
    )


def _trl_peft(args, task_type: str):
    """TRL's peft_config: the LoRA of ours (None without --lora)."""
    return peft_lora(task_type) if args.lora else None


def _count_collated(trainer, key: str | None = None) -> tuple[list[int], list[int]]:
    """Wraps the trainer's collator (after __init__: a DPO precompute's batches are not counted).

    Returns two lists filled as batches are built, in step order: input_ids.numel() (the token
    slots fed to the model, padding included) and, with ``key``, that mask's sum.
    """
    slots: list[int] = []
    counted: list[int] = []
    collate = trainer.data_collator

    def counting_collator(examples):
        batch = collate(examples)
        slots.append(int(batch["input_ids"].numel()))
        if key is not None:
            counted.append(int(batch[key].sum()))
        return batch

    trainer.data_collator = counting_collator
    return slots, counted


def _trl_result(args, times: list[float], slots: list[int], tokens_per_step: float) -> dict:
    return {
        "step_time_s": statistics.mean(times[args.warmup :]),
        "tokens_per_step": tokens_per_step,
        "tokens_computed": statistics.mean(slots[args.warmup : args.steps]),
        "tokens_unshared": None,
    }


def _trl_sft(args) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig as TRLConfig
    from trl import SFTTrainer

    from rlhf.models.loading import resolve_model_path

    tokenizer = _tokenizer(args)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(args.model), dtype="float32")
    data = Dataset.from_list(
        [
            {"prompt": _messages(r["prompt"]), "completion": [{"role": "assistant", "content": r["completion"]}]}
            for r in _sft_examples(args)
        ]
    )
    times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        # packing=True is TRL's best-fit-decreasing packing, which it runs padding-free.
        config = TRLConfig(**_trl_common(args, tmp), packing=args.packing, completion_only_loss=True)
        trainer = SFTTrainer(
            model=model,
            args=config,
            train_dataset=data,
            processing_class=tokenizer,
            callbacks=[_step_timer(times)],
            peft_config=_trl_peft(args, "CAUSAL_LM"),
        )
        slots, _ = _count_collated(trainer)
        trainer.train()
        lengths = [len(x) for x in trainer.train_dataset["input_ids"]]
    return _trl_result(args, times, slots, statistics.mean(lengths) * args.batch)


def _trl_reward(args, pairs: list[dict], batch: int) -> dict:
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    from rlhf.models.loading import resolve_model_path

    tokenizer = _tokenizer(args)
    model = AutoModelForSequenceClassification.from_pretrained(
        resolve_model_path(args.model), num_labels=1, dtype="float32"
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = RewardConfig(**_trl_common(args, tmp, batch=batch))
        trainer = RewardTrainer(
            model=model,
            args=config,
            train_dataset=_trl_pairs(pairs),
            processing_class=tokenizer,
            callbacks=[_step_timer(times)],
            peft_config=_trl_peft(args, "SEQ_CLS"),
        )
        slots, _ = _count_collated(trainer)
        trainer.train()
    return _trl_result(args, times, slots, 0.0)


def _trl_rm(args) -> dict:
    return _trl_reward(args, _pairs(args), args.batch)


def _trl_rm_kwise(args) -> dict:
    pairs = [pair for record in _rankings(args) for pair in _ranking_pairs(record)]
    return _trl_reward(args, pairs, PAIRS_PER_RANKING * args.batch)


def _trl_dpo(args) -> dict:
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    from rlhf.models.loading import resolve_model_path

    tokenizer = _tokenizer(args)
    path = resolve_model_path(args.model)
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    ref_model = None
    if args.reference == "copy" and not args.lora and not model.config.architectures:
        # TRL's own copy (ref_model=None) is loaded by the architecture named in config.json,
        # which our built-in folders do not record; the same frozen copy, loaded here.
        ref_model = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = DPOConfig(
            **_trl_common(args, tmp),
            loss_type=["sigmoid"],
            beta=0.1,
            precompute_ref_log_probs=args.reference == "precompute",
            padding_free=False,
            disable_dropout=True,
            eval_strategy="no",
        )
        # ref_model=None: TRL builds the frozen reference itself (with LoRA: adapters off; with
        # precompute it computes the reference log-probs in __init__, before train(), outside the
        # step timer).
        trainer = DPOTrainer(
            model=model,
            ref_model=ref_model,
            args=config,
            train_dataset=_trl_pairs(_pairs(args)),
            processing_class=tokenizer,
            callbacks=[_step_timer(times)],
            peft_config=_trl_peft(args, "CAUSAL_LM"),
        )
        if not args.lora:
            assert (trainer.ref_model is None) == (args.reference == "precompute")
        # Reply tokens (chosen + rejected, after truncation) of each timed step's own batch.
        slots, replies = _count_collated(trainer, "completion_mask")
        trainer.train()
    return _trl_result(args, times, slots, statistics.mean(replies[args.warmup : args.steps]))
