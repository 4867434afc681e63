"""Side-by-side throughput benchmarks against TRL, in one run on one machine.

    python scripts/bench/bench.py sft [--model builtin:tiny] [--steps 30] [--batch 8] [--max-length 256] [--repeats 3]
                                      [--warmup 3] [--data synthetic|hh] [--lora] [--packing]
    python scripts/bench/bench.py rm  [...same options; batch = preference pairs per step] [--layout shared|separate]
    python scripts/bench/bench.py rm-kwise [...same options; batch = prompts per step (K = 4 replies each)]
    python scripts/bench/bench.py dpo [...same options] [--reference precompute|copy] [--gradient-checkpointing]
    python scripts/bench/bench.py import
    python scripts/bench/bench.py data [--records 1000000]
    python scripts/bench/bench.py all [--quick] [--sizes tiny,smollm2] [--model M] [--write docs/benchmarks.md]

all: every comparison against TRL in one command, on two model sizes, then ONE table of ours vs
baseline throughput, tokens per step, peak-memory ratios and wall time, with the settings of each
row. builtin:tiny rows (sft, rm, dpo with --reference precompute and copy, against the installed
TRL; ppo against TRL 1.12 through scripts/bench/bench_ppo.py) use the documented defaults:
--steps/--batch/--max-length/--repeats/--warmup (30 / 8 / 256 / 3 / 3) on synthetic data, ppo
with bench_ppo.py's defaults (--ppo-steps/--ppo-batch/--response-length override them); --model
and --repeats apply to those rows. builtin:smollm2-135m-instruct rows (SmolLM2-135M-Instruct, fp32,
max_length 512, batch 4, 12 steps with 2 warm-up, --smollm2-repeats, default 1): sft (hh-rlhf
prompt + chosen reply, packed on both sides), rm (hh-rlhf pairs), rm-kwise (judged ranked, K = 4,
2 prompts per step), dpo-precompute on hh-rlhf with full fine-tuning and with LoRA, and ppo with a
LoRA policy. Each SmolLM2 row carries its goal (ours / TRL) and whether it is met. --quick (6
steps, 4 for PPO, 1 repeat, fewer examples; SmolLM2 rows 3 steps with 1 warm-up) is a smoke
test. --write PATH replaces the block between <!-- bench:all:start --> and <!-- bench:all:end -->
in PATH (inserted before the first "## " heading when absent) with the table, the machine, the
command and its total wall time; a --quick block says so. The per-stage progress and tables go to
stderr; stdout gets the final table.

Each measurement runs in a fresh subprocess (so peak memory is per framework), the two
frameworks alternate; a run's step time is the mean over its timed steps (batches differ in
length), and the medians over repeats are reported with their ratio. Both sides
get the same model, examples, batch size, sequence limit, precision, optimizer (fused AdamW) and LR, and
train on completion tokens only with the chat template applied.

--data hh: the first --examples pairs of ../shared/data/hh-rlhf/harmless-base-test.jsonl.gz (from
the repository root), read with our reader and hh-rlhf adapter (prompt = the conversation up to
the last Human turn, chosen / rejected = the final Assistant replies), keeping only pairs whose
prompt + longer reply fit --max-length under the chat template, so that neither side truncates
(TRL's RewardTrainer drops longer pairs, our stages truncate them). Both sides get the same
records: ours as a jsonl file (prompt = message list), TRL as a conversational dataset. SFT on hh
learns prompt + chosen reply. When the file is absent the comparison is skipped, not failed.

rm-kwise: our RM with data.kind=ranked on judged ranked records (builtin:judged-ranked, K = 4
replies, judge noise 10% to break the judge's ties, only records with 4 distinct ranks), --batch
prompts per step; TRL's RewardTrainer (pairwise only) gets, per
prompt, all 6 (chosen, rejected) pairs of the ranking and 6 x --batch pairs per step, so a step
covers as many prompts on both sides. Its unit is prompts/s.

--lora: ours model.adapt.strategy=lora (r 16, alpha 32, dropout 0, all-linear), TRL the same
peft.LoraConfig (task type CAUSAL_LM, SEQ_CLS for the reward model) as peft_config.
--layout shared|separate (rm, rm-kwise, dpo): our data.shared_prompt=true|false (default: the
stage's own default, the key is not passed). --packing (sft): ours data.packing=true, TRL
packing=True (best-fit decreasing, which TRL runs padding-free: one flattened row with position
ids, block-diagonal attention through SDPA on a CPU; no flash attention needed).

Tokens computed per step: the token slots fed to the model in an optimizer step, padding
included: ours from the metrics rows' tokens_computed (summed over micro-batches; with
tokens_unshared, what right-padded separate rows of the same micro-batches would have held, the
share saved is 1 - computed / unshared), TRL by wrapping the trainer's data collator and adding
up input_ids.numel() of each collated batch (its RM and DPO collators concatenate chosen and
rejected rows into one input_ids).

dpo: batch = preference pairs per optimizer step, sigmoid loss, beta 0.1, dropout off on both
sides (each framework's default). --reference precompute compares our reference=precompute
with TRL's precompute_ref_log_probs=True; --reference copy compares our frozen copy
(reference=copy) with TRL's default (ref_model=None: TRL loads a frozen copy and runs it on
every step). The reference precompute happens before the first step on both sides and is not
timed. Tokens per step (the tokens/s column) are the chosen + rejected reply tokens (what our
metrics count); the prompt, fed twice, is not counted on either side.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench_common import LORA, lora_overrides, peak_gpu, peak_rss, peft_lora

REPO = Path(__file__).resolve().parents[2]
WARMUP_STEPS = 3
HH_FILE = "../shared/data/hh-rlhf/harmless-base-test.jsonl.gz"  # relative to the repository root
SMOLLM2 = "builtin:smollm2-135m-instruct"
RANKED_K = 4
PAIRS_PER_RANKING = RANKED_K * (RANKED_K - 1) // 2
RANKED_NOISE = 10  # percent


def _hh_path() -> Path:
    return (REPO / HH_FILE).resolve()


def _trl_version() -> str:
    from importlib import metadata

    return metadata.version("trl")


# ---------------------------------------------------------------------------------------------
# data: the same records for both sides


def _tokenizer(args):
    from transformers import AutoTokenizer

    from rlhf.models.loading import resolve_model_path

    return AutoTokenizer.from_pretrained(resolve_model_path(args.model), trust_remote_code=False)


def _messages(prompt) -> list[dict]:
    """A prompt as a chat: plain text is one user turn."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [{"role": m["role"], "content": m["content"]} for m in prompt]


def _hh_pairs(args) -> list[dict]:
    """The first --examples hh-rlhf pairs whose prompt + longer reply fit max_length (chat template)."""
    from preference_data.validate_preferences import load_kind

    records, _ = load_kind([str(_hh_path())], "pairwise", adapter="hh-rlhf", quarantine_path=None)
    tokenizer = _tokenizer(args)
    pairs = []
    for record in records:
        prompt = _messages(record.prompt)
        longest = max(
            len(tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": reply}], tokenize=True))
            for reply in (record.chosen, record.rejected)
        )
        if longest <= args.max_length:
            pairs.append({"prompt": prompt, "chosen": record.chosen, "rejected": record.rejected})
            if len(pairs) == args.examples:
                break
    return pairs


def _pairs(args) -> list[dict]:
    """Preference pairs {"prompt", "chosen", "rejected"} of --data."""
    if args.data == "hh":
        return _hh_pairs(args)
    from preference_data.synthetic_prefs import pairwise_records

    return pairwise_records(args.examples, seed=0)


def _sft_examples(args) -> list[dict]:
    """SFT examples {"prompt", "completion"} of --data (hh: the prompt and its chosen reply)."""
    if args.data == "hh":
        return [{"prompt": p["prompt"], "completion": p["chosen"]} for p in _hh_pairs(args)]
    from preference_data.synthetic import sft_records

    return [
        {"prompt": r["prompt"], "completion": r["completion"]}
        for r in sft_records(args.examples, seed=0, quality="mixed")
    ]


def _rankings(args) -> list[dict]:
    """--examples judged ranked records (builtin:judged-ranked, K = 4) with 4 distinct ranks.

    The judge scores in half points, so most noise-free rankings tie two replies; judge noise
    RANKED_NOISE (the builtin's noise parameter, in percent) breaks enough ties, and only full
    rankings are kept, so that each gives all K(K-1)/2 = 6 (chosen, rejected) pairs.
    """
    from preference_data.synthetic_prefs import ranked_records

    n = 4 * args.examples
    while True:
        records = ranked_records(n, seed=0, k=RANKED_K, noise=RANKED_NOISE / 100)
        records = [r for r in records if len(set(r["ranks"])) == RANKED_K]
        if len(records) >= args.examples or n > 64 * args.examples:
            return records[: args.examples]
        n *= 2


def _ranking_pairs(record: dict) -> list[dict]:
    """Every (better, worse) pair of a ranking (rank 0 = best)."""
    responses, ranks = record["responses"], record["ranks"]
    return [
        {"prompt": record["prompt"], "chosen": responses[i], "rejected": responses[j]}
        for i in range(len(responses))
        for j in range(len(responses))
        if ranks[i] < ranks[j]
    ]


def _trl_pairs(pairs: list[dict]):
    """Preference pairs as a TRL conversational dataset."""
    from datasets import Dataset

    return Dataset.from_list(
        [
            {
                "prompt": _messages(p["prompt"]),
                "chosen": [{"role": "assistant", "content": p["chosen"]}],
                "rejected": [{"role": "assistant", "content": p["rejected"]}],
            }
            for p in pairs
        ]
    )


# ---------------------------------------------------------------------------------------------
# our side


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


# ---------------------------------------------------------------------------------------------
# TRL's side


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


# ---------------------------------------------------------------------------------------------
# parent


def _spawn(args, framework: str) -> dict:
    cmd = [sys.executable, __file__, args.what, "--child", framework]
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


def bench_import(args) -> None:
    def timed(statement: str) -> float:
        code = f"import time; t = time.perf_counter(); {statement}; print(time.perf_counter() - t)"
        samples = [
            float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
            for _ in range(args.repeats)
        ]
        return statistics.median(samples)

    # Package imports, then what it takes to reach a trainer (TRL resolves its names lazily).
    statements = [
        "import rlhf",
        "import rlhf.cli.main",
        "import trl",
        "from rlhf.stages.sft import run",
        "from trl import SFTTrainer",
    ]
    for statement in statements:
        print(f"{statement:36} {timed(statement):6.2f} s (median of {args.repeats})")


def bench_data(args) -> None:
    """Streaming validation of a large pairwise jsonl file: records/s and peak RSS of the validator."""
    from preference_data.synthetic_prefs import pairwise_records

    base = pairwise_records(1000, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "big.jsonl")
        with open(path, "w", encoding="utf-8") as handle:
            for i in range(args.records):
                record = dict(base[i % len(base)])
                record["prompt"] = f"{record['prompt']} (item {i})"  # distinct, so dedup keeps all
                handle.write(json.dumps(record) + "\n")
        size = os.path.getsize(path)
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "rlhf.cli.main", "data", "validate", path, "--kind", "pairwise"],
            capture_output=True,
            text=True,
        )
        elapsed = time.perf_counter() - start
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(result.stdout.strip().splitlines()[0] if result.stdout else result.stderr[-2000:])
    print(
        f"validated {args.records:,} records ({size / 2**20:.0f} MiB) in {elapsed:.1f} s: "
        f"{args.records / elapsed:,.0f} records/s, peak RSS {rss / 2**20:.0f} MiB (exit {result.returncode})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["sft", "rm", "rm-kwise", "dpo", "import", "data", "all"])
    parser.add_argument("--records", type=int, default=1_000_000, help="data: records in the generated file")
    parser.add_argument("--model", default="builtin:tiny")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=WARMUP_STEPS, help="steps not timed at the start of each run")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--data",
        choices=["synthetic", "hh"],
        default="synthetic",
        help=f"sft / rm / dpo: synthetic judged records, or the first --examples pairs of {HH_FILE}",
    )
    parser.add_argument("--lora", action="store_true", help="sft / rm / rm-kwise / dpo: LoRA r16 on both sides")
    parser.add_argument(
        "--layout",
        choices=["shared", "separate"],
        help="rm / rm-kwise / dpo: our data.shared_prompt=true / false (default: not passed, the stage's default); "
        "all: for the SmolLM2 rows",
    )
    parser.add_argument("--packing", action="store_true", help="sft: ours data.packing=true, TRL packing=True")
    parser.add_argument(
        "--reference",
        choices=["precompute", "copy"],
        default="precompute",
        help="dpo: ours reference=precompute vs TRL precompute_ref_log_probs=True, or "
        "ours reference=copy vs TRL's default frozen copy run on every step",
    )
    parser.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="dpo: gradient checkpointing on both sides (off by default)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"all: smoke test only ({QUICK['steps']} steps, {QUICK['ppo_steps']} for PPO, "
        f"{QUICK['repeats']} repeat, {QUICK['examples']} examples; SmolLM2 rows {SMOLLM2_QUICK['steps']} steps with "
        f"{SMOLLM2_QUICK['warmup']} warm-up, {SMOLLM2_QUICK['examples']} examples)",
    )
    parser.add_argument(
        "--write", metavar="PATH", help="all: replace the bench:all block of PATH (docs/benchmarks.md) with the table"
    )
    parser.add_argument("--json", metavar="PATH", help="all: also write the results as JSON to PATH")
    parser.add_argument(
        "--only",
        help="all: comma-separated subset of sft,rm,dpo-precompute,dpo-copy,ppo (tiny) and smollm2:sft, "
        "smollm2:rm, smollm2:rm-kwise, smollm2:dpo-precompute, smollm2:dpo-precompute-lora, smollm2:ppo-lora; "
        "a bare name selects it in every size",
    )
    parser.add_argument("--sizes", default="tiny,smollm2", help="all: model sizes to run (tiny, smollm2)")
    parser.add_argument("--smollm2-repeats", type=int, default=1, help="all: repeats of the SmolLM2 rows")
    parser.add_argument(
        "--smollm2-steps", type=int, help=f"all: steps of the SmolLM2 rows (default {SMOLLM2_SETTINGS['steps']})"
    )
    parser.add_argument(
        "--smollm2-warmup",
        type=int,
        help=f"all: warm-up steps of the SmolLM2 rows (default {SMOLLM2_SETTINGS['warmup']})",
    )
    parser.add_argument(
        "--smollm2-examples",
        type=int,
        help=f"all: examples of the SmolLM2 rows (default {SMOLLM2_SETTINGS['examples']})",
    )
    parser.add_argument("--ppo-steps", type=int, help="all: PPO steps per run (default: bench_ppo.py's)")
    parser.add_argument("--ppo-batch", type=int, help="all: prompts per PPO rollout batch (default: bench_ppo.py's)")
    parser.add_argument("--response-length", type=int, help="all: PPO max new tokens (default: bench_ppo.py's)")
    parser.add_argument("--child", choices=["ours", "trl"], dest="framework")
    argv = sys.argv[1:]
    args = parser.parse_args(argv)
    if args.what != "dpo" and (args.gradient_checkpointing or args.reference != "precompute"):
        parser.error("--reference and --gradient-checkpointing apply to dpo only (all runs both references)")
    if args.what == "rm-kwise" and args.data != "synthetic":
        parser.error("rm-kwise runs on judged ranked records only (no --data)")
    if args.packing and args.what != "sft":
        parser.error("--packing applies to sft only")
    if args.layout and args.what in ("sft", "import", "data"):
        parser.error("--layout applies to rm, rm-kwise, dpo (and all)")
    all_only = [
        flag
        for flag, value in (
            ("--quick", args.quick),
            ("--write", args.write),
            ("--json", args.json),
            ("--only", args.only),
            ("--ppo-steps", args.ppo_steps),
            ("--ppo-batch", args.ppo_batch),
            ("--response-length", args.response_length),
            ("--smollm2-repeats", args.smollm2_repeats != 1),
            ("--smollm2-steps", args.smollm2_steps),
            ("--smollm2-warmup", args.smollm2_warmup),
            ("--smollm2-examples", args.smollm2_examples),
            ("--sizes", args.sizes != "tiny,smollm2"),
        )
        if value
    ]
    if args.what != "all" and all_only:
        parser.error(f"{', '.join(all_only)}: only with all")
    if args.what == "all" and (args.lora or args.packing or args.data != "synthetic"):
        parser.error("--lora, --packing and --data are per comparison; all sets them per row")
    if args.framework:
        _child(args)
    elif args.what in ("sft", "rm", "rm-kwise", "dpo"):
        bench_training(args)
    elif args.what == "all":
        sys.exit(bench_all(args, argv))
    elif args.what == "data":
        bench_data(args)
    else:
        bench_import(args)


if __name__ == "__main__":
    main()
