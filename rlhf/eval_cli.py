"""`rlhf eval`: compare policies on held-out prompts by judge / reward model, win rate and KL.

    rlhf eval --policy sft=runs/sft-tiny --policy dpo=runs/dpo-tiny \\
        --judge preference_data.synthetic:judge --seeds 0 1 2 --out runs/eval-tiny

Writes `results.json`, `results.md` (a table) and `samples.jsonl` to --out. Exit 2 on bad
arguments.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

DEFAULT_PROMPTS = "builtin:judged-prompts?n=200&seed=4242"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlhf eval", description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", action="append", required=True, metavar="NAME=PATH",
                        help="a policy to evaluate (run folder or model folder); repeat for several")
    parser.add_argument("--baseline", help="policy the others are compared with (default: the first)")
    parser.add_argument("--reference", help="model KL is measured against (default: the baseline policy)")
    parser.add_argument("--prompts", default=DEFAULT_PROMPTS, help=f"prompt file (default {DEFAULT_PROMPTS})")
    parser.add_argument("--judge", metavar="MODULE:FUNCTION", help="reward function f(prompt, response) -> float")
    parser.add_argument("--reward-model", metavar="DIR", help="reward model folder from `rlhf rm`")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="sampling seeds (one full pass each)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--out", required=True, help="output folder")
    return parser


def _policies(items: list[str]) -> dict[str, str]:
    policies = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--policy {item!r} is not NAME=PATH")
        if name in policies:
            raise ValueError(f"--policy name {name!r} given twice")
        policies[name] = path
    return policies


def _load(path: str):
    from rlhf.evaluation import model_folder
    from rlhf.models import disable_dropout, load_causal_lm, load_tokenizer
    from rlhf.sections import ModelConfig

    folder = model_folder(path)
    if not Path(folder).is_dir() and not folder.startswith("builtin:"):
        raise ValueError(f"policy folder {path!r} does not exist")
    cfg = ModelConfig(name_or_path=folder)
    return disable_dropout(load_causal_lm(cfg).eval()), load_tokenizer(cfg)


def evaluate(args) -> dict:
    from preference_data.validate_preferences import load_kind
    from rlhf.evaluation import sample_with_kl, win_rate
    from rlhf.rewards import load_function
    from rlhf.rollout import SamplingConfig

    policies = _policies(args.policy)
    baseline = args.baseline or next(iter(policies))
    if baseline not in policies:
        raise ValueError(f"--baseline {baseline!r} is not one of the policies: {', '.join(policies)}")
    if not args.judge and not args.reward_model:
        raise ValueError("give --judge MODULE:FUNCTION and/or --reward-model DIR to score responses")
    judge = load_function(args.judge) if args.judge else None
    scorer = None
    if args.reward_model:
        from reward_models.scorer import RewardModel

        scorer = RewardModel.from_pretrained(args.reward_model, device="cpu")
    records, report = load_kind(args.prompts, "prompt", quarantine_path=None)
    prompts = [r.prompt for r in records]
    sampling = SamplingConfig(args.max_new_tokens, args.temperature, 0, args.top_p, args.temperature > 0)
    reference, _ = _load(args.reference or policies[baseline])

    per_policy: dict[str, dict] = {}
    samples = []
    for name, path in policies.items():
        model, tokenizer = _load(path)
        runs = []
        for seed in args.seeds:
            out = sample_with_kl(model, reference, tokenizer, prompts, sampling, seed=seed)
            if judge:
                out["judge"] = [float(judge(p, r)) for p, r in zip(prompts, out["texts"])]
            if scorer:
                out["reward"] = scorer.score(prompts, out["texts"])
            runs.append(out)
            samples += [{"policy": name, "seed": seed, "prompt": p, "response": r}
                        for p, r in zip(prompts, out["texts"])]
        per_policy[name] = {"path": path, "runs": runs}

    metric = "judge" if judge else "reward"
    results = {"prompts": args.prompts, "n_prompts": len(prompts), "seeds": args.seeds, "baseline": baseline,
               "reference": args.reference or policies[baseline], "win_metric": metric,
               "temperature": args.temperature, "max_new_tokens": args.max_new_tokens, "policies": {}}
    for name, entry in per_policy.items():
        runs = entry["runs"]
        row = {"path": entry["path"]}
        for key in ("judge", "reward", "kl", "length"):
            if key in runs[0]:
                values = [statistics.fmean(r[key]) for r in runs]
                row[key] = statistics.fmean(values)
                row[f"{key}_seed_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        row["eos_rate"] = statistics.fmean(statistics.fmean(map(float, r["ended"])) for r in runs)
        if name != baseline:
            rates = [win_rate(r[metric], b[metric]) for r, b in zip(runs, per_policy[baseline]["runs"])]
            row["win_rate_per_seed"] = [r["win_rate"] for r in rates]
            row["win_rate"] = statistics.fmean(row["win_rate_per_seed"])
            row["win_rate_seed_std"] = statistics.stdev(row["win_rate_per_seed"]) if len(rates) > 1 else 0.0
            row["win_rate_ci95"] = [statistics.fmean(r["ci95_low"] for r in rates),
                                    statistics.fmean(r["ci95_high"] for r in rates)]
            for part in ("wins", "ties", "losses"):
                row[part] = statistics.fmean(r[part] for r in rates)
        results["policies"][name] = row
    return results, samples


def markdown(results: dict) -> str:
    lines = [f"Prompts: {results['prompts']} ({results['n_prompts']}), seeds {results['seeds']}, "
             f"temperature {results['temperature']}; win rate vs `{results['baseline']}` by {results['win_metric']} "
             "(ties count half); KL to the reference on each policy's own samples (nats per response).", "",
             "| policy | judge | reward | win rate | 95% CI | wins / ties / losses | KL | length | EOS rate |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]

    def fmt(value, digits=3):
        return "-" if value is None else f"{value:.{digits}f}"

    for name, row in results["policies"].items():
        ci = row.get("win_rate_ci95")
        wtl = (f"{row['wins']:.2f} / {row['ties']:.2f} / {row['losses']:.2f}" if "wins" in row else "-")
        lines.append(
            f"| {name} | {fmt(row.get('judge'))} | {fmt(row.get('reward'))} | {fmt(row.get('win_rate'))} | "
            f"{'-' if ci is None else f'{ci[0]:.3f}-{ci[1]:.3f}'} | {wtl} | {fmt(row.get('kl'), 2)} | "
            f"{fmt(row.get('length'), 1)} | {fmt(row.get('eos_rate'), 2)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        results, samples = evaluate(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"rlhf eval: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (out / "results.md").write_text(table)
    with open(out / "samples.jsonl", "w") as handle:
        for row in samples:
            handle.write(json.dumps(row) + "\n")
    print(table)
    return 0
