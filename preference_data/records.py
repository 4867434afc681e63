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
