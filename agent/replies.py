"""Reading structured parts out of a small model's free-text reply (tool calls, plans)."""

from __future__ import annotations

import json


def first_json(text: str, opener: str = "{") -> tuple[object, int, int] | None:
    """The first JSON value starting with `opener` in `text`, as (value, start, end), or None.

    `raw_decode` reads one value and ignores what follows, so prose after the JSON does not spoil it.
    """
    start = text.find(opener)
    while start >= 0:
        try:
            value, end = json.JSONDecoder().raw_decode(text, start)
            return value, start, end
        except json.JSONDecodeError:
            start = text.find(opener, start + 1)
    return None
