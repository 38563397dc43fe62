"""``--data SPEC``: which data set a spec names, loaded and fitted to the program."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from llcompile.errors import DataError

from .cifar10 import load_cifar10
from .dataset import Dataset, Splits, fit_to_program
from .digits import load_digits_splits
from .mnist1d_signals import load_mnist1d_splits
from .synthetic import DEFAULT_TRAIN_SAMPLES, make_synthetic_splits


@dataclass(frozen=True)
class Source:
    usage: str  # how the spec is written, for error messages
    argument: str  # "required" | "optional" | "none"
    # (argument or None, input_shape, num_classes, limit) -> splits; limit lets a source read less
    load: Callable[[str | None, tuple[int, ...], int, int | None], Splits]


SOURCES = {
    "cifar10": Source(
        "cifar10:PATH", "required", lambda path, shape, classes, limit: load_cifar10(path, limit)
    ),
    "digits": Source("digits", "none", lambda arg, shape, classes, limit: load_digits_splits()),
    "mnist1d": Source("mnist1d", "none", lambda arg, shape, classes, limit: load_mnist1d_splits()),
    "synthetic": Source(
        "synthetic[:N]", "optional", lambda count, shape, classes, limit: _synthetic(count, shape, classes)
    ),
}


def load_dataset(
    spec: str, input_shape: tuple[int, ...], num_classes: int, limit: int | None = None
) -> Dataset:
    """The data set ``spec`` names, shaped for a program with this input shape and class count.

    ``limit`` keeps at most that many samples per split (the first ones).
    """
    if limit is not None and limit < 1:
        raise DataError(f"the sample limit must be at least 1, got {limit}")
    name, has_argument, argument = spec.partition(":")
    source = SOURCES.get(name)
    if source is None:
        known = ", ".join(s.usage for s in SOURCES.values())
        raise DataError(f"unknown data set '{spec}'; known: {known}")
    if source.argument == "required" and not argument:
        raise DataError(f"data set '{name}' needs an argument: {source.usage}")
    if source.argument == "none" and has_argument:
        raise DataError(f"data set '{name}' takes no argument: {source.usage}")
    input_shape = tuple(int(d) for d in input_shape)
    splits = source.load(argument or None, input_shape, num_classes, limit).head(limit)
    return fit_to_program(name, splits, input_shape, num_classes)


def _synthetic(count: str | None, input_shape: tuple[int, ...], num_classes: int) -> Splits:
    train_samples = _sample_count(count) if count else DEFAULT_TRAIN_SAMPLES
    return make_synthetic_splits(train_samples, input_shape, num_classes)


def _sample_count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise DataError(f"synthetic:N needs a positive number of training samples, got '{text}'")
    return int(text)
