"""Sharing one stage's state between the torch modules of a Hebbian stage (the module that updates
the weights and the forward-only one of its steps without an update, ``--hebbian-every``)."""

from __future__ import annotations

import itertools

from torch import nn


def share_state(source: nn.Module, target: nn.Module) -> None:
    """Make ``target``'s parameters and buffers the very tensors of ``source``'s with the same ONNX
    names (both ``StageModule``s of one stage graph): the module that computes the activation alone
    then reads the weights the updating one writes, and updates the same BN statistics."""
    tensors = {**source.onnx_parameters(), **source.onnx_buffers()}
    paths = {id(t): path for path, t in itertools.chain(target.named_parameters(), target.named_buffers())}
    for name, own in {**target.onnx_parameters(), **target.onnx_buffers()}.items():
        parent, _, leaf = paths[id(own)].rpartition(".")
        module = target.get_submodule(parent)
        slots = module._parameters if leaf in module._parameters else module._buffers  # noqa: SLF001
        slots[leaf] = tensors[name]
