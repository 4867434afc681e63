"""Side-by-side PPO benchmark: our PPO stage (rlhf/stages/ppo.py) against TRL 1.12.0's PPOTrainer.

    python scripts/bench/bench_ppo.py [--model builtin:tiny] [--steps 12] [--batch 16] [--response-length 24]
                                [--epochs 4] [--mini-batches 1] [--repeats 3] [--lora] [--json PATH]

TRL 1.12.0 is the last TRL with PPO (``trl.experimental.ppo``); it is not the TRL installed in the
environment, so it is installed beside it on first use with
``pip install --no-deps --target .cache/trl-1.12.0 trl==1.12.0`` and the TRL side runs in a child
process with that folder first on PYTHONPATH.

What is compared, per PPO step (one rollout batch of ``--batch`` prompts + ``--epochs`` PPO epochs
of ``--mini-batches`` optimizer steps each): seconds per step (mean over the steps after
2 warm-up steps), its split into rollout (generation, reward model, reference log-probs, values;
for TRL also its reward shaping, GAE and advantage whitening) and update (the PPO epochs; for us
also reward shaping, GAE and whitening, for TRL also its metric gathering), and the peak RSS of the
child process. Each measurement runs in a fresh subprocess, the two frameworks alternate, and the
medians over ``--repeats`` are reported with their ratio.

Both sides get the same policy, prompts (``prompt_records(steps x batch, seed=0)``, deduplicated,
rendered with the chat template), rollout batch, response length, temperature 1.0 (no top-k/top-p),
PPO epochs and mini-batches, fp32, AdamW (torch, fused) at a constant LR with no weight decay and
no gradient clipping (TRL's PPO loop never clips), KL coefficient 0.05 (k1 in the reward), clip
ranges 0.2, vf_coef 0.1, gamma 1, lambda 0.95, whitened advantages and unwhitened rewards, a critic
started from the policy's weights with a new scalar head, a frozen copy of the policy as reference,
and the same transformer reward model (the policy's weights with a new scalar head, saved once to a
temporary folder; unnormalised). No missing-EOS penalty, no evaluation, sample logging or saving.

--lora (e.g. with --model builtin:smollm2-135m-instruct): the policy trains LoRA adapters (r 16,
alpha 32, dropout 0, all linear layers but the head) on both sides: ours model.adapt.strategy=lora
with reference=lora_disabled, TRL PPOTrainer(peft_config=LoraConfig(...)), whose reference is
then the policy with its adapters disabled too. The critic is fully trained on both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_common import LORA, lora_overrides, peak_gpu, peak_rss, peft_lora

REPO = Path(__file__).resolve().parents[2]
TRL_VERSION = "1.12.0"
TRL_DIR = REPO / ".cache" / f"trl-{TRL_VERSION}"
WARMUP_STEPS = 2
LR = 1e-5
KL_COEF = 0.05


def _ensure_trl() -> None:
    if (TRL_DIR / "trl" / "experimental" / "ppo" / "ppo_trainer.py").is_file():
        return
    print(f"installing trl=={TRL_VERSION} into {TRL_DIR} ...", file=sys.stderr)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(TRL_DIR),
            f"trl=={TRL_VERSION}",
        ],
        check=True,
    )


# ---------------------------------------------------------------------------------------------
# children


def _prepare(args, work: Path) -> dict:
    """The shared inputs: the prompt file and the reward model folder (policy + new scalar head)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from preference_data.synthetic import prompt_records
    from rlhf.models.loading import resolve_model_path

    # Our loader rejects duplicate prompts, so both sides get the deduplicated list.
    prompts = list(dict.fromkeys(r["prompt"] for r in prompt_records(args.steps * args.batch, seed=0)))
    if len(prompts) < args.batch:
        raise ValueError(f"only {len(prompts)} distinct prompts for a rollout batch of {args.batch}")
    with open(work / "prompts.jsonl", "w", encoding="utf-8") as handle:
        for prompt in prompts:
            handle.write(json.dumps({"prompt": prompt}) + "\n")
    path = resolve_model_path(args.model)
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    reward = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, dtype=torch.float32, trust_remote_code=False
    )
    if tokenizer.pad_token_id is not None:
        reward.config.pad_token_id = tokenizer.pad_token_id
    reward.save_pretrained(work / "reward")
    tokenizer.save_pretrained(work / "reward")
    return {"prompts": len(prompts), "policy_path": path}


def _step_stats(ends: list[float], rollout: list[float], update: list[float], lengths: list[float]) -> dict:
    """Means over the steps after the warm-up; a step's time runs from the previous step's end."""
    timed = range(WARMUP_STEPS, len(ends))
    if not timed:
        raise ValueError(f"need more than {WARMUP_STEPS} steps (the first {WARMUP_STEPS} are warm-up)")
    return {
        "step_time_s": statistics.mean(ends[i] - ends[i - 1] for i in timed),
        "rollout_s": statistics.mean(rollout[i] for i in timed),
        "update_s": statistics.mean(update[i] for i in timed),
        "response_tokens": statistics.mean(lengths[i] for i in timed),
        "steps_timed": len(timed),
    }


def _ours(args, work: Path) -> dict:
    from rlhf.config.loader import load_config
    from rlhf.models.loading import resolve_model_path
    from rlhf.stages import common, ppo

    # Step boundaries: the tracker's advance() closes every step (after metrics and checkpoint checks).
    ends: list[float] = []
    make_tracker = common.tracker

    def timed_tracker(*a, **k):
        tracker = make_tracker(*a, **k)
        advance = tracker.advance

        def timed_advance(steps: int = 1) -> None:
            ends.append(time.perf_counter())
            advance(steps)

        tracker.advance = timed_advance
        return tracker

    common.tracker = timed_tracker
    # A fresh folder per run: the repeats share ``work``, and a folder holding a finished run is refused.
    out = Path(tempfile.mkdtemp(prefix="ours-", dir=work)) / "out"
    micro = args.batch // args.mini_batches
    cfg = load_config(
        ppo.PPOConfig,
        None,
        extra={
            "output_dir": str(out),
            "seed": 0,
            "max_steps": args.steps,
            "model": {
                "name_or_path": args.model,
                "dtype": "float32",
                "gradient_checkpointing": False,
                **({"adapt": lora_overrides()} if args.lora else {}),
            },
            "data": {"prompts": [str(work / "prompts.jsonl")], "chat_template": True},
            "rollout": {
                "batch_size": args.batch,
                "max_new_tokens": args.response_length,
                "temperature": 1.0,
                "top_k": 0,
                "top_p": 1.0,
                "generation_batch_size": args.batch,
                "missing_eos_score": None,
                "log_samples_every": 0,
            },
            "reward": {"model": str(work / "reward"), "normalize": False, "functions": [], "whiten": False},
            "kl": {"coef": KL_COEF, "controller": "fixed", "estimator": "k1", "in_loss": False},
            "critic": {"init_from": resolve_model_path(args.model), "lr": None},
            "ppo": {
                "epochs": args.epochs,
                "clip_eps": 0.2,
                "value_clip_eps": 0.2,
                "vf_coef": 0.1,
                "entropy_coef": 0.0,
                "gamma": 1.0,
                "lam": 0.95,
                "whiten_advantages": True,
                "target_kl": None,
            },
            # LoRA: the reference is the policy with its adapters off, as TRL does with a peft_config.
            "reference": "lora_disabled" if args.lora else "copy",
            "optim": {"lr": LR, "schedule": "constant", "warmup_steps": 0, "weight_decay": 0.0, "max_grad_norm": 0.0},
            "batch": {"micro_batch_size": micro, "grad_accum": 1},
            "precision": {"mixed_precision": "no"},
            "checkpoint": {"save_steps": 0},
            "tracking": {"mode": "disabled", "progress": False},
        },
    )
    ppo.run(cfg)
    rows = [json.loads(line) for line in open(out / "metrics.jsonl", encoding="utf-8")]
    rows = [r for r in rows if "rollout_s" in r]
    if len(rows) != len(ends):
        raise RuntimeError(f"{len(rows)} metric rows for {len(ends)} steps")
    return _step_stats(
        ends, [r["rollout_s"] for r in rows], [r["update_s"] for r in rows], [r["response_length"] for r in rows]
    )


def _trl(args, work: Path) -> dict:
    import torch
    import trl

    if trl.__version__ != TRL_VERSION or not Path(trl.__file__).resolve().is_relative_to(TRL_DIR.resolve()):
        raise RuntimeError(f"expected trl {TRL_VERSION} from {TRL_DIR}, got {trl.__version__} from {trl.__file__}")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, TrainerCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    from trl.experimental.ppo import ppo_trainer as ppo_module

    from rlhf.config.sections import ModelConfig
    from rlhf.models.loading import load_tokenizer, resolve_model_path
    from rlhf.rollout.sampling import render_prompt

    path = resolve_model_path(args.model)
    # Our tokenizer set-up (pad distinct from EOS: TRL masks by `token != pad`), left-padded queries.
    tokenizer = load_tokenizer(ModelConfig(name_or_path=args.model), padding_side="left")
    prompts = [json.loads(line)["prompt"] for line in open(work / "prompts.jsonl", encoding="utf-8")]
    dataset = Dataset.from_dict(
        {
            "input_ids": [
                tokenizer(render_prompt(tokenizer, p, True), add_special_tokens=False)["input_ids"] for p in prompts
            ]
        }
    )
    policy = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, trust_remote_code=False)
    policy.generation_config.pad_token_id = tokenizer.pad_token_id  # finished rows are padded, not EOS-filled
    value_model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, dtype=torch.float32, trust_remote_code=False
    )
    reward_model = AutoModelForSequenceClassification.from_pretrained(
        work / "reward", num_labels=1, dtype=torch.float32, trust_remote_code=False
    )

    # Timing hooks. TRL's train loop calls no on_step_begin, only on_step_end (once per PPO step);
    # the rollout starts where it unwraps the policy for generation and ends with the advantage
    # whitening (the only masked_whiten call when whiten_rewards is off).
    starts: list[float] = []
    whitened: list[float] = []
    ends: list[float] = []
    lengths: dict[int, list[float]] = {}

    class StepEnd(TrainerCallback):
        def on_step_end(self, *_, **__):
            ends.append(time.perf_counter())

    unwrap = ppo_module.unwrap_model_for_generation

    def timed_unwrap(*a, **k):
        starts.append(time.perf_counter())
        return unwrap(*a, **k)

    whiten = ppo_module.masked_whiten

    def timed_whiten(*a, **k):
        result = whiten(*a, **k)
        whitened.append(time.perf_counter())
        return result

    truncate = ppo_module.truncate_response

    def measured_truncate(stop_token_id, pad_token_id, responses):
        result = truncate(stop_token_id, pad_token_id, responses)
        # Tokens up to and including EOS, as TRL's sequence_lengths + 1 (and our response_length).
        n = ppo_module.first_true_indices(result == pad_token_id).float()
        lengths.setdefault(len(ends), []).extend(n.tolist())
        return result

    ppo_module.unwrap_model_for_generation = timed_unwrap
    ppo_module.masked_whiten = timed_whiten
    ppo_module.truncate_response = measured_truncate

    config = PPOConfig(
        output_dir=str(work / "trl-out"),
        seed=0,
        total_episodes=args.steps * args.batch,
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1,
        num_mini_batches=args.mini_batches,
        num_ppo_epochs=args.epochs,
        local_rollout_forward_batch_size=args.batch,
        response_length=args.response_length,
        temperature=1.0,
        stop_token="eos",
        missing_eos_penalty=None,
        kl_coef=KL_COEF,
        kl_estimator="k1",
        cliprange=0.2,
        cliprange_value=0.2,
        vf_coef=0.1,
        gamma=1.0,
        lam=0.95,
        whiten_rewards=False,
        learning_rate=LR,
        lr_scheduler_type="constant",
        optim="adamw_torch_fused",
        weight_decay=0.0,
        num_sample_generations=0,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        logging_steps=10**6,
        disable_tqdm=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
    )
    trainer = PPOTrainer(
        args=config,
        processing_class=tokenizer,
        model=policy,
        ref_model=None,
        reward_model=reward_model,
        train_dataset=dataset,
        value_model=value_model,
        callbacks=[StepEnd()],
        # With a peft_config TRL wraps the policy in LoRA and uses it with adapters off as reference.
        peft_config=peft_lora("CAUSAL_LM") if args.lora else None,
    )
    if args.lora and not trainer.is_peft_model:
        raise RuntimeError("TRL did not wrap the policy in LoRA")
    trainer.train()
    if not (len(starts) == len(whitened) == len(ends) == args.steps):
        raise RuntimeError(
            f"timing hooks saw {len(starts)} rollouts, {len(whitened)} whitenings, "
            f"{len(ends)} step ends for {args.steps} steps"
        )
    return _step_stats(
        ends,
        [w - s for s, w in zip(starts, whitened)],
        [e - w for w, e in zip(whitened, ends)],
        [statistics.mean(lengths[i]) for i in range(len(ends))],
    )


def _child(args) -> None:
    os.environ.setdefault("WANDB_MODE", "disabled")
    work = Path(args.workdir)
    result = {"prepare": _prepare, "ours": _ours, "trl": _trl}[args.framework](args, work)
    result["peak_rss_bytes"] = peak_rss()
    result["peak_gpu_bytes"] = peak_gpu()
    print("RESULT " + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------
# parent


def _spawn(args, framework: str, work: Path) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        framework,
        "--workdir",
        str(work),
        "--model",
        args.model,
        "--steps",
        str(args.steps),
        "--batch",
        str(args.batch),
        "--response-length",
        str(args.response_length),
        "--epochs",
        str(args.epochs),
        "--mini-batches",
        str(args.mini_batches),
    ] + (["--lora"] if args.lora else [])
    env = dict(os.environ, TRL_EXPERIMENTAL_SILENCE="1")
    env.setdefault("WANDB_MODE", "disabled")
    if framework == "trl":
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(TRL_DIR), os.environ.get("PYTHONPATH")) if p)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{framework} run failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def bench(args) -> dict:
    """Runs the comparison, prints its table and returns it (the format of scripts/bench/bench_report.py)."""
    import bench_report

    if args.batch % args.mini_batches:
        raise SystemExit(f"--batch {args.batch} must be a multiple of --mini-batches {args.mini_batches}")
    if args.steps <= WARMUP_STEPS:
        raise SystemExit(f"--steps must be more than the {WARMUP_STEPS} warm-up steps")
    _ensure_trl()
    work = Path(tempfile.mkdtemp(prefix="bench-ppo-"))
    try:
        prepared = _spawn(args, "prepare", work)
        runs: dict[str, list[dict]] = {"ours": [], "trl": []}
        for repeat in range(args.repeats):
            for framework in ("ours", "trl") if repeat % 2 == 0 else ("trl", "ours"):
                runs[framework].append(_spawn(args, framework, work))
                print(f"  repeat {repeat + 1}/{args.repeats} {framework}: {runs[framework][-1]}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    table = {}
    for framework, results in runs.items():

        def med(key: str, results=results) -> float:
            return statistics.median(r[key] for r in results)

        gpu = [r["peak_gpu_bytes"] for r in results if r.get("peak_gpu_bytes") is not None]
        table[framework] = {
            "steps_per_s": 1.0 / med("step_time_s"),
            "step_s": med("step_time_s"),
            "rollout_s": med("rollout_s"),
            "update_s": med("update_s"),
            "response_tokens": med("response_tokens"),
            # generated tokens per second: the sides sample different lengths
            "tokens_per_s": med("response_tokens") * args.batch / med("step_time_s"),
            "peak_rss_mib": med("peak_rss_bytes") / 2**20,
            "peak_gpu_mib": statistics.median(gpu) / 2**20 if gpu else None,
        }
    mini = args.batch // args.mini_batches
    print(
        f"PPO {args.model}: {args.batch} prompts per step ({prepared['prompts']} distinct, chat template), "
        f"responses <= {args.response_length} tokens at temperature 1.0, {args.epochs} PPO epochs x "
        f"{args.mini_batches} mini-batch(es) of {mini} = {args.epochs * args.mini_batches} optimizer steps per PPO "
        f"step; fp32, AdamW lr {LR:g} constant, no grad clipping, kl_coef {KL_COEF} (k1), vf_coef 0.1, "
        f"critic + reward model = policy weights + new scalar head, "
        + (
            f"LoRA policy (r{LORA['r']}, alpha {LORA['alpha']:g}, {LORA['target_modules']}; critic fully trained), "
            "reference = adapters off"
            if args.lora
            else "frozen reference copy"
        )
    )
    print(
        f"{args.steps} PPO steps ({WARMUP_STEPS} warm-up not timed), median of {args.repeats} run(s) each; "
        f"trl {TRL_VERSION} (trl.experimental.ppo.PPOTrainer)"
    )
    gpu = all(row["peak_gpu_mib"] is not None for row in table.values())
    print(
        f"{'':8}{'updates/s':>10}{'step s':>9}{'rollout s':>11}{'update s':>10}{'resp tok':>10}{'peak RSS MiB':>14}"
        + (f"{'peak GPU MiB':>14}" if gpu else "")
    )
    for framework, row in table.items():
        print(
            f"{framework:8}{row['steps_per_s']:>10.3f}{row['step_s']:>9.2f}{row['rollout_s']:>11.2f}"
            f"{row['update_s']:>10.2f}{row['response_tokens']:>10.1f}{row['peak_rss_mib']:>14.0f}"
            + (f"{row['peak_gpu_mib']:>14.0f}" if gpu else "")
        )
    print(
        "(step s = wall time between step ends, everything included; rollout s: ours = generation + reward + "
        "log-probs/values/reference, TRL adds reward shaping + GAE + whitening; update s: ours = shaping + GAE + "
        "PPO epochs, TRL = PPO epochs + metric gathering; resp tok = mean response length incl. EOS)"
    )
    ours, trl = table["ours"], table["trl"]
    memory, memory_kind = bench_report.memory_ratio(ours, trl)
    result = {
        "comparison": "ppo-lora" if args.lora else "ppo",
        "baseline": f"TRL {TRL_VERSION}",
        "unit": "updates/s",
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
            "response_length": args.response_length,
            "epochs": args.epochs,
            "mini_batches": args.mini_batches,
            "steps": args.steps,
            "warmup_steps": WARMUP_STEPS,
            "repeats": args.repeats,
            **({"lora": f"r{LORA['r']} policy, reference adapters off"} if args.lora else {}),
        },
    }
    print(
        f"ratio ours/trl: updates/s x{result['ratio']['steps_per_s']:.2f}, "
        f"generated tokens/s x{result['ratio']['tokens_per_s']:.2f}, peak memory ({memory_kind}) x{memory:.2f}"
    )
    return result


def build_parser() -> argparse.ArgumentParser:
    """The command line; scripts/bench/bench.py all reads its defaults from here."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="builtin:tiny")
    parser.add_argument("--steps", type=int, default=12, help="PPO steps per run (the first 2 are warm-up)")
    parser.add_argument("--batch", type=int, default=16, help="prompts per rollout batch")
    parser.add_argument("--response-length", type=int, default=24, help="max new tokens per response")
    parser.add_argument("--epochs", type=int, default=4, help="PPO epochs per rollout batch")
    parser.add_argument("--mini-batches", type=int, default=1, help="mini-batches (optimizer steps) per epoch")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--lora",
        action="store_true",
        help="LoRA policy on both sides (r 16, alpha 32, all-linear; reference = adapters off; critic fully trained)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the result (medians and ratios) as JSON to PATH")
    parser.add_argument("--child", choices=["prepare", "ours", "trl"], dest="framework", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    return parser


def main() -> None:
    args = build_parser().parse_args()
    if args.framework:
        _child(args)
        return
    result = bench(args)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
