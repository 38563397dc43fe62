"""Click options generated from declared transform options (``llcompile.util.option_spec``)."""

from __future__ import annotations

from typing import Callable

import click

from llcompile.cli.parsing import parse_csv
from llcompile.util.option_names import cli_flag
from llcompile.util.option_spec import OptionSpec, option_specs
from llcompile.util.ramp import Ramp, ramp_ends, ramp_value


class RampType(click.ParamType):
    """A number or FIRST:LAST, as llcompile records it; the range is the Python side's check."""

    name = "number or FIRST:LAST"

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        if ramp_ends(value) is None:
            self.fail(f"{value!r} is not a number or FIRST:LAST (two numbers)", param, ctx)
        return ramp_value(value)


def click_option(name: str, spec: OptionSpec) -> Callable:
    """The click option of declared option ``name``; None when not given, so that the Python side
    tells a given value from its default."""
    settings: dict = {"help": spec.help_line(), "metavar": spec.metavar}
    if spec.kind is bool:
        settings.update(is_flag=True, default=None)
    elif spec.kind is list:
        settings["callback"] = parse_csv
    elif spec.kind is Ramp:
        settings["type"] = RampType()
    elif spec.choices is not None:
        settings["type"] = click.Choice(list(spec.choices))
    elif spec.minimum is not None:
        number_range = click.IntRange if spec.kind is int else click.FloatRange
        settings["type"] = number_range(spec.minimum, spec.maximum, min_open=spec.min_open, max_open=spec.max_open)
    else:
        settings["type"] = spec.kind
    flags = [spec.short_flag] if spec.short_flag else []
    return click.option(*flags, cli_flag(name), name, **settings)


def declared_options(*option_classes) -> Callable:
    """A decorator giving a click command a flag for every declared option of ``option_classes``,
    in their order."""
    decorators = [click_option(name, spec) for cls in option_classes for name, spec in option_specs(cls).items()]

    def apply(command: Callable) -> Callable:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply
