"""What an op's torch emitter may ask of the builder that walks a stage graph
(``backends/torch/builder.py``; a Protocol because ops/ comes before the backends).

An emitter records a node's torch calls and returns the ``fx.Proxy`` of its first output; proxies
record what is done with them, so an emitter reads like the torch code it stands for. Every
argument it passes is a number, a list of numbers, a torch dtype or a string chosen from a fixed
set: no string from the model reaches the generated code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import onnx_ir as ir
from torch import fx, nn


class TorchBuilder(Protocol):
    """The builder's operations that emitters use."""

    def call(self, function: Callable, *args: Any) -> fx.Proxy:
        """``function(*args)`` as one node (a run-time helper, or a torch op not to be traced into)."""

    def input(self, node: ir.Node, index: int) -> ir.Value | None:
        """Input ``index`` of ``node``, or None when absent."""

    def array(self, value: ir.Value | None) -> np.ndarray | None:
        """The value of a constant operand, None for a computed one."""

    def x(self, node: ir.Node, index: int = 0) -> fx.Proxy:
        """The tensor of input ``index``."""

    def tensor(self, value: ir.Value) -> fx.Proxy:
        """A value's proxy (a constant's parameter or buffer, registered on first use)."""

    def operand(self, node: ir.Node, index: int) -> fx.Proxy | float | int | bool:
        """Like ``x``, but a non-learnable scalar constant becomes a Python number."""

    def ints(self, node: ir.Node, index: int, what: str) -> list[int] | None:
        """A constant int-vector input as a list; None when the input is absent."""

    def scalar(self, node: ir.Node, index: int, what: str) -> float | None:
        """A constant scalar input as a float; None when absent."""

    def rank(self, value: ir.Value) -> int:
        """The rank of ``value`` (an error when shape inference found none)."""

    def exclusive(self, node: ir.Node) -> bool:
        """Whether every constant input of ``node`` is used by it alone, so a module may own it."""

    def own(self, module: nn.Module, **onnx_values: ir.Value | None) -> Callable[..., fx.Proxy]:
        """Add ``module`` holding the given initializers; returns the function that records a call of it."""

    def bind(self, value: ir.Value, proxy: fx.Proxy) -> None:
        """Make ``proxy`` the tensor of ``value`` (a node's outputs after its first)."""

    def fold(self, value: ir.Value, array: np.ndarray) -> None:
        """Make ``value`` a constant: consumers read it like an initializer."""


Emitter = Callable[[TorchBuilder, ir.Node], "fx.Proxy | None"]
