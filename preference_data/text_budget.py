"""How much of a text is tokenised when only its first N tokens matter.

Text is cut before it is tokenised, so one huge record costs memory in proportion to the token
limit, not to its own length. The cut keeps ``char_budget(n)`` = CHARS_PER_TOKEN_BOUND * (n +
CUT_MARGIN_TOKENS) characters: enough for n tokens from any tokenizer that gives at least one
token per 16 characters (subword tokenizers give one per 3-6 characters of prose), plus a
margin so the tokens the cut itself changes (the last word or so) fall after the first n.
`collate.encode_prefix` doubles the cut when a tokenizer gives fewer tokens than that.
"""

from __future__ import annotations

CHARS_PER_TOKEN_BOUND = 16
CUT_MARGIN_TOKENS = 64


def char_budget(max_tokens: int) -> int:
    """Characters of text tokenised when at most ``max_tokens`` tokens are kept."""
    return CHARS_PER_TOKEN_BOUND * (max_tokens + CUT_MARGIN_TOKENS)
