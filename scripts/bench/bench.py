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
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from bench_all import QUICK, SMOLLM2_QUICK, SMOLLM2_SETTINGS, bench_all
from bench_common import HH_FILE, WARMUP_STEPS
from bench_training import _child, bench_training


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
