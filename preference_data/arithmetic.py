"""A verifiable task: arithmetic questions with exact answers, and the rewards that check them.

`builtin:arithmetic-prompts` (parameters `n`, `seed`, `split`, `digits`) yields prompt records
``{"prompt": "What is 37 + 48? Answer with the number only.", "metadata": {"answer": "85"}}``:
sums, differences and products of two integers of up to `digits` digits (default 2).
Everything is deterministic for a seed (`random.Random(seed)`).

Held-out split: a question belongs to `test` when ``(31 * a + 17 * b + OPS.index(op)) % 5 == 0``
(about a fifth of all questions), to `train` otherwise; `all` (default) takes both. The rule
depends on the question only, so no test question is ever drawn under `train`, whatever the
seed.

Reward functions for ``reward.functions`` (they take the prompt record, whose metadata holds the
answer):

- ``preference_data.arithmetic:exact_answer``: 1.0 when the last integer in the response is the
  answer, else 0.0;
- ``preference_data.arithmetic:answer_format``: 1.0 for a response that is one integer and
  nothing else (an optional final full stop aside), else 0.0: the short-answer format the
  prompt asks for.
"""

from __future__ import annotations

import random
import re

from preference_data.readers import register_builtin

OPS = ("+", "-", "*")
SPLITS = ("all", "train", "test")
QUESTION = "What is {a} {op} {b}? Answer with the number only."
_INTEGER = re.compile(r"-?\d+")
_ONLY_INTEGER = re.compile(r"\s*(-?\d+)\.?\s*")


def in_test_split(a: int, op: str, b: int) -> bool:
    """Whether the question ``a op b`` is held out (the `test` split)."""
    return (31 * a + 17 * b + OPS.index(op)) % 5 == 0


def solve(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def arithmetic_records(n: int = 2000, seed: int = 0, split: str = "all", digits: int = 2) -> list[dict]:
    """`n` prompt records with their answers in metadata, from `split` ("all", "train", "test")."""
    if split not in SPLITS:
        raise ValueError(f"builtin:arithmetic-prompts: unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if not 1 <= digits <= 6:
        raise ValueError(f"builtin:arithmetic-prompts: digits must be 1..6, got {digits}")
    rng = random.Random(seed)
    top = 10**digits - 1
    records = []
    while len(records) < n:
        a, b, op = rng.randint(0, top), rng.randint(0, top), rng.choice(OPS)
        if split != "all" and in_test_split(a, op, b) != (split == "test"):
            continue
        question = QUESTION.format(a=a, op=op, b=b)
        records.append({"prompt": question, "metadata": {"answer": str(solve(a, op, b))}})
    return records


def _answer(record) -> str:
    metadata = getattr(record, "metadata", None) or {}
    if "answer" not in metadata:
        where = f"{getattr(record, 'source', '?')}:{getattr(record, 'line', '?')}"
        raise ValueError(f"{where}: the prompt record has no metadata.answer to check the response against")
    return str(metadata["answer"]).strip()


def exact_answer(prompt, response: str, record=None) -> float:
    """1.0 when the last integer in ``response`` equals the record's ``metadata.answer``."""
    if record is None:
        raise ValueError("exact_answer needs the prompt record (its metadata.answer)")
    numbers = _INTEGER.findall(response)
    return 1.0 if numbers and numbers[-1] == _answer(record) else 0.0


def answer_format(prompt, response: str, record=None) -> float:
    """1.0 when ``response`` is one integer and nothing else (a final full stop allowed)."""
    return 1.0 if _ONLY_INTEGER.fullmatch(response) else 0.0


def _arithmetic_prompts(n: int = 2000, seed: int = 0, split: str = "all", digits: int = 2) -> list[dict]:
    return arithmetic_records(n, seed, split, digits)


register_builtin("arithmetic-prompts", _arithmetic_prompts)
