"""bench.py's data: the same records for both sides (hh-rlhf pairs, SFT examples, judged rankings)."""

from __future__ import annotations

from bench_common import RANKED_K, RANKED_NOISE, _hh_path


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
