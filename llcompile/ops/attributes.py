"""ONNX attributes and constants as the values generated torch code may hold: Python numbers, int
lists, torch dtypes, and strings picked from a fixed set (never the model's own string)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx_ir as ir
import torch

from llcompile.errors import LLCompileError

INTEGER_TYPES = frozenset({ir.DataType.INT8, ir.DataType.INT16, ir.DataType.INT32, ir.DataType.INT64,
                           ir.DataType.UINT8})
TORCH_DTYPES = {
    ir.DataType.FLOAT: torch.float32, ir.DataType.DOUBLE: torch.float64, ir.DataType.FLOAT16: torch.float16,
    ir.DataType.BFLOAT16: torch.bfloat16, ir.DataType.INT8: torch.int8, ir.DataType.INT16: torch.int16,
    ir.DataType.INT32: torch.int32, ir.DataType.INT64: torch.int64, ir.DataType.UINT8: torch.uint8,
    ir.DataType.BOOL: torch.bool,
}


def number(value: float | int | bool) -> float | int | bool:
    """A Python number for a numpy scalar; a float32 value as its shortest decimal."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    return decimal_float(value)


def decimal_float(value: float) -> float:
    """A float32 value as the shortest decimal that rounds to it (0.9, not 0.8999999762)."""
    return float(str(np.float32(value)))


def torch_dtype(array: np.ndarray) -> torch.dtype:
    """The torch dtype of ``array``'s elements."""
    return torch.from_numpy(np.empty(0, array.dtype)).dtype


def ints_attr(node: ir.Node, name: str, default: list[int]) -> list[int]:
    """An ints attribute as Python ints."""
    return [int(v) for v in node.attributes.get_ints(name, default)]


def float_attr(node: ir.Node, name: str, default: float) -> float:
    """A float attribute as its shortest decimal."""
    return number(node.attributes.get_float(name, default))


def choice(node: ir.Node, name: str, default: str, choices: dict[str, Any]) -> Any:
    """What string attribute ``name`` selects in ``choices``; the model's string itself goes no further."""
    value = node.attributes.get_string(name, default)
    if value not in choices:
        raise LLCompileError(f"{node.op_type} {node.name!r}: {name}={value!r} is not supported "
                             f"(expected one of: {', '.join(choices)})")
    return choices[value]
