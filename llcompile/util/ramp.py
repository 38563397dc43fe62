"""A per-block option value: one number for every block, or a ramp from the first block to the last.

InfoPro (Wang et al., ICLR 2021; its code's ``ixx_1/ixx_2``, ``ixy_1/ixy_2``) weighs each local
block's loss terms linearly from the first local block to the last: block i of n gets
``first + (last - first) * i / (n - 1)`` (``first`` alone when n is 1). A ramp is written
``FIRST:LAST`` on the command line and in Python (``"6:1"``), or as a pair ``(6, 1)``; a plain number
is the same for every block.
"""

from __future__ import annotations

import math


class Ramp:
    """The option kind (``util.option_spec``) of a per-block value."""


def ramp_ends(value) -> tuple[float, float] | None:
    """``(first, last)`` of a ramp value (a number, ``"FIRST:LAST"`` or a pair of numbers); None when
    ``value`` is not one."""
    if type(value) in (int, float):
        numbers = [value]
    elif isinstance(value, str):
        try:
            numbers = [float(part) for part in value.split(":")]
        except ValueError:
            return None
    elif isinstance(value, (list, tuple)) and all(type(v) in (int, float) for v in value):
        numbers = list(value)
    else:
        return None
    if len(numbers) not in (1, 2) or not all(math.isfinite(n) for n in numbers):
        return None
    return float(numbers[0]), float(numbers[-1])


def ramp_at(value, index: int, count: int) -> float:
    """The value of ramp ``value`` (checked by ``ramp_ends``) at block ``index`` of ``count``."""
    first, last = ramp_ends(value)
    return first if count < 2 else first + (last - first) * index / (count - 1)


def ramp_text(value) -> str:
    """A ramp as the command line writes it, every digit kept: ``6``, ``6:1``, ``0.1234567:2``."""
    first, last = (_exact(end) for end in ramp_ends(value))
    return first if first == last else f"{first}:{last}"


def ramp_value(value) -> float | str:
    """A ramp as llcompile records it (program.json, the command line's value): a number, or
    ``FIRST:LAST`` with every digit kept."""
    text = ramp_text(value)
    return float(text) if ":" not in text else text


def _exact(number: float) -> str:
    """The shortest text that reads back as ``number`` (Python's repr), without a trailing ``.0``."""
    return repr(number).removesuffix(".0")
