"""The reconstruction term of an InfoPro-style local loss: a small decoder from a block's output back
to the block's input, and their mean squared error.

InfoPro (Wang et al., ICLR 2021) adds to each block's cross-entropy a term that asks the block's
output to keep the information of the *image*, decoded by two convolutions. A stage of an llcompile
program sees its own input only, so the decoder here reconstructs the block's input (for the first
block, the image): each block then keeps what it was given, and the chain keeps the image. The
decoder's width and the single weight are llcompile's choices, not InfoPro's (which weighs the
terms per block). A block whose output is a vector or a token tensor, or whose input's sizes are
not whole multiples of its output's, keeps the cross-entropy alone (``reconstructable``).
"""

from __future__ import annotations

import numpy as np
import onnx_ir as ir

from llcompile.errors import LLCompileError
from llcompile.frontend.graph_builder import GraphBuilder, uniform_fan_in
from llcompile.util.option_names import option_name

DECODER_MIN_CHANNELS = 16  # the decoder's middle width: the block input's channels, at least this many


def feature_map_dims(value: ir.Value) -> list[int] | None:
    """``[C, spatial...]`` of a feature map ``[N, C, spatial...]`` with known sizes, else None."""
    if value.shape is None or value.shape.rank() < 3:
        return None
    dims = list(value.shape)[1:]
    return dims if all(isinstance(d, int) for d in dims) else None


def reconstructable(output: ir.Value, target: ir.Value) -> bool:
    """Whether ``reconstruction_error`` applies: both feature maps of known sizes, of the same rank, the
    target's spatial sizes whole multiples of the output's."""
    out_dims, in_dims = feature_map_dims(output), feature_map_dims(target)
    return (out_dims is not None and in_dims is not None and len(out_dims) == len(in_dims)
            and all(o and i % o == 0 for i, o in zip(in_dims[1:], out_dims[1:])))


def reconstruction_error(b: GraphBuilder, output: ir.Value, target: ir.Value, rng: np.random.Generator,
                         stage: str) -> ir.Value:
    """The scalar mean of (decoder(output) - target)^2 over every element.

    The decoder: nearest-neighbour upsampling of ``output`` by the integer factor between the two
    tensors' spatial sizes (an Expand of size-1 axes, so no resampling op is needed), a 3x3 conv to
    ``max(C_in, DECODER_MIN_CHANNELS)`` channels, BN, ReLU, and a 3x3 conv to the target's channels.
    ``target`` is the stage's input, which no gradient reaches (the stage chain detaches it).
    """
    if not reconstructable(output, target):
        raise LLCompileError(f"{option_name('aux_loss', 'ce+recon')}: {stage}'s input {target.name!r} {target.shape} "
                             f"cannot be reconstructed from its output {output.name!r} {output.shape}")
    out_dims, in_dims = feature_map_dims(output), feature_map_dims(target)
    factors = [i // o for i, o in zip(in_dims[1:], out_dims[1:])]
    x = _upsample(b, output, out_dims, factors)
    middle = max(in_dims[0], DECODER_MIN_CHANNELS)
    spatial = len(factors)
    x = _conv3x3(b, x, "decoder.conv1", out_dims[0], middle, spatial, rng)
    x = b.batch_norm(x, "decoder.bn", middle)
    x = b.op("Relu", [x], "decoder.relu")
    x = _conv3x3(b, x, "decoder.conv2", middle, in_dims[0], spatial, rng, bias=True)
    error = b.op("Sub", [x, target], "recon_error")
    squared = b.op("Mul", [error, error], "recon_squared")
    return b.op("ReduceMean", [squared], "recon_loss", keepdims=0)


def _upsample(b: GraphBuilder, x: ir.Value, dims: list[int], factors: list[int]) -> ir.Value:
    """[N, C, d1, d2, ...] -> [N, C, d1*f1, d2*f2, ...], each value repeated f times along each axis:
    a size-1 axis after each spatial axis, broadcast to f by Expand, folded back by Reshape."""
    if all(f == 1 for f in factors):
        return x
    spatial = len(factors)
    axes = [3 + 2 * i for i in range(spatial)]
    x = b.op("Unsqueeze", [x, b.int64s("decoder.unsqueeze_axes", axes)], "decoder.unsqueeze")
    repeat = [1, 1] + [v for f in factors for v in (1, f)]
    x = b.op("Expand", [x, b.int64s("decoder.repeat", repeat)], "decoder.repeat")
    shape = [0, dims[0]] + [d * f for d, f in zip(dims[1:], factors)]  # 0: the batch, copied
    return b.op("Reshape", [x, b.int64s("decoder.upsampled_shape", shape)], "decoder.upsampled")


def _conv3x3(b: GraphBuilder, x: ir.Value, name: str, channels: int, out: int, spatial: int, rng,
             bias: bool = False) -> ir.Value:
    """A 3x3 conv over ``spatial`` axes, stride 1, padding 1 (sizes kept), drawn like torch's default init."""
    fan_in = channels * 3 ** spatial
    inputs = [x, b.initializer(f"{name}.weight", uniform_fan_in(rng, (out, channels) + (3,) * spatial, fan_in))]
    if bias:
        inputs.append(b.initializer(f"{name}.bias", uniform_fan_in(rng, (out,), fan_in)))
    return b.op("Conv", inputs, name, kernel_shape=[3] * spatial, pads=[1] * (2 * spatial))
