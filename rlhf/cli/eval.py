"""`rlhf eval`: compare policies on held-out prompts by judge / reward model, win rate and KL.

    rlhf eval --policy sft=runs/sft-tiny --policy dpo=runs/dpo-tiny \\
        --judge preference_data.synthetic:judge --seeds 0 1 2 --out runs/eval-tiny

Writes `results.json`, `results.md` (a table), `samples.jsonl` and PNG plots (`scores.png`,
`win_rates.png`, `kl_length.png`) to --out. Exit 2 on bad arguments. From Python:
`rlhf.eval.run.run_eval`.
"""

from __future__ import annotations

import argparse
import sys

from rlhf.eval.run import DEFAULT_PROMPTS, markdown, run_eval


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlhf eval", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--policy",
        action="append",
        required=True,
        metavar="NAME=PATH",
        help="a policy to evaluate (run folder or model folder); repeat for several",
    )
    parser.add_argument("--baseline", help="policy the others are compared with (default: the first)")
    parser.add_argument("--reference", help="model KL is measured against (default: the baseline policy)")
    parser.add_argument("--prompts", default=DEFAULT_PROMPTS, help=f"prompt file (default {DEFAULT_PROMPTS})")
    parser.add_argument("--judge", metavar="MODULE:FUNCTION", help="reward function f(prompt, response) -> float")
    parser.add_argument("--reward-model", metavar="DIR", help="reward model folder from `rlhf rm`")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="sampling seeds (one full pass each)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=50, help="prompts sampled together")
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where the models run (default auto: CUDA when available)",
    )
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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        results = run_eval(
            _policies(args.policy),
            out=args.out,
            judge=args.judge,
            reward_model=args.reward_model,
            baseline=args.baseline,
            reference=args.reference,
            prompts=args.prompts,
            seeds=args.seeds,
            temperature=args.temperature,
            top_p=args.top_p,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            device=args.device,
        )
    except (ValueError, FileNotFoundError) as err:
        print(f"rlhf eval: {err}", file=sys.stderr)
        return 2
    print(markdown(results))
    print("Plots: " + (", ".join(results["plots"]) or "none"))
    return 0
