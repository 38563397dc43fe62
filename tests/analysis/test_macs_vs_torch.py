"""llcompile's forward MAC counts agree with an independent count made on the torch module.

The torch-side count hooks every nn.Conv1d/2d/3d and nn.Linear, runs one eval-mode forward
on a batch-1 zero input and computes, per module,
  Conv:   out.numel() * (in_channels // groups) * prod(kernel_size)
  Linear: out.numel() * in_features
(batch 1, so out.numel() is per sample). MACs do not depend on the weights, so the ONNX file
is the session's export of the same architecture (the ``zoo_file`` fixture).
"""

import math

import pytest
import torch
from torch import nn

import llcompile
from llcompile.models import build, list_models

COUNTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def torch_macs(module: nn.Module, input_shape) -> list[int]:
    """Per-module MACs of one sample through ``module`` (one entry per hooked call)."""
    counts: list[int] = []

    def hook(mod, _inputs, out):
        if isinstance(mod, nn.Linear):
            counts.append(out.numel() * mod.in_features)
        else:
            counts.append(out.numel() * (mod.in_channels // mod.groups) * math.prod(mod.kernel_size))

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, COUNTED)]
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(torch.zeros(1, *input_shape))
    finally:
        module.train(was_training)
        for h in handles:
            h.remove()
    return counts


def check(name: str, input_shape, zoo_file):
    expected = torch_macs(build(name, num_classes=10, input_shape=tuple(input_shape)), input_shape)
    analysis = llcompile.analyze(llcompile.load(zoo_file(name, input_shape=tuple(input_shape))))
    got = [layer.macs for layer in analysis.layers]
    assert expected, f"{name}: no Conv/Linear modules were hooked"
    assert analysis.macs == sum(expected), (
        f"{name} {input_shape}: llcompile total {analysis.macs:,} != torch total {sum(expected):,}")
    assert sorted(got) == sorted(expected), (
        f"{name} {input_shape}: per-layer MACs differ\n llcompile: {sorted(got)}\n torch:     {sorted(expected)}")
    assert {layer.op for layer in analysis.layers} <= {"Conv", "DepthwiseConv", "GroupedConv", "Gemm", "MatMul"}


@pytest.mark.parametrize("name", list(list_models()))
def test_macs_match_torch_default_shape(name, zoo_file):
    check(name, (3, 32, 32), zoo_file)


@pytest.mark.parametrize("name", ["resnet20", "small_cnn", "mlp"])
def test_macs_match_torch_other_shape(name, zoo_file):
    check(name, (1, 8, 8), zoo_file)
