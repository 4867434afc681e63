"""`rlhf chat`: talk to a model folder in the terminal, one line per user turn.

    rlhf chat runs/sft-tiny [--system "Be brief."] [--max-new-tokens 128] [--temperature 0.7]
                            [--trust-remote-code]

The model path is resolved as for ``rlhf export`` (:mod:`rlhf.models.folders`): run folder, model
folder, merged folder or adapter. User turns are read from stdin, a terminal or a pipe; the
conversation is rendered with the tokenizer's chat template and each reply printed on stdout as
``assistant> ...``. ``/reset`` starts a new conversation (the system message stays); ``/exit``,
end of input or Ctrl-C ends. Generation goes through :func:`rlhf.rollout.sampling.sample`, on CUDA when
available. A model or tokenizer with custom code (``auto_map`` in its config) is loaded only with
``--trust-remote-code``; without it that is an error, and transformers is never left to ask on stdin.
Exit 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import re
import sys

import torch

from rlhf.models.folders import ModelFolderError, custom_code, find_model, first_line, load_model, stored_dtype
from rlhf.rollout.sampling import SamplingConfig, render_prompt, sample

PROMPT, REPLY = "you> ", "assistant> "
_COMMAND = re.compile(r"/\w+")  # a line that is one /word; "/usr/bin is ..." is a message


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlhf chat", description="Talk to a model folder in the terminal.")
    parser.add_argument("model", help="run folder, model folder, merged/ folder or adapter folder")
    parser.add_argument("--system", help="system message at the start of every conversation")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="reply length limit (default 128)")
    parser.add_argument("--temperature", type=float, default=0.7, help="sampling temperature; 0 = greedy")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1: off)")
    parser.add_argument("--seed", type=int, help="seed for reproducible replies (default: unseeded)")
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run custom model / tokenizer code found in the model folder (auto_map); off by default",
    )
    return parser


def _check(parser: argparse.ArgumentParser, args) -> None:
    if args.max_new_tokens < 1:
        parser.error(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.temperature < 0:
        parser.error(f"--temperature must be >= 0 (0 = greedy), got {args.temperature}")
    if not 0 < args.top_p <= 1:
        parser.error(f"--top-p must be in (0, 1], got {args.top_p}")


def load_chat_model(path: str, device: torch.device, *, trust_remote_code: bool = False):
    """(model, tokenizer) of ``path`` on ``device``: float32 on CPU, the stored dtype on CUDA.
    ModelFolderError when the folders hold custom code and ``trust_remote_code`` is off."""
    from rlhf.config.sections import ModelConfig
    from rlhf.models.loading import load_tokenizer

    source = find_model(path)
    if source.kind == "reward_model":
        raise ModelFolderError(
            f"{source.folder} is a reward model (scalar head, no text generation); "
            "expected a causal LM folder to chat with"
        )
    found = custom_code(source)
    if found and not trust_remote_code:
        raise ModelFolderError(
            f"{found[0]} names custom code, which rlhf chat runs only with --trust-remote-code "
            "(pass it if you trust the .py files of that folder)"
        )
    dtype = stored_dtype(source) if device.type == "cuda" else torch.float32
    model = load_model(source, dtype, merge=source.kind == "lora", trust_remote_code=trust_remote_code).to(device)
    # rlhf's tokenizer loader gives a pad token distinct from EOS, which sample() relies on.
    tokenizer = load_tokenizer(ModelConfig(name_or_path=source.tokenizer, trust_remote_code=trust_remote_code))
    return model, tokenizer


def context_limit(model, tokenizer) -> int | None:
    """Positions the model can attend over, when its config or tokenizer says."""
    limits = [getattr(model.config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    limits = [n for n in limits if isinstance(n, int) and 0 < n < 1_000_000]  # tokenizers use 1e30 for "none"
    return min(limits) if limits else None


def _fit(tokenizer, system: list, history: list, budget: int | None) -> bool:
    """Drops the oldest exchanges of ``history`` until the rendered prompt fits ``budget`` tokens;
    False (and the new message removed) when the newest message alone does not fit."""

    def length() -> int:
        return len(tokenizer(render_prompt(tokenizer, system + history), add_special_tokens=False)["input_ids"])

    while budget is not None and length() > budget:
        if len(history) <= 1:
            print(
                f"message too long for the model's context ({length()} tokens, room for {budget}); not sent",
                file=sys.stderr,
            )
            history.clear()
            return False
        del history[:2]  # one user turn and its reply
        print("(dropped the oldest exchange to fit the context)", file=sys.stderr)
    return True


def chat(model, tokenizer, args) -> None:
    """The read-reply loop over ``sys.stdin`` until /exit or end of input."""
    sampling = SamplingConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        do_sample=args.temperature > 0,
    )
    limit = context_limit(model, tokenizer)
    budget = None if limit is None else limit - args.max_new_tokens
    system = [{"role": "system", "content": args.system}] if args.system else []
    history: list[dict] = []
    interactive = sys.stdin.isatty()
    turn = 0
    while True:
        if interactive:
            print(PROMPT, end="", flush=True)
        line = sys.stdin.readline()
        if not line:  # end of input
            break
        text = line.strip()
        if not text:
            continue
        if _COMMAND.fullmatch(text):
            if text == "/exit":
                break
            if text == "/reset":
                history = []
                print("(conversation reset)", flush=True)
            else:
                print(f"unknown command {text}; the commands are /reset and /exit", file=sys.stderr)
            continue
        history.append({"role": "user", "content": text})
        if not _fit(tokenizer, system, history, budget):
            continue
        # One seed per turn: reproducible with --seed, and no two turns share a random stream.
        seed = None if args.seed is None else args.seed + turn
        reply = sample(model, tokenizer, [system + history], sampling, generator_seed=seed).texts[0]
        history.append({"role": "assistant", "content": reply})
        print(f"{REPLY}{reply}", flush=True)
        turn += 1


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _check(parser, args)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model, tokenizer = load_chat_model(args.model, device, trust_remote_code=args.trust_remote_code)
    except (ValueError, OSError) as err:
        message = first_line(err)
        if "trust_remote_code" in str(err) and not args.trust_remote_code:
            # Custom code that is not in a local folder (a Hub base model): transformers refuses it.
            message += " (rlhf chat runs custom code only with --trust-remote-code)"
        print(f"rlhf chat: {message}", file=sys.stderr)
        return 2
    limit = context_limit(model, tokenizer)
    if limit is not None and args.max_new_tokens >= limit:
        print(
            f"rlhf chat: --max-new-tokens {args.max_new_tokens} leaves no room for the conversation "
            f"in the model's {limit} positions",
            file=sys.stderr,
        )
        return 2
    if not getattr(tokenizer, "chat_template", None):
        print("rlhf chat: the tokenizer has no chat template; turns are joined as plain text", file=sys.stderr)
    print(f"chatting with {args.model} on {device}; /reset starts over, /exit quits", file=sys.stderr)
    try:
        chat(model, tokenizer, args)
    except KeyboardInterrupt:
        print(file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
