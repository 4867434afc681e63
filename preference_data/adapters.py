"""Adapters: public data formats -> the canonical fields a checker validates.

An adapter takes one source row (a dict) and returns the fields of one record kind, or raises
`Rejected` when the row does not fit the format; `load_kind(..., adapter=NAME)` quarantines
those rows like any other rejection. Adapters only reshape: the checker still decides what is
valid (empty turns, identical responses, non-finite scores ...). Ratings that are averaged
into one score are checked as numbers first, since a mean can hide an out-of-range rating.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from preference_data.readers import type_name
from preference_data.records import ASSISTANT, SYSTEM, USER, message
from preference_data.validate import Rejected, finite_float32


def _object(row: object) -> dict:
    if not isinstance(row, dict):
        raise Rejected(f"expected a JSON object, got {type_name(row)}")
    return row


# --- HH-RLHF (Anthropic) ---------------------------------------------------------------------

_HUMAN, _ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
_TURN = re.compile(r"\n\n(Human|Assistant):")
_SPEAKERS = {"Human": USER, "Assistant": ASSISTANT}


def _split_final_reply(text: object, name: str) -> tuple[str, str]:
    """(the dialogue before the last Assistant marker, the final reply stripped)."""
    if not isinstance(text, str):
        raise Rejected(f"field '{name}' must be a string of HH-RLHF turns, got {type_name(text)}")
    if text.startswith("Human:"):  # some exports drop the leading blank line
        text = "\n\n" + text
    at = text.rfind(_ASSISTANT)
    if at < 0:
        raise Rejected(f"{name} dialogue has no assistant turn")
    reply = text[at + len(_ASSISTANT) :]
    if _HUMAN in reply:
        raise Rejected(f"{name} dialogue ends with a Human turn, not the assistant's")
    return text[:at], reply.strip()


def _mismatch_hint(chosen_prefix: str, rejected_prefix: str) -> str:
    # In the public data this happens when a reply goes on to write "Human: ... Assistant: ..."
    # itself: the last marker is then inside that reply, not at the end of the shared prompt.
    for name, longer, shorter in (
        ("rejected", rejected_prefix, chosen_prefix),
        ("chosen", chosen_prefix, rejected_prefix),
    ):
        if longer.startswith(shorter + _ASSISTANT):
            return f" (the {name} reply contains another Assistant turn)"
    return ""


def hh_rlhf(row: object) -> dict:
    """{"chosen": dialogue, "rejected": dialogue} -> pairwise fields.

    A dialogue is "\\n\\nHuman: ...\\n\\nAssistant: ..." turns; chosen and rejected must be
    the same up to their last "\\n\\nAssistant:", which becomes the prompt (a conversation
    ending with the user's turn); what follows it in each is the chosen / rejected reply.
    """
    row = _object(row)
    for name in ("chosen", "rejected"):
        if name not in row:
            raise Rejected(f"field '{name}' is missing")
    chosen_prefix, chosen = _split_final_reply(row["chosen"], "chosen")
    rejected_prefix, rejected = _split_final_reply(row["rejected"], "rejected")
    if chosen_prefix != rejected_prefix:
        raise Rejected(
            "chosen and rejected dialogues do not share a prompt" + _mismatch_hint(chosen_prefix, rejected_prefix)
        )
    parts = _TURN.split(chosen_prefix)
    if parts[0].strip():
        raise Rejected("dialogue does not start with a Human turn")
    for name, reply in (("chosen", chosen), ("rejected", rejected)):
        if not reply:
            raise Rejected(f"{name} final reply is empty")
    # Empty or misordered turns in the prompt are left to the checker, which names the turn.
    prompt = [message(_SPEAKERS[speaker], text.strip()) for speaker, text in zip(parts[1::2], parts[2::2])]
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


# --- UltraFeedback (OpenBMB) -----------------------------------------------------------------


def _rating(value: object, label: str) -> float | None:
    """A rating as a number; None for "N/A" (the annotator judged the attribute not applicable)."""
    if value is None or (isinstance(value, str) and value.strip().upper() == "N/A"):
        return None
    if isinstance(value, bool):
        raise Rejected(f"{label} must be a number or a numeric string, got bool")
    if isinstance(value, (int, float)):
        try:
            return finite_float32(float(value), label)
        except OverflowError:  # an integer beyond float range
            raise Rejected(f"{label} is not finite") from None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise Rejected(f"{label} {value!r} is not a number") from None
        return finite_float32(number, label)
    raise Rejected(f"{label} must be a number or a numeric string, got {type_name(value)}")


def _attribute_ratings(completion: dict, label: str) -> dict[str, float]:
    annotations = completion.get("annotations")
    if annotations is None:
        return {}
    if not isinstance(annotations, dict):
        raise Rejected(f"{label}.annotations must be an object, got {type_name(annotations)}")
    ratings = {}
    for attribute, annotation in annotations.items():
        where = f"{label}.annotations.{attribute}"
        # Some dumps wrap each attribute's annotation in a one-element list.
        if isinstance(annotation, list) and len(annotation) == 1:
            annotation = annotation[0]
        if isinstance(annotation, dict):
            if "Rating" not in annotation:
                raise Rejected(f"{where}.Rating is missing")
            annotation, where = annotation["Rating"], f"{where}.Rating"
        value = _rating(annotation, where)
        if value is not None:
            ratings[attribute] = value
    return ratings


def _overall(completion: dict, label: str) -> float:
    for key in ("overall_score", "fine-grained_score"):
        value = _rating(completion.get(key), f"{label}.{key}")
        if value is not None:
            return value
    ratings = _attribute_ratings(completion, label)
    if not ratings:
        raise Rejected(f"{label} has no numeric rating (no overall_score, fine-grained_score or rated annotations)")
    return sum(ratings.values()) / len(ratings)


def ultrafeedback(row: object, *, attributes: bool = False) -> dict:
    """{"instruction"|"prompt", "completions": [{"response"|"text", scores...}]} -> rated fields.

    A completion's score is its "overall_score" when present, else "fine-grained_score", else
    the mean of its attribute ratings ("annotations": {attr: {"Rating": "4"}}); "N/A" ratings
    are skipped. attributes=True keeps the ratings as {attr: number} instead, limited to the
    attributes rated for every completion (the checker needs the same keys for all).
    """
    row = _object(row)
    prompt = row.get("instruction")
    if prompt is None:
        prompt = row.get("prompt")
    if prompt is None:
        raise Rejected("field 'instruction' is missing (or give 'prompt')")
    completions = row.get("completions")
    if completions is None:
        raise Rejected("field 'completions' is missing")
    if not isinstance(completions, list):
        raise Rejected(f"field 'completions' must be a list, got {type_name(completions)}")
    responses, scores = [], []
    for i, completion in enumerate(completions):
        label = f"completions[{i}]"
        if not isinstance(completion, dict):
            raise Rejected(f"{label} must be an object, got {type_name(completion)}")
        text = completion.get("response")
        if text is None:
            text = completion.get("text")
        if text is None:
            raise Rejected(f"{label}.response is missing (or give 'text')")
        responses.append(text)
        scores.append(_attribute_ratings(completion, label) if attributes else _overall(completion, label))
    if attributes and scores:
        shared = [name for name in scores[0] if all(name in s for s in scores)]
        if not shared:
            raise Rejected("no numeric rating shared by every completion (attributes N/A or missing)")
        scores = [{name: s[name] for name in shared} for s in scores]
    return {"prompt": prompt, "responses": responses, "scores": scores}


def ultrafeedback_attributes(row: object) -> dict:
    """`ultrafeedback` keeping per-attribute ratings: scores are {attr: number}."""
    return ultrafeedback(row, attributes=True)


# --- OpenAI chat format ----------------------------------------------------------------------

_OPENAI_ROLES = {"system": SYSTEM, "developer": SYSTEM, "user": USER, "assistant": ASSISTANT}


def _text_parts(parts: list, label: str) -> str:
    texts = []
    for j, part in enumerate(parts):
        where = f"{label}[{j}]"
        if not isinstance(part, dict):
            raise Rejected(f"{where} must be an object with 'type' and 'text', got {type_name(part)}")
        if part.get("type") != "text":
            raise Rejected(f"{where} has type {part.get('type')!r}: only text parts are supported")
        if "text" not in part:
            raise Rejected(f"{where}.text is missing")
        if not isinstance(part["text"], str):
            raise Rejected(f"{where}.text must be a string, got {type_name(part['text'])}")
        texts.append(part["text"])
    # Newline-joined, as vLLM renders text-only content parts.
    return "\n".join(texts)


def openai_messages(row: object) -> dict:
    """{"messages": [{"role", "content": str | [{"type": "text", "text": ...}, ...]}]} -> sft fields.

    "developer" is OpenAI's newer name for the system role. Images, audio and tool calls are
    rejected rather than dropped: without them the conversation would say something else.
    """
    row = _object(row)
    if "messages" not in row:
        raise Rejected("field 'messages' is missing")
    messages = row["messages"]
    if not isinstance(messages, list):
        return {"messages": messages}  # the checker names the wrong type
    converted = []
    for i, item in enumerate(messages):
        if not isinstance(item, dict):
            converted.append(item)
            continue
        if item.get("tool_calls") or item.get("function_call") or item.get("role") in ("tool", "function"):
            raise Rejected(f"messages[{i}] is a tool call or result: only text parts are supported")
        item = dict(item)  # the row itself stays as read: it is what a rejection quarantines
        if isinstance(item.get("role"), str):
            item["role"] = _OPENAI_ROLES.get(item["role"], item["role"])
        if isinstance(item.get("content"), list):
            item["content"] = _text_parts(item["content"], f"messages[{i}].content")
        converted.append(item)
    return {"messages": converted}


# name -> (adapter, the record kind it produces)
ADAPTERS: dict[str, tuple[Callable[[object], dict], str]] = {
    "hh-rlhf": (hh_rlhf, "pairwise"),
    "ultrafeedback": (ultrafeedback, "rated"),
    "ultrafeedback-attributes": (ultrafeedback_attributes, "rated"),
    "openai": (openai_messages, "sft"),
}
