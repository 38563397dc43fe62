"""AveragePool, and its decomposition for onnxruntime-training: a depthwise Conv with a constant kernel.

ORT 1.19's AveragePoolGrad CPU kernel sizes its output from the graph's static shape of the
pool's input (``InferOutputShapes`` in ``pool_gradient_op.cc`` reads ``dim_value``), and a
symbolic batch dimension reads as 0: the training step then dies of a floating-point exception
or, when that gradient is summed with another branch's (a ResNet-D shortcut), fails with
"Sum node 'AccumulateGrad_...' ... Can broadcast 0 by 0 or 1". ConvGrad takes its shapes from
its inputs. Every AveragePool is the window sum (a Conv with a kernel of ones over zero padding)
times a per-position factor, 1 / divisor; the factors are taken from onnxruntime running the
original node on ones, so ceil_mode, count_include_pad and auto_pad mean what they meant.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import onnx_ir as ir
import torch
import torch.nn.functional as F
from onnx import helper
from torch import fx

from llcompile.errors import LLCompileError
from llcompile.ops.attributes import ints_attr
from llcompile.ops.onnx_nodes import constant_node, element_dtype
from llcompile.ops.padding import fits_torch_pool, spatial_padding
from llcompile.ops.registry import Backward, ElementOps, Keeps, OpFacts, Role, no_macs, register
from llcompile.ops.torch_builder import TorchBuilder
from llcompile.util.ort_session import session

ONES_OPSET = 19  # AveragePool-19 (dilations) reads every earlier AveragePool's attributes the same way


def _average_pool(g: TorchBuilder, node: ir.Node) -> fx.Proxy:
    kernel = ints_attr(node, "kernel_shape", [])
    dims = len(kernel)
    strides = ints_attr(node, "strides", [1] * dims)
    if any(d != 1 for d in ints_attr(node, "dilations", [1] * dims)):  # opset 19; torch has none
        raise LLCompileError(f"AveragePool {node.name!r}: dilations are not supported")
    ceil_mode = bool(node.attributes.get_int("ceil_mode", 0))
    count_include_pad = bool(node.attributes.get_int("count_include_pad", 0))
    fits = functools.partial(fits_torch_pool, kernel=kernel, dilations=[1] * dims)
    x, padding, explicit = spatial_padding(g, node, g.x(node), kernel, 0.0, fits)
    pool = functools.partial((F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[dims - 1], kernel_size=kernel,
                             stride=strides, padding=padding, ceil_mode=ceil_mode,
                             count_include_pad=count_include_pad)
    if not explicit or count_include_pad:
        return pool(x)
    # Explicit zero padding would count in torch's mean: divide by the mean of a padded ones-mask.
    ones = torch.ones_like(g.x(node).narrow(0, 0, 1).narrow(1, 0, 1))
    padded_ones, _, _ = spatial_padding(g, node, ones, kernel, 0.0, fits)
    return pool(x) / pool(padded_ones)


def decompose_average_pool(node: ir.Node) -> list[ir.Node]:
    x = node.inputs[0]
    channels, spatial = _channels_and_spatial(node)
    dtype = element_dtype(x)
    mean = _pool_of_ones(node, spatial)
    attributes = _conv_attributes(node, spatial, list(mean.shape[2:]))
    window_sum = _window_sum_of_ones(attributes, spatial)
    # the count of input elements in each window over that window's divisor (0 where it holds none)
    scale = np.divide(mean, window_sum, out=np.zeros_like(mean), where=window_sum > 0)
    uniform = bool(np.all(scale == scale.flat[0]))
    weight = np.full((channels, 1, *attributes["kernel_shape"]), scale.flat[0] if uniform else 1, dtype=dtype)
    weight_node = constant_node(weight)
    conv = ir.Node("", "Conv", [x, weight_node.outputs[0]],
                   attributes=ir.convenience.convert_attributes({**attributes, "group": channels}))
    if uniform:
        return [weight_node, conv]
    scale_node = constant_node(scale.astype(dtype))
    return [weight_node, conv, scale_node, ir.Node("", "Mul", [conv.outputs[0], scale_node.outputs[0]])]


def _channels_and_spatial(node: ir.Node) -> tuple[int, list[int]]:
    shape = node.inputs[0].shape
    dims = list(shape.dims)[1:] if shape is not None else []
    if len(dims) < 2 or not all(isinstance(d, int) for d in dims):
        raise LLCompileError(f"AveragePool {node.name!r}: the ort backend needs its input's channels and "
                             "spatial size to be static; use the torch backend")
    return dims[0], dims[1:]


def _conv_attributes(node: ir.Node, spatial: list[int], out: list[int]) -> dict:
    """The Conv over the pool's ``out`` windows: same kernel, strides, dilations and padding, with
    the end padding grown so that ceil_mode's last, partial windows exist (Conv has no ceil_mode)."""
    a = node.attributes
    kernel = list(a.get_ints("kernel_shape"))
    rank = len(kernel)
    strides = list(a.get_ints("strides", [1] * rank))
    dilations = list(a.get_ints("dilations", [1] * rank))
    attributes = {"kernel_shape": kernel, "strides": strides, "dilations": dilations}
    auto_pad = a.get_string("auto_pad", "NOTSET")
    if auto_pad != "NOTSET":  # SAME_* and VALID mean the same for Conv; ceil_mode does not apply
        return {**attributes, "auto_pad": auto_pad}
    pads = list(a.get_ints("pads", [0] * 2 * rank))
    for i in range(rank):
        reach = (out[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1
        pads[rank + i] = max(pads[rank + i], reach - spatial[i] - pads[i])
    return {**attributes, "pads": pads}


def _pool_of_ones(node: ir.Node, spatial: list[int]) -> np.ndarray:
    """onnxruntime's output of the pool node on a ``[1, 1, *spatial]`` tensor of ones."""
    proto = ir.serde.serialize_node(node)
    del proto.input[:], proto.output[:]
    proto.input.append("x")
    proto.output.append("y")
    return _run_on_ones(proto, [], spatial)


def _window_sum_of_ones(conv_attributes: dict, spatial: list[int]) -> np.ndarray:
    """The Conv with a kernel of ones on ``[1, 1, *spatial]`` ones: the input elements in each window."""
    weight = onnx.numpy_helper.from_array(np.ones((1, 1, *conv_attributes["kernel_shape"]), np.float32), "w")
    return _run_on_ones(helper.make_node("Conv", ["x", "w"], ["y"], **conv_attributes), [weight], spatial)


def _run_on_ones(node: onnx.NodeProto, initializers: list[onnx.TensorProto], spatial: list[int]) -> np.ndarray:
    shape = [1, 1, *spatial]
    graph = helper.make_graph([node], "ones", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ONES_OPSET)])
    model.ir_version = 9
    return session(model).run(None, {"x": np.ones(shape, np.float32)})[0]


register(OpFacts("AveragePool", Role.STRUCTURAL, _average_pool, no_macs, ElementOps.PER_WINDOW, Backward(Keeps.INPUT),
                 ort_rewrite=decompose_average_pool))
