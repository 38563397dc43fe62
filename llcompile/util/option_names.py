"""How a message names an option: as the command-line flag (``--aux-depth 0.5``) when llcompile
runs as the ``llcompile`` command (its entry point runs inside ``options_named_as_flags``), else as
the keyword a Python caller passes (``aux_depth=0.5``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_AS_FLAGS: ContextVar[bool] = ContextVar("llcompile_options_named_as_flags", default=False)
_NO_VALUE = object()


@contextmanager
def options_named_as_flags() -> Iterator[None]:
    """Within: messages name options as command-line flags."""
    token = _AS_FLAGS.set(True)
    try:
        yield
    finally:
        _AS_FLAGS.reset(token)


def cli_flag(name: str) -> str:
    """The command-line flag of option ``name``: ``aux_depth`` -> ``--aux-depth``."""
    return "--" + name.replace("_", "-")


def option_name(name: str, value: Any = _NO_VALUE) -> str:
    """Option ``name`` (and its ``value``) as a message names it: ``--blocks 9`` for the command,
    ``blocks=9`` for Python."""
    if _AS_FLAGS.get():
        return cli_flag(name) if value is _NO_VALUE else f"{cli_flag(name)} {value}"
    return name if value is _NO_VALUE else f"{name}={value!r}"
