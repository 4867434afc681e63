"""The task line of an annotation tasks file, ``{"id"?: str, "prompt": ..., "responses": [...]}``,
and the user-facing error every part of the workbench raises."""

from __future__ import annotations

import hashlib
import json

from preference_data.readers import type_name
from preference_data.validate import Rejected
from preference_data.validate_preferences import _prompt, _responses


class AnnotationError(ValueError):
    """A user-facing error; `status` is 400 (bad input), 404 (unknown task) or 409 (conflict)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def content_digest(prompt, responses) -> str:
    text = json.dumps([prompt, list(responses)], ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def jsonable_prompt(prompt):
    return prompt if isinstance(prompt, str) else [dict(m) for m in prompt]


def check_task(data: object, where: str) -> tuple[str, object, tuple[str, ...]]:
    """(id, prompt, responses) of one task line; AnnotationError(400) naming `where` (file:line)."""
    expected = 'expected {"id"?: str, "prompt": str, "responses": [str, str, ...]}'
    try:
        if not isinstance(data, dict):
            raise Rejected(f"expected a JSON object, got {type_name(data)}")
        for name in ("prompt", "responses"):
            if name not in data:
                raise Rejected(f"field '{name}' is missing")
        unknown = sorted(set(data) - {"id", "prompt", "responses"})
        if unknown:
            raise Rejected(f"unknown field(s) {', '.join(map(repr, unknown))}")
        task_id = data.get("id", None)
        if task_id is not None and (not isinstance(task_id, str) or not task_id.strip()):
            raise Rejected(f"field 'id' must be a non-empty string, got {type_name(task_id)}")
        prompt = _prompt(data["prompt"])
        responses = _responses(data, minimum=2)
    except Rejected as err:
        raise AnnotationError(f"{where}: {err}; {expected}", 400) from None
    return task_id, prompt, responses
