"""`rlhf annotate generate|add-annotator|import|export|serve`: a preference annotation workbench.

    rlhf annotate generate --model runs/sft-tiny --prompts prompts.jsonl -k 4 --out tasks.jsonl
    rlhf annotate add-annotator alice --db ann.db          # prints the token on its last line
    rlhf annotate serve --tasks tasks.jsonl --db ann.db --port 8080
    rlhf annotate export --db ann.db --out ranked.jsonl --kind ranked

Exit 2 with one line on stderr for bad arguments or bad input (the line names file:line).
"""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlhf annotate", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    gen = sub.add_parser("generate", help="sample K responses per prompt into a tasks jsonl file")
    gen.add_argument("--model", required=True, help="policy: run folder, model folder or builtin: name")
    gen.add_argument("--prompts", required=True, help="prompt file (records of kind 'prompt')")
    gen.add_argument("-k", type=int, default=4, help="responses per prompt (>= 2, default 4)")
    gen.add_argument("--out", required=True, help="tasks jsonl to write")
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--top-p", type=float, default=1.0)
    gen.add_argument("--max-new-tokens", type=int, default=128)
    gen.add_argument("--batch-size", type=int, default=16, help="prompts sampled together")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    add = sub.add_parser("add-annotator", help="create an annotator; prints its token (shown once)")
    add.add_argument("name")
    add.add_argument("--db", required=True)
    imp = sub.add_parser("import", help="import a tasks jsonl file into the database")
    imp.add_argument("--tasks", required=True)
    imp.add_argument("--db", required=True)
    exp = sub.add_parser("export", help="write the judgements as ranked or pairwise records")
    exp.add_argument("--db", required=True)
    exp.add_argument("--out", required=True)
    exp.add_argument("--kind", required=True, choices=("ranked", "pairwise"))
    serve = sub.add_parser("serve", help="import tasks, then serve the annotation page")
    serve.add_argument("--tasks", required=True)
    serve.add_argument("--db", required=True)
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--request-timeout", type=float, default=10.0, help="seconds per read of a connection")
    serve.add_argument("--max-connections", type=int, default=64, help="connections served at once")
    serve.add_argument(
        "--annotators-per-task", type=int, default=1, dest="per_task", help="judgements wanted per task (default 1)"
    )
    return parser


def _task_problem(responses: list[str]) -> str | None:
    """Why these responses cannot make a task (load_kind would refuse them), or None."""
    first: dict[str, int] = {}
    for i, text in enumerate(responses):
        if not text.strip():
            return f"responses[{i}] is empty"
        j = first.setdefault(text.strip(), i)
        if j != i:
            return f"responses[{i}] duplicates responses[{j}]"
    return None


def generate(
    model: str,
    prompts: str,
    k: int,
    out: str,
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 128,
    batch_size: int = 16,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
) -> dict:
    """Sample `k` responses per prompt and write tasks {"id": "p<index>", "prompt", "responses"}.

    A prompt whose responses include an empty one or two equal ones cannot be ranked; it is left
    out and listed in the returned "left_out" (index, reason), never dropped silently.
    Returns {"prompts", "tasks", "left_out": [...], "out"}.
    """
    from preference_data.validate_preferences import load_kind
    from preference_data.writers import write_jsonl
    from rlhf.math.seeds import derive_seed
    from rlhf.models.folders import load_policy, resolve_device
    from rlhf.rollout.sampling import SamplingConfig, sample

    if k < 2:
        raise ValueError(f"-k must be >= 2 (a task ranks at least two responses), got {k}")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"need --temperature >= 0 and 0 < --top-p <= 1, got {temperature} and {top_p}")
    target = resolve_device(device)
    records, report = load_kind(prompts, "prompt", quarantine_path=None, strict=True)
    texts = [r.prompt for r in records]
    policy, tokenizer = load_policy(model, target)
    sampling = SamplingConfig(max_new_tokens, temperature, 0, top_p, temperature > 0)
    responses: list[list[str]] = [[] for _ in texts]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(texts) * k, desc="sampling", unit=" resp", file=sys.stderr)
    try:
        for start in range(0, len(texts), batch_size):
            batch = texts[start : start + batch_size]
            for j in range(k):
                out_batch = sample(policy, tokenizer, batch, sampling, generator_seed=derive_seed(seed, start, j))
                for i, text in enumerate(out_batch.texts):
                    responses[start + i].append(text)
                if bar is not None:
                    bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    tasks, left_out = [], []
    for index, (prompt, answers) in enumerate(zip(texts, responses)):
        problem = _task_problem(answers)
        if problem:
            left_out.append({"index": index, "id": f"p{index}", "reason": problem})
            continue
        tasks.append(
            {
                "id": f"p{index}",
                "prompt": prompt if isinstance(prompt, str) else [dict(m) for m in prompt],
                "responses": answers,
            }
        )
    write_jsonl(tasks, out)
    return {"prompts": len(texts), "tasks": len(tasks), "left_out": left_out, "out": out}


def _store(db: str):
    from preference_data.annotation.store import AnnotationStore

    return AnnotationStore(db)


def _run(args) -> int:
    if args.action == "generate":
        result = generate(
            args.model,
            args.prompts,
            args.k,
            args.out,
            temperature=args.temperature,
            top_p=args.top_p,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            seed=args.seed,
            device=args.device,
            progress=sys.stderr.isatty(),
        )
        for item in result["left_out"]:
            print(f"left out prompt {item['index']} ({item['id']}): {item['reason']}", file=sys.stderr)
        print(
            f"{result['tasks']} tasks from {result['prompts']} prompts written to {result['out']}"
            + (f"; {len(result['left_out'])} left out (listed above)" if result["left_out"] else "")
        )
        return 0
    if args.action == "add-annotator":
        with _store(args.db) as store:
            token = store.add_annotator(args.name)
        print(f"annotator {args.name!r} added to {args.db}; token (shown once, keep it secret):")
        print(token)
        return 0
    if args.action == "import":
        with _store(args.db) as store:
            added = store.import_tasks(args.tasks)
            total = store.progress("", 1)["tasks"]
        print(f"{added} new tasks imported from {args.tasks} ({total} in {args.db})")
        return 0
    if args.action == "export":
        with _store(args.db) as store:
            counts = store.export(args.out, args.kind)
        ties = f", {counts['ties_skipped']} tied pairs skipped" if args.kind == "pairwise" else ""
        print(
            f"{counts['written']} {args.kind} records from {counts['judgements']} judgements "
            f"written to {args.out}{ties}"
        )
        return 0
    if args.action == "serve":
        if args.per_task < 1:
            raise ValueError(f"--annotators-per-task must be >= 1, got {args.per_task}")
        store = _store(args.db)
        added = store.import_tasks(args.tasks)
        print(f"{added} new tasks imported from {args.tasks}", file=sys.stderr)
        try:
            from preference_data.annotation.server import serve
        except ModuleNotFoundError as err:
            store.close()
            raise ValueError(f"the annotation server is not available ({err})") from None
        try:
            serve(
                store,
                host=args.host,
                port=args.port,
                per_task=args.per_task,
                request_timeout=args.request_timeout,
                max_connections=args.max_connections,
            )
        finally:
            store.close()
        return 0
    raise AssertionError(args.action)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from preference_data.validate import DataError

    try:
        return _run(args)
    except (ValueError, FileNotFoundError, DataError, OSError) as err:
        # AnnotationError, ModelFolderError and DataError are ValueErrors naming file:line / key.
        line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"rlhf annotate {args.action}: {line}", file=sys.stderr)
        return 2
