"""Torch autograd on an original module, as the reference for a compiled export's gradients."""

import numpy as np
import torch


def reference_gradients(module: torch.nn.Module, x: np.ndarray, labels: np.ndarray) -> list[tuple]:
    """(parameter value, its gradient) for every parameter of ``module``: cross-entropy of its output."""
    module.zero_grad()
    loss = torch.nn.functional.cross_entropy(module(torch.from_numpy(x)), torch.from_numpy(labels))
    loss.backward()
    return [(p.detach().numpy(), p.grad.numpy()) for p in module.parameters()]


def matching_gradient(value: np.ndarray, reference: list[tuple]) -> np.ndarray:
    """The torch gradient of the parameter whose value ``value`` is (exporters rename parameters and
    may transpose a Linear weight or reshape it), in ``value``'s layout."""
    for torch_value, grad in reference:
        if torch_value.shape == value.shape and np.array_equal(torch_value, value):
            return grad
        if torch_value.ndim == 2 and torch_value.T.shape == value.shape and np.array_equal(torch_value.T, value):
            return grad.T
        if torch_value.size == value.size and np.array_equal(torch_value.reshape(value.shape), value):
            return grad.reshape(value.shape)
    raise AssertionError(f"no torch parameter has the value of this {list(value.shape)} initializer")
