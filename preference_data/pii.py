"""Scrub personal data from text: e-mail addresses, credit-card numbers, IP addresses, phones.

Each match is replaced by a placeholder ([EMAIL], [CREDIT_CARD], [IP_ADDRESS], [PHONE]) and
counted, so a data report can say how much was scrubbed. The patterns lean towards precision:
a number is a card only when the Luhn check passes, an IPv4 address only when each octet is
<= 255, and a phone number needs a "+country" prefix or the separators of a common US / European
format, so years, prices, decimals, dates and ISBNs are left alone.

Order matters: e-mails first (their local part may hold digits), then cards (16 digits in
groups would otherwise look like a phone number), then IP addresses (IPv6 first, as it may end in
a dotted IPv4 part), then phones.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections import Counter

EMAIL, CREDIT_CARD, IP_ADDRESS, PHONE = "EMAIL", "CREDIT_CARD", "IP_ADDRESS", "PHONE"

_EMAIL = re.compile(
    r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}\b"
)

# A run of digit groups joined by single spaces or dashes, not part of a word, a decimal or a
# dotted number. Cards are searched for inside runs (see `_scrub_cards`).
_DIGIT_RUN = re.compile(r"(?<![\w.,])\d+(?:[ -]\d+)*(?![\w]|[.,]\d)")

_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
# Candidates only; `ipaddress` decides. At least two colons, so "10:30" is never a candidate.
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:(?:\d{1,3}\.){3}\d{1,3}|[0-9A-Fa-f]{1,4})?(?![\w:])")

_SEP = r"[ .\-]"
_PHONE = re.compile(
    r"(?<![\w.+\-/])(?:"
    # International: +CC then 2 to 6 groups, an optional (area) group; digit count checked below.
    r"\+\d{1,3}(?:[ .\-]?\(\d{1,4}\))?(?:[ .\-]?\d{1,5}){2,6}"
    # US: (555) 123-4567, 555-123-4567, 555.123.4567, 1-800-555-0199.
    rf"|(?:1{_SEP})?(?:\(\d{{3}}\) ?|\d{{3}}{_SEP})\d{{3}}{_SEP}\d{{4}}"
    # European national numbers start with 0: 030 12345678, 020 7946 0958, 06 12 34 56 78.
    r"|0\d{1,4}(?:[ /.\-]\d{2,8}){1,4}"
    r")(?![\w]|[.,\-/]\d)"
)


def scrub(text: str) -> tuple[str, Counter]:
    """`text` with personal data replaced by placeholders, and a Counter of what was replaced."""
    counts: Counter = Counter()
    text = _sub(_EMAIL, text, EMAIL, counts, lambda m: True)
    text = _scrub_cards(text, counts)
    text = _sub(_IPV6, text, IP_ADDRESS, counts, _is_ipv6)  # first: it may end in a dotted IPv4
    text = _sub(_IPV4, text, IP_ADDRESS, counts, _is_ipv4)
    text = _sub(_PHONE, text, PHONE, counts, _is_phone)
    return text, counts


def scrub_record(record):
    """(a copy of `record` with every text field scrubbed, Counter of what was replaced).

    Text fields: `prompt` (a string, or the `content` of each message), `chosen`, `rejected`,
    `responses` and `messages` (so an SFT completion too). Source, annotator and scores are left
    as they are. Note that scrubbing can make two texts equal (chosen and rejected differing only
    by an e-mail address); deduplicate or validate after scrubbing if that matters.
    """
    counts: Counter = Counter()

    def text(value: str) -> str:
        scrubbed, found = scrub(value)
        counts.update(found)
        return scrubbed

    def messages(value: tuple) -> tuple:
        return tuple({**m, "content": text(m["content"])} for m in value)

    present = {f.name for f in dataclasses.fields(record)}
    changes = {}
    for name in ("prompt", "chosen", "rejected", "responses", "messages"):
        if name not in present:
            continue
        value = getattr(record, name)
        if isinstance(value, str):
            changes[name] = text(value)
        elif value and isinstance(value[0], dict):
            changes[name] = messages(value)
        else:
            changes[name] = tuple(text(v) for v in value)
    return dataclasses.replace(record, **changes), counts


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum of a string of digits (every second digit from the right doubled)."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        d = int(char)
        if position % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _sub(pattern: re.Pattern, text: str, label: str, counts: Counter, accept) -> str:
    def replace(match: re.Match) -> str:
        if not accept(match.group(0)):
            return match.group(0)
        counts[label] += 1
        return f"[{label}]"

    return pattern.sub(replace, text)


def _scrub_cards(text: str, counts: Counter) -> str:
    """Replace card numbers inside runs of digit groups.

    A card is 13-19 digits, written as one group or as groups of 4-6 digits (the first of 4,
    the last of 1-6: 4-4-4-4, 4-6-5, 4-4-4-4-3), and passes Luhn. Inside a longer run ("in 2024
    4111 1111 1111 1111") the longest valid span of whole groups from the left is taken.
    """

    def replace_in_run(match: re.Match) -> str:
        parts = re.split(r"([ -])", match.group(0))
        groups, separators = parts[0::2], parts[1::2]
        out: list[str] = []
        i = 0
        while i < len(groups):
            end = next((j for j in range(len(groups) - 1, i - 1, -1) if _is_card(groups[i : j + 1])), None)
            if end is None:
                out.append(groups[i])
                end = i
            else:
                out.append(f"[{CREDIT_CARD}]")
                counts[CREDIT_CARD] += 1
            if end + 1 < len(groups):
                out.append(separators[end])
            i = end + 1
        return "".join(out)

    return _DIGIT_RUN.sub(replace_in_run, text)


def _is_card(groups: list[str]) -> bool:
    digits = "".join(groups)
    if not 13 <= len(digits) <= 19:
        return False
    if len(groups) > 1:
        if len(groups[0]) != 4 or not all(4 <= len(g) <= 6 for g in groups[1:-1]):
            return False
        if not 1 <= len(groups[-1]) <= 6:
            return False
    return luhn_valid(digits)


def _is_ipv4(candidate: str) -> bool:
    return all(int(octet) <= 255 for octet in candidate.split("."))


def _is_ipv6(candidate: str) -> bool:
    # A digit is required so words made of hex letters around "::" (C++ "abc::def") are kept.
    if not any(c.isdigit() for c in candidate):
        return False
    try:
        ipaddress.IPv6Address(candidate)
    except ValueError:
        return False
    return True


def _is_phone(candidate: str) -> bool:
    digits = sum(c.isdigit() for c in candidate)
    if candidate.startswith("+"):
        return 8 <= digits <= 15  # E.164 allows at most 15 digits
    if candidate.startswith("0"):
        return 9 <= digits <= 12  # fewer would be dates such as 01.02.2024
    return 10 <= digits <= 11
