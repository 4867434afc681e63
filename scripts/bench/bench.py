"""Side-by-side throughput benchmarks against TRL, in one run on one machine.

    python scripts/bench/bench.py sft [--model builtin:tiny] [--steps 30] [--batch 8] [--max-length 256] [--repeats 3]
    python scripts/bench/bench.py rm  [...same options; batch = preference pairs per step]
    python scripts/bench/bench.py dpo [...same options] [--reference precompute|copy] [--gradient-checkpointing]
    python scripts/bench/bench.py import
    python scripts/bench/bench.py data [--records 1000000]
    python scripts/bench/bench.py all [--quick] [--model M] [--write docs/benchmarks.md]

all: every comparison against TRL in one command (sft, rm, dpo with --reference precompute and
copy, against the installed TRL; ppo against TRL 1.12 through scripts/bench/bench_ppo.py), then ONE
table of ours vs baseline throughput, tokens/s and peak-memory ratios with the settings of each
row. Defaults are the documented ones: sft/rm/dpo with --steps/--batch/--max-length/--repeats
(30 / 8 / 256 / 3), ppo with bench_ppo.py's defaults (--ppo-steps/--ppo-batch/--response-length
override them); --model and --repeats apply to every row. --quick (6 steps, 4 for PPO, 1 repeat,
fewer examples) is a smoke test. --write PATH replaces the block between
<!-- bench:all:start --> and <!-- bench:all:end --> in PATH (inserted before the first "## "
heading when absent) with the table, the machine and the command; a --quick block says so.
The per-stage progress and tables go to stderr; stdout gets the final table.

Each measurement runs in a fresh subprocess (so peak memory is per framework), the two
frameworks alternate, and the medians over repeats are reported with their ratio. Both sides
get the same model, examples, batch size, sequence limit, precision, optimizer and LR, and
train on completion tokens only with the chat template applied.

dpo: batch = preference pairs per optimizer step, sigmoid loss, beta 0.1, dropout off on both
sides (each framework's default). --reference precompute compares our reference=precompute
with TRL's precompute_ref_log_probs=True; --reference copy compares our frozen copy
(reference=copy) with TRL's default (ref_model=None: TRL loads a frozen copy and runs it on
every step). The reference precompute happens before the first step on both sides and is not
timed. Tokens per step are the chosen + rejected reply tokens (what our metrics count); the
prompt, fed twice, is not counted on either side.
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

from bench_common import peak_gpu, peak_rss

WARMUP_STEPS = 3


def _examples(n: int) -> list[dict]:
    from preference_data.synthetic import sft_records

    return sft_records(n=n, seed=0, quality="mixed")


def _trl_version() -> str:
    from importlib import metadata

    return metadata.version("trl")


def _run_ours(stage: str, args, records: list[dict], *extra: str) -> list[dict]:
    """Runs our stage on ``records`` with the benchmark settings; its timed metrics rows."""
    from rlhf.config.loader import load_config
    from rlhf.stages.registry import config_class, run_function

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
                *extra,
            ],
        )
        run_function(stage)(cfg)
        rows = [json.loads(line) for line in open(f"{tmp}/out/metrics.jsonl")]
    return [r for r in rows if "step_time_s" in r][WARMUP_STEPS:]


def _ours(args) -> dict:
    records = [{"prompt": r["prompt"], "completion": r["completion"]} for r in _examples(args.examples)]
    steps = _run_ours("sft", args, records, "data.eval_fraction=0")
    step_time = statistics.median(r["step_time_s"] for r in steps)
    tokens = statistics.mean(r["tokens_per_s"] * r["step_time_s"] for r in steps)
    return {"step_time_s": step_time, "tokens_per_step": tokens}


def _step_timer(times: list[float]):
    """A transformers callback appending each optimizer step's duration to ``times``."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            self.start = time.perf_counter()

        def on_step_end(self, *_, **__):
            times.append(time.perf_counter() - self.start)

    return StepTimer()


def _trl(args) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig as TRLConfig
    from trl import SFTTrainer

    from rlhf.models.loading import resolve_model_path

    path = resolve_model_path(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32", trust_remote_code=False)
    data = Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": r["prompt"]}],
                "completion": [{"role": "assistant", "content": r["completion"]}],
            }
            for r in _examples(args.examples)
        ]
    )
    times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = TRLConfig(**_trl_common(args, tmp), packing=False, completion_only_loss=True)
        trainer = SFTTrainer(
            model=model, args=config, train_dataset=data, processing_class=tokenizer, callbacks=[_step_timer(times)]
        )
        trainer.train()
        lengths = [len(x) for x in trainer.train_dataset["input_ids"]]
    tokens = statistics.mean(lengths) * args.batch
    return {"step_time_s": statistics.median(times[WARMUP_STEPS:]), "tokens_per_step": tokens}


def _trl_common(args, output_dir: str) -> dict:
    """TrainingArguments both sides share: steps, batch, LR, fp32 on CPU, no saving or logging.

    Gradient checkpointing is off unless asked: TRL's configs default it to on, ours to off.
    The GPU is used where there is one, as our stages do (accelerate's default).
    """
    import torch

    return dict(
        output_dir=output_dir,
        max_steps=args.steps,
        per_device_train_batch_size=args.batch,
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


def _pairs(n: int) -> list[dict]:
    from preference_data.synthetic_prefs import pairwise_records

    return pairwise_records(n, seed=0)


def _trl_pairs(n: int):
    """The benchmark's preference pairs as a TRL conversational dataset."""
    from datasets import Dataset

    return Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": r["prompt"]}],
                "chosen": [{"role": "assistant", "content": r["chosen"]}],
                "rejected": [{"role": "assistant", "content": r["rejected"]}],
            }
            for r in _pairs(n)
        ]
    )


def _ours_rm(args) -> dict:
    steps = _run_ours("rm", args, _pairs(args.examples), "data.eval_fraction=0.01")
    return {"step_time_s": statistics.median(r["step_time_s"] for r in steps), "tokens_per_step": 0.0}


def _trl_rm(args) -> dict:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    from rlhf.models.loading import resolve_model_path

    path = resolve_model_path(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, dtype="float32", trust_remote_code=False
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    data = _trl_pairs(args.examples)
    times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = RewardConfig(**_trl_common(args, tmp))
        RewardTrainer(
            model=model, args=config, train_dataset=data, processing_class=tokenizer, callbacks=[_step_timer(times)]
        ).train()
    return {"step_time_s": statistics.median(times[WARMUP_STEPS:]), "tokens_per_step": 0.0}


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
    steps = _run_ours("dpo", args, _pairs(args.examples), *extra)
    # Our tokens_per_s counts the reply tokens of chosen + rejected (the prompt is masked out).
    tokens = statistics.mean(r["tokens_per_s"] * r["step_time_s"] for r in steps)
    return {"step_time_s": statistics.median(r["step_time_s"] for r in steps), "tokens_per_step": tokens}


def _trl_dpo(args) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from rlhf.models.loading import resolve_model_path

    path = resolve_model_path(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32", trust_remote_code=False)
    data = _trl_pairs(args.examples)
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
        # ref_model=None: TRL builds the frozen reference itself (or, with precompute, computes the
        # reference log-probs in __init__, before train(), so outside the step timer).
        trainer = DPOTrainer(
            model=model,
            ref_model=None,
            args=config,
            train_dataset=data,
            processing_class=tokenizer,
            callbacks=[_step_timer(times)],
        )
        assert (trainer.ref_model is None) == (args.reference == "precompute")
        # Reply tokens (chosen + rejected, after truncation) of each batch, counted as the collator
        # builds it, so the timed steps' own batches are counted, as our metrics do. Wrapped after
        # __init__, so the precompute's batches are not counted; calls come in step order.
        batch_tokens: list[int] = []
        collate = trainer.data_collator

        def counting_collator(examples):
            batch = collate(examples)
            batch_tokens.append(int(batch["completion_mask"].sum()))
            return batch

        trainer.data_collator = counting_collator
        trainer.train()
    tokens = statistics.mean(batch_tokens[WARMUP_STEPS : args.steps])
    return {"step_time_s": statistics.median(times[WARMUP_STEPS:]), "tokens_per_step": tokens}


def _child(args) -> None:
    os.environ.setdefault("WANDB_MODE", "disabled")
    runners = {
        ("sft", "ours"): _ours,
        ("sft", "trl"): _trl,
        ("rm", "ours"): _ours_rm,
        ("rm", "trl"): _trl_rm,
        ("dpo", "ours"): _ours_dpo,
        ("dpo", "trl"): _trl_dpo,
    }
    result = runners[(args.what, args.framework)](args)
    result["peak_rss_bytes"] = peak_rss()
    result["peak_gpu_bytes"] = peak_gpu()
    print("RESULT " + json.dumps(result), flush=True)


def _spawn(args, framework: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        args.what,
        "--child",
        framework,
        "--model",
        args.model,
        "--steps",
        str(args.steps),
        "--batch",
        str(args.batch),
        "--max-length",
        str(args.max_length),
        "--examples",
        str(args.examples),
        "--reference",
        args.reference,
    ] + (["--gradient-checkpointing"] if args.gradient_checkpointing else [])
    out = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{framework} run failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def bench_training(args) -> dict:
    """Runs the sft / rm / dpo comparison, prints its table and returns it (see bench_report)."""
    import bench_report

    runs: dict[str, list[dict]] = {"ours": [], "trl": []}
    for repeat in range(args.repeats):
        for framework in ("ours", "trl") if repeat % 2 == 0 else ("trl", "ours"):
            runs[framework].append(_spawn(args, framework))
            print(f"  repeat {repeat + 1}/{args.repeats} {framework}: {runs[framework][-1]}", file=sys.stderr)
    table = {}
    for framework, results in runs.items():
        step = statistics.median(r["step_time_s"] for r in results)
        tokens = statistics.median(r["tokens_per_step"] for r in results)
        gpu = [r["peak_gpu_bytes"] for r in results if r.get("peak_gpu_bytes") is not None]
        table[framework] = {
            "steps_per_s": 1.0 / step,
            "tokens_per_s": tokens / step,
            "peak_rss_mib": statistics.median(r["peak_rss_bytes"] for r in results) / 2**20,
            "peak_gpu_mib": statistics.median(gpu) / 2**20 if gpu else None,
        }
    setting = ""
    if args.what == "dpo":
        trl_reference = (
            "precompute_ref_log_probs=True"
            if args.reference == "precompute"
            else "frozen copy on the fly (TRL default)"
        )
        setting = (
            f", reference: ours reference={args.reference} vs TRL {trl_reference}"
            f", tokens = chosen + rejected reply tokens"
        )
    if args.gradient_checkpointing:
        setting += ", gradient checkpointing"
    print(
        f"{args.what.upper()} {args.model}: batch {args.batch}, max_length {args.max_length}, fp32, {args.steps} steps "
        f"({WARMUP_STEPS} warm-up not timed), median of {args.repeats}{setting}"
    )
    gpu = all(row["peak_gpu_mib"] is not None for row in table.values())
    print(f"{'':8}{'steps/s':>10}{'tokens/s':>12}{'peak RSS MiB':>15}" + (f"{'peak GPU MiB':>15}" if gpu else ""))
    for framework, row in table.items():
        print(
            f"{framework:8}{row['steps_per_s']:>10.2f}{row['tokens_per_s']:>12.0f}{row['peak_rss_mib']:>15.0f}"
            + (f"{row['peak_gpu_mib']:>15.0f}" if gpu else "")
        )
    ours, trl = table["ours"], table["trl"]
    memory, memory_kind = bench_report.memory_ratio(ours, trl)
    result = {
        "comparison": args.what if args.what != "dpo" else f"dpo-{args.reference}",
        "baseline": f"TRL {_trl_version()}",
        "unit": "steps/s",
        "ours": ours,
        "trl": trl,
        "ratio": {
            "steps_per_s": bench_report.ratio(ours["steps_per_s"], trl["steps_per_s"]),
            "tokens_per_s": bench_report.ratio(ours["tokens_per_s"], trl["tokens_per_s"]),
            "peak_memory": memory,
            "memory": memory_kind,
        },
        "settings": {
            "model": args.model,
            "batch": args.batch,
            "max_length": args.max_length,
            "steps": args.steps,
            "warmup_steps": WARMUP_STEPS,
            "repeats": args.repeats,
            **({"reference": args.reference} if args.what == "dpo" else {}),
            **({"gradient_checkpointing": True} if args.gradient_checkpointing else {}),
        },
    }
    tokens = f", tokens/s x{result['ratio']['tokens_per_s']:.2f}" if result["ratio"]["tokens_per_s"] else ""
    print(
        f"ratio ours/trl: steps/s x{result['ratio']['steps_per_s']:.2f}{tokens}, "
        f"peak memory ({memory_kind}) x{memory:.2f}"
    )
    return result


QUICK = {"steps": 6, "repeats": 1, "examples": 200, "ppo_steps": 4}


def bench_all(args, argv: list[str]) -> int:
    """Every comparison in one run, then one table; with --write, the docs block. Exit status."""
    import bench_ppo
    import bench_report

    stage = copy.copy(args)
    if args.quick:
        stage.steps, stage.repeats, stage.examples = QUICK["steps"], QUICK["repeats"], QUICK["examples"]
    if stage.steps <= WARMUP_STEPS:
        raise SystemExit(f"--steps must be more than the {WARMUP_STEPS} warm-up steps")
    if args.write:  # fail now, not after the whole run
        try:
            with open(args.write, encoding="utf-8", newline="") as handle:
                bench_report.replace_block(handle.read(), bench_report.render_block("", "", "", args.quick))
        except (OSError, ValueError) as error:
            raise SystemExit(f"--write {args.write}: {error}") from None
    # PPO gets bench_ppo.py's own defaults, overridden only where asked.
    ppo_argv = ["--model", args.model, "--repeats", str(stage.repeats)]
    ppo_steps = QUICK["ppo_steps"] if args.quick and args.ppo_steps is None else args.ppo_steps
    for flag, value in (
        ("--steps", ppo_steps),
        ("--batch", args.ppo_batch),
        ("--response-length", args.response_length),
    ):
        if value is not None:
            ppo_argv += [flag, str(value)]
    ppo_args = bench_ppo.build_parser().parse_args(ppo_argv)

    def training(what: str, reference: str = "precompute"):
        def run() -> dict:
            run_args = copy.copy(stage)
            run_args.what, run_args.reference = what, reference
            return bench_training(run_args)

        return run

    comparisons = {
        "sft": training("sft"),
        "rm": training("rm"),
        "dpo-precompute": training("dpo", "precompute"),
        "dpo-copy": training("dpo", "copy"),
        "ppo": lambda: bench_ppo.bench(ppo_args),
    }
    selected = args.only.split(",") if args.only else list(comparisons)
    unknown = [name for name in selected if name not in comparisons]
    if unknown:
        raise SystemExit(f"--only: unknown comparison(s) {unknown}; choose from {list(comparisons)}")
    results = []
    for name in selected:
        print(f"== {name} ==", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            # The per-stage table goes to stderr so that stdout holds the one final table.
            with contextlib.redirect_stdout(sys.stderr):
                results.append(comparisons[name]())
        except (Exception, SystemExit) as error:  # one failed comparison must not lose the others
            traceback.print_exc(file=sys.stderr)
            results.append({"comparison": name, "error": f"{type(error).__name__}: {error}"})
        print(f"== {name}: {time.perf_counter() - start:.0f} s ==", file=sys.stderr, flush=True)

    table = bench_report.format_table(results)
    machine = bench_report.format_machine(bench_report.machine_info(), ppo_trl=bench_ppo.TRL_VERSION)
    command = "python scripts/bench/bench.py " + shlex.join(argv)
    if args.quick:
        print("QUICK SMOKE RUN (few steps, 1 repeat): not for quoting")
    print(table)
    print(f"\nMachine: {machine}\nCommand: {command}")
    failed = [r["comparison"] for r in results if "error" in r]
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(
                {"results": results, "machine": machine, "command": command, "quick": args.quick}, handle, indent=2
            )
    if failed:
        print(f"failed: {', '.join(failed)}" + ("; not writing " + args.write if args.write else ""), file=sys.stderr)
        return 1
    if args.write:
        with open(args.write, encoding="utf-8", newline="") as handle:
            text = handle.read()
        block = bench_report.render_block(table, machine, command, quick=args.quick)
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
    parser.add_argument("what", choices=["sft", "rm", "dpo", "import", "data", "all"])
    parser.add_argument("--records", type=int, default=1_000_000, help="data: records in the generated file")
    parser.add_argument("--model", default="builtin:tiny")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
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
        f"{QUICK['repeats']} repeat, {QUICK['examples']} examples)",
    )
    parser.add_argument(
        "--write", metavar="PATH", help="all: replace the bench:all block of PATH (docs/benchmarks.md) with the table"
    )
    parser.add_argument("--json", metavar="PATH", help="all: also write the results as JSON to PATH")
    parser.add_argument("--only", help="all: comma-separated subset of sft,rm,dpo-precompute,dpo-copy,ppo")
    parser.add_argument("--ppo-steps", type=int, help="all: PPO steps per run (default: bench_ppo.py's)")
    parser.add_argument("--ppo-batch", type=int, help="all: prompts per PPO rollout batch (default: bench_ppo.py's)")
    parser.add_argument("--response-length", type=int, help="all: PPO max new tokens (default: bench_ppo.py's)")
    parser.add_argument("--child", choices=["ours", "trl"], dest="framework")
    argv = sys.argv[1:]
    args = parser.parse_args(argv)
    if args.what != "dpo" and (args.gradient_checkpointing or args.reference != "precompute"):
        parser.error("--reference and --gradient-checkpointing apply to dpo only (all runs both references)")
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
        )
        if value
    ]
    if args.what != "all" and all_only:
        parser.error(f"{', '.join(all_only)}: only with all")
    if args.framework:
        _child(args)
    elif args.what in ("sft", "rm", "dpo"):
        bench_training(args)
    elif args.what == "all":
        sys.exit(bench_all(args, argv))
    elif args.what == "data":
        bench_data(args)
    else:
        bench_import(args)


if __name__ == "__main__":
    main()
