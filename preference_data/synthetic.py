"""A deterministic, judged toy chat task, small enough to learn on CPU in a minute.

A user asks about a coloured object ("Tell me about the red fox."). A good reply is polite, on
topic and concise ("Sure! The red fox is quick and clever. Hope this helps."). Bad replies are
rude, off topic (about another object) or rambling (the same sentence over and over). `judge`
scores any reply programmatically, so every stage (SFT, RM, PPO, DPO) can be checked end to end
without people or downloads. All randomness comes from `random.Random(seed)`.

Built-ins for `readers.iter_rows`: `builtin:judged-sft`, `builtin:judged-sft-mixed`,
`builtin:judged-prompts` (parameters `n`, `seed`, `split`).

Held-out split. There are only 576 distinct prompts (4 requests x 12 colours x 12 nouns), so
two seeds of the same space overlap and do not test generalisation. `split` restricts the
prompts by their (colour, noun) combination:

- `all` (default): every combination; output byte-identical to before `split` existed;
- `test`: only `TEST_COMBINATIONS`, the 29 of 144 combinations (about 20%) with
  `(COLOURS.index(colour) + NOUNS.index(noun)) % 5 == 0`; this diagonal rule leaves every
  colour and every noun with 2 or 3 test combinations and 9 or 10 train ones;
- `train`: the other 115 combinations; never a test one.

Only the prompt's combination is constrained: an off-topic reply still talks about some other
object. Sampling under a split is deterministic for a seed. `in_split(prompt, split)` tells
which split a prompt belongs to.
"""

from __future__ import annotations

import random
import re

from preference_data.readers import register_builtin

COLOURS = ("red", "blue", "green", "yellow", "black", "white", "brown", "grey", "orange", "purple", "pink", "silver")
# noun -> (traits, facts). No trait or fact mentions another noun, so off-topic is detectable.
OBJECTS = {
    "fox": (("quick and clever", "shy and alert"), ("It lives in the forest.", "It hunts at night.")),
    "cat": (("soft and calm", "curious and quiet"), ("It likes to sleep in the sun.", "It chases small mice.")),
    "dog": (("loyal and friendly", "playful and strong"), ("It loves long walks.", "It guards the garden.")),
    "owl": (("wise and silent", "patient and sharp"), ("It flies at night.", "It sleeps during the day.")),
    "boat": (("fast and light", "steady and safe"), ("It sails across the lake.", "It carries people on the water.")),
    "car": (("small and quick", "clean and shiny"), ("It drives on the road.", "It needs fuel to run.")),
    "lamp": (("bright and warm", "old and elegant"), ("It lights up the room.", "It stands on a desk.")),
    "chair": (("sturdy and comfortable", "simple and neat"), ("It has four legs.", "It sits by the window.")),
    "kite": (("light and colourful", "big and playful"), ("It flies high in the wind.", "It dances in the sky.")),
    "apple": (("sweet and crisp", "fresh and juicy"), ("It grows on a tree.", "It makes a healthy snack.")),
    "book": (("long and exciting", "thin and useful"), ("It tells a story about a king.", "It sits on a shelf.")),
    "hat": (("warm and stylish", "wide and soft"), ("It keeps the sun away.", "It fits most heads.")),
}
NOUNS = tuple(OBJECTS)
REQUESTS = (
    "Tell me about the {colour} {noun}.",
    "What can you say about the {colour} {noun}?",
    "Describe the {colour} {noun}, please.",
    "Could you tell me about the {colour} {noun}?",
)
POLITE_OPENERS = ("Sure!", "Of course!", "Happy to help!", "Great question!")
POLITE_CLOSERS = ("Hope this helps.", "Thanks for asking.", "Let me know if you want more.")
RUDE_OPENERS = ("Ugh. Fine.", "Whatever.", "Not this again.", "Obviously.")
RUDE_CLOSERS = ("Stop asking.", "Go away.", "Figure it out yourself.", "Do not bother me again.")
POLITE_MARKERS = (
    "sure",
    "of course",
    "happy to help",
    "great question",
    "hope this helps",
    "thanks for asking",
    "let me know",
)
RUDE_MARKERS = (
    "ugh",
    "whatever",
    "not this again",
    "obviously",
    "stop asking",
    "go away",
    "figure it out yourself",
    "do not bother me",
)
STYLES = ("good", "rude", "off_topic", "rambling")
MIXED_WEIGHTS = (0.4, 0.2, 0.2, 0.2)  # share of each style in quality="mixed"
TARGET_WORDS = 24  # the longest good reply; words beyond it cost LENGTH_PENALTY each
LENGTH_PENALTY = 0.1
EMPTY_SCORE = -2.0
SPLITS = ("all", "train", "test")
# A diagonal rule, not a random draw, so the held-out set is fixed, documented and covers every
# colour and every noun on both sides (each residue mod 5 occurs at least twice in 0..11).
TEST_COMBINATIONS = frozenset(
    (colour, noun) for c, colour in enumerate(COLOURS) for n, noun in enumerate(NOUNS) if (c + n) % 5 == 0
)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def check_split(split: object, source: str) -> None:
    """Raise a ValueError naming `source` unless `split` is one of SPLITS."""
    if split not in SPLITS:
        raise ValueError(f"{source}: unknown split {split!r}; expected one of {', '.join(SPLITS)}")


def in_split(prompt: str, split: str) -> bool:
    """Whether `prompt` belongs to `split`: "test" if its (colour, noun) is in TEST_COMBINATIONS,
    "train" if it has a (colour, noun) that is not; "all" takes every prompt."""
    check_split(split, "in_split")
    if split == "all":
        return True
    colour, noun = parse_prompt(prompt)
    if colour is None or noun is None:
        return False
    return ((colour, noun) in TEST_COMBINATIONS) == (split == "test")


def make_prompt(rng: random.Random, split: str = "all") -> str:
    """A task prompt whose (colour, noun) lies in `split`."""
    # Rejection sampling: under "all" the first draw always passes, so the random stream (and
    # every generator's output) is exactly what it was before splits; under "train" / "test"
    # it stays uniform over the split's combinations and requests.
    while True:
        prompt = rng.choice(REQUESTS).format(colour=rng.choice(COLOURS), noun=rng.choice(NOUNS))
        if in_split(prompt, split):
            return prompt


def parse_prompt(prompt: str) -> tuple[str | None, str | None]:
    """(colour, noun) asked about: the last "colour noun" pair, else the last noun, in the prompt.

    The last one, because a chat-formatted prompt may carry earlier turns.
    """
    words = _words(prompt)
    pairs = [(a, b) for a, b in zip(words, words[1:]) if a in COLOURS and b in OBJECTS]
    if pairs:
        return pairs[-1]
    nouns = [w for w in words if w in OBJECTS]
    return None, (nouns[-1] if nouns else None)


def reply(prompt: str, style: str, rng: random.Random) -> str:
    """A reply to `prompt` in one of STYLES."""
    colour, noun = parse_prompt(prompt)
    colour, noun = colour or rng.choice(COLOURS), noun or rng.choice(NOUNS)
    if style == "off_topic":
        noun = rng.choice([n for n in NOUNS if n != noun])
        colour = rng.choice([c for c in COLOURS if c != colour])
    traits, facts = OBJECTS[noun]
    about = f"The {colour} {noun} is {rng.choice(traits)}."
    if style == "good":
        body = [about] + ([rng.choice(facts)] if rng.random() < 0.5 else [])
        return " ".join([rng.choice(POLITE_OPENERS), *body, rng.choice(POLITE_CLOSERS)])
    if style == "rude":
        return " ".join([rng.choice(RUDE_OPENERS), about, rng.choice(RUDE_CLOSERS)])
    if style == "off_topic":
        return " ".join([rng.choice(POLITE_OPENERS), about, rng.choice(POLITE_CLOSERS)])
    if style == "rambling":
        return " ".join([rng.choice(POLITE_OPENERS), *[about] * rng.randint(3, 5), rng.choice(POLITE_CLOSERS)])
    raise ValueError(f"unknown style {style!r}; expected one of {', '.join(STYLES)}")


def judge(prompt: str, response: str) -> float:
    """Programmatic reward for a reply to a task prompt; higher is better. Deterministic.

    Sum of:
      +0.5 per distinct politeness marker ("sure", "hope this helps", ...), at most +1.0
      -1.0 per distinct rudeness marker ("ugh", "go away", ...), at most -2.0
      +1.0 if the asked noun is mentioned, +0.5 if the asked colour is, +0.5 more for the
           exact phrase "colour noun"
      -1.0 per other task noun mentioned (off topic), at most -2.0
      -0.5 per sentence that repeats an earlier one (rambling)
      -0.1 per word beyond TARGET_WORDS (24)
    An empty reply scores EMPTY_SCORE (-2.0). As generated by `reply`: good 3.0, rude 0.0,
    off-topic 0.0, rambling 1.9 or less.
    """
    colour, noun = parse_prompt(prompt)
    words = _words(response)
    if not words:
        return EMPTY_SCORE
    padded = f" {' '.join(words)} "
    score = 0.5 * min(2, sum(f" {m} " in padded for m in POLITE_MARKERS))
    score -= 1.0 * min(2, sum(f" {m} " in padded for m in RUDE_MARKERS))
    if noun is not None and noun in words:
        score += 1.0
    if colour is not None and colour in words:
        score += 0.5
        if noun is not None and f" {colour} {noun} " in padded:
            score += 0.5
    score -= 1.0 * min(2, len({w for w in words if w in OBJECTS and w != noun}))
    sentences = [" ".join(_words(s)) for s in re.split(r"[.!?]+", response)]
    sentences = [s for s in sentences if s]
    score -= 0.5 * (len(sentences) - len(set(sentences)))
    score -= LENGTH_PENALTY * max(0, len(words) - TARGET_WORDS)
    return round(score, 6)  # no float noise, so equal replies tie exactly


def sft_records(n: int = 2000, seed: int = 0, quality: str = "good", split: str = "all") -> list[dict]:
    """`n` records {"prompt", "completion", "style"}; quality "good" (all good) or "mixed";
    prompts from `split` ("all", "train", "test")."""
    if quality not in ("good", "mixed"):
        raise ValueError(f"quality must be 'good' or 'mixed', got {quality!r}")
    check_split(split, "sft_records")
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        prompt = make_prompt(rng, split)
        style = "good" if quality == "good" else rng.choices(STYLES, weights=MIXED_WEIGHTS)[0]
        records.append({"prompt": prompt, "completion": reply(prompt, style, rng), "style": style})
    return records


def prompt_records(n: int = 2000, seed: int = 0, split: str = "all") -> list[dict]:
    """`n` records {"prompt"} for PPO rollouts, from `split` ("all", "train", "test")."""
    check_split(split, "prompt_records")
    rng = random.Random(seed)
    return [{"prompt": make_prompt(rng, split)} for _ in range(n)]


def corpus_lines() -> list[str]:
    """A few hundred lines covering the whole task vocabulary, to train a tiny tokenizer on."""
    lines = [" ".join(COLOURS), " ".join(NOUNS)]
    lines += [*POLITE_OPENERS, *POLITE_CLOSERS, *RUDE_OPENERS, *RUDE_CLOSERS]
    for noun, (traits, facts) in OBJECTS.items():
        lines += [request.format(colour=COLOURS[0], noun=noun) for request in REQUESTS]
        lines += [f"The {colour} {noun} is {trait}." for colour in COLOURS[:2] for trait in traits]
        lines += list(facts)
    for record in sft_records(150, seed=12345, quality="mixed"):
        lines += [record["prompt"], record["completion"]]
    return lines


def _judged_sft(n: int = 2000, seed: int = 0, split: str = "all") -> list[dict]:
    check_split(split, "builtin:judged-sft")
    return sft_records(n, seed, "good", split)


def _judged_sft_mixed(n: int = 2000, seed: int = 0, split: str = "all") -> list[dict]:
    check_split(split, "builtin:judged-sft-mixed")
    return sft_records(n, seed, "mixed", split)


def _judged_prompts(n: int = 2000, seed: int = 0, split: str = "all") -> list[dict]:
    check_split(split, "builtin:judged-prompts")
    return prompt_records(n, seed, split)


register_builtin("judged-sft", _judged_sft)
register_builtin("judged-sft-mixed", _judged_sft_mixed)
register_builtin("judged-prompts", _judged_prompts)
