"""Text from a model, program or data folder made safe to print on a terminal."""

from __future__ import annotations

import unicodedata

# control (Cc: newline, escape, ...), format (Cf: bidi overrides, zero-width), line and paragraph
# separators: a terminal would act on them instead of showing them
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


def printable(text: object) -> str:
    """``text`` with every character a terminal would interpret shown as its ``repr`` escape
    (``\\n``, ``\\x1b``, ``\\u202e``); everything else, non-ASCII letters included, unchanged."""
    return "".join(repr(ch)[1:-1] if unicodedata.category(ch) in _HIDDEN_CATEGORIES else ch for ch in str(text))


def printable_data(data: object) -> object:
    """``data`` (JSON-like: dicts, lists, strings, numbers) with every string, keys included, ``printable``."""
    if isinstance(data, str):
        return printable(data)
    if isinstance(data, dict):
        return {printable_data(key): printable_data(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [printable_data(item) for item in data]
    return data
