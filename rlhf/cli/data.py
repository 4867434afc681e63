"""`rlhf data validate|convert|stats|split|merge-annotators`: the data layer from the shell.

Exit status: 0 = every record accepted, 1 = some record rejected (or none valid), 2 = usage
error (bad arguments, missing file, unknown kind or adapter).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter

from preference_data.adapters import ADAPTERS
from preference_data.validate import DEFAULT_MAX_RECORD_BYTES, DataError
from preference_data.validate_preferences import KINDS, load_kind
from preference_data.writers import write_jsonl

KIND_CHOICES = ["auto", *KINDS]


def _field_map(items: list[str]) -> dict[str, str] | None:
    mapping = {}
    for item in items or []:
        field, sep, column = item.partition("=")
        if not sep or not field or not column:
            raise ValueError(f"--map {item!r} is not field=column")
        mapping[field] = column
    return mapping or None


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kind", default="auto", choices=KIND_CHOICES, help="record kind (default: detect)")
    parser.add_argument("--from", dest="adapter", choices=sorted(ADAPTERS), help="source format adapter")
    parser.add_argument("--map", action="append", metavar="field=column", help="read a field from another column")
    parser.add_argument("--quarantine", metavar="OUT", help="write rejected records here (jsonl)")
    parser.add_argument(
        "--max-record-bytes",
        type=_record_limit,
        default=DEFAULT_MAX_RECORD_BYTES,
        metavar="N",
        help=f"reject records larger than N bytes as 'record too large' (default {DEFAULT_MAX_RECORD_BYTES}; 0 = no limit)",
    )


def _record_limit(text: str) -> int | None:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expects a whole number of bytes >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expects a whole number of bytes >= 0, got {value}")
    return value or None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlhf data", description="Validate, convert and inspect preference data.")
    sub = parser.add_subparsers(dest="action", required=True)
    validate = sub.add_parser("validate", help="check every record; report counts per reason")
    validate.add_argument("paths", nargs="+")
    _common(validate)
    validate.add_argument("--report", metavar="OUT.json", help="write the report as JSON")
    validate.add_argument("--strict", action="store_true", help="stop at the first rejected record")
    validate.add_argument("--no-dedup", action="store_true", help="accept exact duplicates")
    convert = sub.add_parser("convert", help="convert between record kinds / from public formats")
    convert.add_argument("input")
    convert.add_argument("output")
    convert.add_argument("--to", required=True, choices=["pairwise", "ranked", "rated", "sft", "prompt"])
    convert.add_argument("--threshold", type=float, default=0.0, help="rated -> pairwise: minimum score gap")
    _common(convert)
    stats = sub.add_parser("stats", help="counts, K distribution, lengths, duplicates, PII")
    stats.add_argument("paths", nargs="+")
    _common(stats)
    split = sub.add_parser("split", help="train / eval split by prompt")
    split.add_argument("input")
    split.add_argument("--eval-fraction", type=float, required=True)
    split.add_argument("--out-dir", required=True)
    split.add_argument("--seed", type=int, default=0)
    _common(split)
    merge = sub.add_parser("merge-annotators", help="majority label per item, agreement, raw votes kept")
    merge.add_argument("paths", nargs="+")
    merge.add_argument("--out", required=True)
    merge.add_argument("--votes", help="raw votes per item (jsonl); default: OUT with .votes.jsonl")
    _common(merge)
    return parser


def _load(args, paths, **kwargs):
    return load_kind(
        paths,
        args.kind,
        field_map=_field_map(args.map),
        quarantine_path=args.quarantine,
        adapter=args.adapter,
        max_record_bytes=args.max_record_bytes,
        **kwargs,
    )


def _write_report(path: str, report, error: Exception | None) -> None:
    content = report.to_dict() if report is not None else {"read": 0, "accepted": 0, "rejected": 0, "reasons": {}}
    if error is not None:
        content["error"] = str(error)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(content, handle, indent=2)


def _validate(args) -> int:
    # The report is written whatever happens, so a script reading it always finds one.
    try:
        _, report = _load(
            args, args.paths, strict=args.strict, dedup=not args.no_dedup, keep=False, progress=sys.stderr.isatty()
        )
    except (FileNotFoundError, ValueError) as err:
        if args.report:
            _write_report(args.report, getattr(err, "report", None), err)
        raise
    print(report.summary())
    if args.report:
        _write_report(args.report, report, None)
    return 0 if report.rejected == 0 else 1


def _convert(args) -> int:
    from preference_data import transforms

    records, report = _load(args, [args.input])
    kind = type(records[0]).__name__.replace("Record", "").lower()
    conversions = {
        ("ranked", "pairwise"): transforms.ranked_to_pairwise,
        ("rated", "pairwise"): lambda r: transforms.rated_to_pairwise(r, threshold=args.threshold),
        ("rated", "ranked"): transforms.rated_to_ranked,
        ("pairwise", "ranked"): transforms.pairwise_to_ranked,
    }
    if kind == args.to:
        out, note = records, None
    elif (kind, args.to) in conversions:
        out, note = conversions[(kind, args.to)](records)
    else:
        raise ValueError(
            f"cannot convert {kind} records to {args.to}; possible: " + ", ".join(f"{a} -> {b}" for a, b in conversions)
        )
    written = write_jsonl(out, args.output)
    # With the records on stdout (`-`), what is said about them goes to stderr.
    say = sys.stderr if args.output == "-" else sys.stdout
    print(report.summary(), file=say)
    print(f"wrote {written} {args.to} records to {'stdout' if args.output == '-' else args.output}", file=say)
    if note is not None:
        print("conversion: " + json.dumps({k: v for k, v in note.to_dict().items() if v}, default=str)[:2000], file=say)
    return 0 if report.rejected == 0 else 1


def _percentiles(values: list[int]) -> dict:
    if not values:
        return {}
    values = sorted(values)
    pick = lambda q: values[min(len(values) - 1, int(q * len(values)))]  # noqa: E731
    return {"p50": pick(0.5), "p90": pick(0.9), "p99": pick(0.99), "max": values[-1]}


def _stats(args) -> int:
    from preference_data.pii import scrub_record
    from preference_data.records import prompt_key
    from preference_data.splits import dedup

    records, report = _load(args, args.paths, dedup=False)
    words = lambda text: len(text.split())  # noqa: E731
    responses = []
    for r in records:
        responses += [getattr(r, n) for n in ("chosen", "rejected", "completion") if hasattr(r, n)]
        responses += list(getattr(r, "responses", ()))
    pii: Counter = Counter()
    for r in records:
        pii.update(scrub_record(r)[1])
    _, dups = dedup(records)
    _, near = dedup(records, normalise=True)
    stats = {
        "records": len(records),
        "kinds": dict(Counter(type(r).__name__ for r in records)),
        "K": dict(sorted(Counter(len(r.responses) for r in records if hasattr(r, "responses")).items())),
        "prompts": len({prompt_key(r.prompt) for r in records if hasattr(r, "prompt")}),
        "prompt_words": _percentiles([words(prompt_key(r.prompt)) for r in records if hasattr(r, "prompt")]),
        "response_words": _percentiles([words(t) for t in responses]),
        "duplicates": {"exact": dups.duplicates, "normalised": near.duplicates},
        "annotators": dict(Counter(getattr(r, "annotator", None) or "<none>" for r in records)),
        "pii": dict(pii),
        "rejected": report.rejected,
    }
    print(json.dumps(stats, indent=2))
    return 0


def _split(args) -> int:
    from preference_data.splits import split_by_prompt

    records, report = _load(args, [args.input])
    train, evaluation = split_by_prompt(records, args.eval_fraction, args.seed)
    write_jsonl(train, os.path.join(args.out_dir, "train.jsonl"))
    write_jsonl(evaluation, os.path.join(args.out_dir, "eval.jsonl"))
    print(f"{len(train)} train / {len(evaluation)} eval records (no prompt in both) in {args.out_dir}")
    return 0 if report.rejected == 0 else 1


def _merge(args) -> int:
    from preference_data.annotation.agreement import agreement, merge_annotators, per_annotator_counts

    records, _ = _load(args, args.paths, dedup=False)
    merged, report = merge_annotators(records)
    write_jsonl(merged, args.out)
    votes_path = args.votes or os.path.splitext(args.out)[0] + ".votes.jsonl"
    write_jsonl(report.votes, votes_path)
    summary = {
        "items": len(report.votes),
        "merged": len(merged),
        "ties": len(report.ties),
        "per_annotator": per_annotator_counts(records),
        "agreement": agreement(records),
    }
    print(json.dumps(summary, indent=2, default=str))
    return 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    actions = {"validate": _validate, "convert": _convert, "stats": _stats, "split": _split, "merge-annotators": _merge}
    try:
        return actions[args.action](args)
    except (FileNotFoundError, ValueError) as err:
        if isinstance(err, DataError):
            print(err, file=sys.stderr)
            return 1
        print(f"rlhf data {args.action}: {err}", file=sys.stderr)
        return 2
