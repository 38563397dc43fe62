"""Pooling: MaxPool, GlobalAveragePool, GlobalMaxPool (AveragePool has its own file: average_pool.py)."""

from __future__ import annotations

import functools
from collections.abc import Callable

import onnx_ir as ir
import torch
import torch.nn.functional as F
from torch import fx

from llcompile.ops.attributes import ints_attr
from llcompile.ops.padding import fits_torch_pool, spatial_padding
from llcompile.ops.registry import (INDEX_BYTES, Backward, ElementOps, Keeps, OpFacts, Role, SavedTensors, no_macs,
                                    register)
from llcompile.ops.torch_builder import Emitter, TorchBuilder


def _max_pool(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    kernel = ints_attr(node, "kernel_shape", [])
    dims = len(kernel)
    strides, dilations = ints_attr(node, "strides", [1] * dims), ints_attr(node, "dilations", [1] * dims)
    ceil_mode = bool(node.attributes.get_int("ceil_mode", 0))
    fits = functools.partial(fits_torch_pool, kernel=kernel, dilations=dilations)
    x, padding, _ = spatial_padding(g, node, g.x(node), kernel, float("-inf"), fits)
    pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[dims - 1]
    return pool(x, kernel, strides, padding, dilations, ceil_mode)


def _indices(node: ir.Node, saved: SavedTensors) -> None:
    saved.keep("indices", saved.value_bytes(node.outputs[0], INDEX_BYTES))


def _global_pool(function: Callable) -> Emitter:
    def emit(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
        spatial = list(range(2, g.rank(node.inputs[0])))
        return function(g.x(node), spatial, keepdim=True)
    return emit


register(OpFacts("MaxPool", Role.STRUCTURAL, _max_pool, no_macs, ElementOps.PER_WINDOW,
                 Backward(Keeps.INPUT, _indices)))
register(OpFacts("GlobalAveragePool", Role.STRUCTURAL, _global_pool(torch.mean), no_macs, ElementOps.PER_INPUT,
                 Backward(Keeps.NOTHING)))
register(OpFacts("GlobalMaxPool", Role.STRUCTURAL, _global_pool(torch.amax), no_macs, ElementOps.PER_INPUT,
                 Backward(Keeps.INPUT_AND_OUTPUT)))
