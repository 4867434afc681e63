"""Record types: the validated, normalised form every stage consumes.

Records are built only by `preference_data.validate` (rule 5: data is validated once), so a
stage that holds one can trust it. Each record keeps `source` and `line` so that a problem found
later (e.g. too long once tokenised) can still be reported as `file:line` and quarantined.
"""

from __future__ import annotations

from dataclasses import dataclass

SYSTEM, USER, ASSISTANT = "system", "user", "assistant"
ROLES = (SYSTEM, USER, ASSISTANT)


def message(role: str, content: str) -> dict:
    """One chat message in the form chat templates expect: {"role": ..., "content": ...}."""
    return {"role": role, "content": content}


@dataclass(frozen=True)
class SFTRecord:
    """A conversation whose final message is the assistant turn to learn.

    `messages` is ({"role": "system"|"user"|"assistant", "content": str}, ...): an optional
    leading system message, a user turn first, an assistant turn last. A prompt/completion
    record is stored as (user: prompt, assistant: completion).
    """

    messages: tuple[dict, ...]
    source: str
    line: int

    @property
    def prompt(self) -> tuple[dict, ...]:
        """The conversation up to (not including) the final assistant turn."""
        return self.messages[:-1]

    @property
    def completion(self) -> str:
        """The text of the final assistant turn."""
        return self.messages[-1]["content"]


# A prompt is plain text, or a conversation prefix: a tuple of messages ending with a user turn.


def prompt_key(prompt) -> str:
    """A stable text key for a prompt (grouping, splitting by prompt, dedup)."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(f"{m['role']}: {m['content']}" for m in prompt)


@dataclass(frozen=True)
class PromptRecord:
    """A prompt alone (RL rollouts); ``metadata`` is the row's optional JSON object of facts about
    it (e.g. the reference answer), handed to reward functions that take the record."""

    prompt: str | tuple[dict, ...]
    source: str = ""
    line: int = 0
    metadata: dict | None = None


@dataclass(frozen=True)
class PairwiseRecord:
    """One preference: ``chosen`` is better than ``rejected`` for ``prompt``.

    ``margin`` (optional) is how much better; ``group`` ties together the pairs that came from
    one ranked or rated item, so a reward model can score each response once per batch.
    """

    prompt: str | tuple[dict, ...]
    chosen: str
    rejected: str
    margin: float | None = None
    annotator: str | None = None
    group: str | None = None
    source: str = ""
    line: int = 0


@dataclass(frozen=True)
class RankedRecord:
    """K >= 2 responses with ranks: 0 = best; equal ranks are ties."""

    prompt: str | tuple[dict, ...]
    responses: tuple[str, ...]
    ranks: tuple[int, ...]
    annotator: str | None = None
    source: str = ""
    line: int = 0


@dataclass(frozen=True)
class RatedRecord:
    """Responses with absolute scores: a number each, or a mapping of named attributes to numbers."""

    prompt: str | tuple[dict, ...]
    responses: tuple[str, ...]
    scores: tuple  # tuple[float, ...] or tuple[dict[str, float], ...]
    annotator: str | None = None
    source: str = ""
    line: int = 0
