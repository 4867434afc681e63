"""Evaluation runs: sample every policy on held-out prompts, score the samples with a judge and /
or a reward model, measure win rates against a baseline and KL to a reference, and write the
results (`results.json`, `results.md`, `samples.jsonl`) and their PNG plots.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

DEFAULT_PROMPTS = "builtin:judged-prompts?n=200&seed=4242"


def evaluate(
    policies: dict[str, str],
    *,
    judge: str | None = None,
    reward_model: str | None = None,
    baseline: str | None = None,
    reference: str | None = None,
    prompts: str = DEFAULT_PROMPTS,
    seeds=(0,),
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 48,
    batch_size: int = 50,
    device: str = "auto",
) -> tuple[dict, list[dict]]:
    """(results, samples): the numbers of `results.json` and the rows of `samples.jsonl`.
    Arguments as in :func:`run_eval`."""
    from preference_data.validate_preferences import load_kind
    from rlhf.eval.metrics import sample_with_kl, win_rate
    from rlhf.models.folders import load_policy, resolve_device
    from rlhf.rollout.rewards import load_function, takes_record
    from rlhf.rollout.sampling import SamplingConfig

    if not policies:
        raise ValueError("give at least one policy to evaluate")
    seeds = list(seeds)
    if not seeds:
        raise ValueError("give at least one sampling seed")
    baseline = baseline or next(iter(policies))
    if baseline not in policies:
        raise ValueError(f"--baseline {baseline!r} is not one of the policies: {', '.join(policies)}")
    if not judge and not reward_model:
        raise ValueError("give --judge MODULE:FUNCTION and/or --reward-model DIR to score responses")
    target = resolve_device(device)
    judge_fn = load_function(judge) if judge else None
    scorer = None
    if reward_model:
        from reward_models.scorer import RewardModel

        scorer = RewardModel.from_pretrained(reward_model, device=target)
    records, report = load_kind(prompts, "prompt", quarantine_path=None)
    texts = [r.prompt for r in records]
    sampling = SamplingConfig(max_new_tokens, temperature, 0, top_p, temperature > 0)
    reference = reference or policies[baseline]
    reference_model, _ = load_policy(reference, target)

    per_policy: dict[str, dict] = {}
    samples = []
    for name, path in policies.items():
        model, tokenizer = load_policy(path, target)
        runs = []
        for seed in seeds:
            out = sample_with_kl(model, reference_model, tokenizer, texts, sampling, batch_size=batch_size, seed=seed)
            if judge_fn:
                # A verifiable judge (f(prompt, response, record)) reads the record's metadata.
                extra = (lambda record: {"record": record}) if takes_record(judge_fn) else (lambda record: {})
                out["judge"] = [
                    float(judge_fn(p, r, **extra(record))) for p, r, record in zip(texts, out["texts"], records)
                ]
            if scorer:
                out["reward"] = scorer.score(texts, out["texts"])
            runs.append(out)
            samples += [{"policy": name, "seed": seed, "prompt": p, "response": r} for p, r in zip(texts, out["texts"])]
        per_policy[name] = {"path": path, "runs": runs}
        del model  # frees the device for the next policy before it loads

    metric = "judge" if judge_fn else "reward"
    results = {
        "prompts": prompts,
        "n_prompts": len(texts),
        "seeds": seeds,
        "baseline": baseline,
        "reference": reference,
        "win_metric": metric,
        "temperature": temperature,
        "max_new_tokens": max_new_tokens,
        "top_p": top_p,
        "batch_size": batch_size,
        "device": str(target),
        "policies": {},
    }
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
            row["win_rate_ci95"] = [
                statistics.fmean(r["ci95_low"] for r in rates),
                statistics.fmean(r["ci95_high"] for r in rates),
            ]
            for part in ("wins", "ties", "losses"):
                row[part] = statistics.fmean(r[part] for r in rates)
        results["policies"][name] = row
    return results, samples


def run_eval(
    policies: dict[str, str],
    *,
    out: str,
    judge: str | None = None,
    reward_model: str | None = None,
    baseline: str | None = None,
    reference: str | None = None,
    prompts: str = DEFAULT_PROMPTS,
    seeds=(0,),
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 48,
    batch_size: int = 50,
    device: str = "auto",
) -> dict:
    """Evaluate ``policies`` (name -> run or model folder) and write `results.json`, `results.md`,
    `samples.jsonl` and the PNG plots of :func:`rlhf.eval.plots.plot_results` to ``out``.

    Args:
        judge: reward function "module:function", f(prompt, response) -> float.
        reward_model: reward model folder from `rlhf rm`. At least one of judge / reward_model;
            win rates use the judge when both are given.
        baseline: the policy the others are compared with (default: the first).
        reference: model the KL is measured against (default: the baseline's folder).
        seeds: one full sampling pass over the prompts per seed.
        device: "auto" (CUDA when available), "cpu" or "cuda"; policies, reference and reward
            model all go there.
    Returns the results dict (as in `results.json`, plus "plots": the PNG paths).
    Raises ValueError / FileNotFoundError on bad arguments, before anything is written.
    """
    from rlhf.eval.plots import plot_results

    results, samples = evaluate(
        policies,
        judge=judge,
        reward_model=reward_model,
        baseline=baseline,
        reference=reference,
        prompts=prompts,
        seeds=seeds,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        device=device,
    )
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (folder / "results.md").write_text(markdown(results))
    with open(folder / "samples.jsonl", "w") as handle:
        for row in samples:
            handle.write(json.dumps(row) + "\n")
    return {**results, "plots": [str(p) for p in plot_results(results, folder)]}


def markdown(results: dict) -> str:
    lines = [
        f"Prompts: {results['prompts']} ({results['n_prompts']}), seeds {results['seeds']}, "
        f"temperature {results['temperature']}; win rate vs `{results['baseline']}` by {results['win_metric']} "
        "(ties count half); KL to the reference on each policy's own samples (nats per response).",
        "",
        "| policy | judge | reward | win rate | 95% CI | wins / ties / losses | KL | length | EOS rate |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def fmt(value, digits=3):
        return "-" if value is None else f"{value:.{digits}f}"

    for name, row in results["policies"].items():
        ci = row.get("win_rate_ci95")
        wtl = f"{row['wins']:.2f} / {row['ties']:.2f} / {row['losses']:.2f}" if "wins" in row else "-"
        lines.append(
            f"| {name} | {fmt(row.get('judge'))} | {fmt(row.get('reward'))} | {fmt(row.get('win_rate'))} | "
            f"{'-' if ci is None else f'{ci[0]:.3f}-{ci[1]:.3f}'} | {wtl} | {fmt(row.get('kl'), 2)} | "
            f"{fmt(row.get('length'), 1)} | {fmt(row.get('eos_rate'), 2)} |"
        )
    return "\n".join(lines) + "\n"
