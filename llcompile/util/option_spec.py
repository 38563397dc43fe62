"""Transform options declared once: a dataclass field per option, with its type, range or choices,
default and help in the field's metadata.

The CLI's click options (``llcompile.cli.spec_options``) and the Python-side checks
(``check_values``, ``from_options``) are both generated from these declarations, so a flag's
range, choices and default cannot differ between ``llcompile transform`` and ``llcompile.transform``.
Every message names the option as its caller does (``util.option_names.option_name``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from llcompile.errors import OptionError
from llcompile.util.option_names import option_name
from llcompile.util.ramp import Ramp, ramp_ends

METADATA_KEY = "option"


@dataclass(frozen=True)
class OptionSpec:
    """One transform option: ``kind`` is int, float, str, bool (a flag), list (comma-separated
    names) or Ramp (a number per block, ``util.ramp``); ``minimum``/``maximum`` bound a number (each
    end of a ramp; ``*_open``: the bound itself excluded);
    ``choices`` lists a string's values; ``default`` is what a missing value means, shown in
    ``--help`` unless ``default_text`` words it (None: no default shown)."""

    kind: type
    help: str
    default: Any = None
    default_text: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    min_open: bool = False
    max_open: bool = False
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    short_flag: str | None = None  # e.g. "-k"

    def shown_default(self) -> str | None:
        """The default as ``--help`` shows it."""
        if self.default_text is not None or self.default is None:
            return self.default_text
        return f"{self.default:g}" if isinstance(self.default, float) else str(self.default)

    def help_line(self) -> str:
        """The option's ``--help`` text, its default last."""
        default = self.shown_default()
        return self.help + (f" [default: {default}]" if default is not None else "") + "."


def option(kind: type, help_text: str, *, field_default: Any = None, **spec) -> Any:
    """A dataclass field declaring a transform option. ``field_default`` is the field's own value
    when not given; ``spec`` the other ``OptionSpec`` entries (``default``: the value it stands for,
    when the field's own is None)."""
    spec.setdefault("default", field_default)
    return dataclasses.field(default=field_default, metadata={METADATA_KEY: OptionSpec(kind, help_text, **spec)})


def option_specs(cls) -> dict[str, OptionSpec]:
    """The declared options of dataclass ``cls`` by name, in declaration order."""
    return {f.name: f.metadata[METADATA_KEY] for f in dataclasses.fields(cls) if METADATA_KEY in f.metadata}


def range_text(spec: OptionSpec) -> str:
    """The range of a number option, as messages state it: ``in (0, 1]`` or ``>= 1``."""
    if spec.maximum is None:
        return f"{'>' if spec.min_open else '>='} {spec.minimum:g}"
    return (f"in {'(' if spec.min_open else '['}{spec.minimum:g}, {spec.maximum:g}"
            f"{')' if spec.max_open else ']'}")


# what a value of each kind must be, and how messages say it: Python's own types, which program.json can
# record (a numpy integer cannot be); bool is no number here (True is not 1 block)
KINDS = {
    int: (lambda v: type(v) is int, "an integer"),
    float: (lambda v: type(v) in (int, float), "a number"),
    str: (lambda v: isinstance(v, str), "a string"),
    bool: (lambda v: isinstance(v, bool), "True or False"),
    list: (lambda v: isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v), "a list of names"),
    Ramp: (lambda v: ramp_ends(v) is not None, "a number or FIRST:LAST"),
}


def problem(name: str, spec: OptionSpec, value: Any) -> str | None:
    """What is wrong with ``value`` for option ``name`` (None: nothing; None values are not given)."""
    if value is None:
        return None
    is_kind, kind_text = KINDS[spec.kind]
    if not is_kind(value):
        return f"{option_name(name)} must be {kind_text}, not {value!r}"
    if spec.choices is not None and value not in spec.choices:
        return f"{option_name(name)} must be one of {', '.join(spec.choices)}, not {value!r}"
    if spec.minimum is not None:
        numbers = set(ramp_ends(value)) if spec.kind is Ramp else {value}
        for number in numbers:
            low_ok = number > spec.minimum if spec.min_open else number >= spec.minimum
            high_ok = spec.maximum is None or (number < spec.maximum if spec.max_open else number <= spec.maximum)
            if not (low_ok and high_ok):
                return f"{option_name(name)} must be {range_text(spec)}" + (" at both ends" if len(numbers) > 1 else "")
    return None


def check_values(options) -> None:
    """Refuse the first declared option of dataclass instance ``options`` outside its range or choices."""
    for name, spec in option_specs(type(options)).items():
        message = problem(name, spec, getattr(options, name))
        if message:
            raise OptionError(message)


class DeclaredOptions:
    """Base of the frozen dataclasses whose fields are declared options (``option``)."""

    @classmethod
    def from_options(cls, options: dict):
        """This class's options out of a transform's options (or a program's recorded ones); keys
        of other classes, and None values, are skipped."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in options.items() if k in names and v is not None})
