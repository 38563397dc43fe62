"""torch.optim.SGD and torch.optim.AdamW in numpy, operation for operation, in float32.

The ORT backend computes gradients with onnxruntime-training and updates the weights here: ORT's
own optimizers do not implement torch's rules (its SGD has no momentum), and the runtime needs both
backends to train a program identically. The rules follow torch's single-tensor code paths
(``_single_tensor_sgd``; ``_single_tensor_adam`` with ``decoupled_weight_decay``), including the
order of the float32 operations, so results agree to rounding.

Optimizer slots are keyed ``"<param>/<slot>"`` as in ``llcompile.backends.base``; like torch's
state they exist only once a parameter has taken a step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from llcompile.backends.base import OptimizerConfig
from llcompile.errors import LLCompileError


class NumpyOptimizer(ABC):
    slot_names: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.steps = 0
        self._slots: dict[str, np.ndarray] = {}

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float) -> dict[str, np.ndarray]:
        """The updated value of every parameter in ``params``."""
        self.steps += 1
        lr = float(lr)  # a numpy float64 would promote the float32 arithmetic to float64
        return {name: self._update(name, param, grads[name], lr) for name, param in params.items()}

    @abstractmethod
    def _update(self, name: str, param: np.ndarray, grad: np.ndarray, lr: float) -> np.ndarray:
        """The new value of ``param``; the arguments are read, never written."""

    def state(self) -> dict[str, np.ndarray]:
        return {key: value.copy() for key, value in self._slots.items()}

    def load_state(self, state: dict[str, np.ndarray], params: list[str]) -> None:
        """Take the slots of ``params`` found in ``state``."""
        for param in params:
            for slot in self.slot_names:
                key = f"{param}/{slot}"
                if key in state:
                    self._slots[key] = np.array(state[key], dtype=np.float32)


class SGD(NumpyOptimizer):
    """torch.optim.SGD(momentum, nesterov, weight_decay), dampening 0."""

    slot_names = ("momentum_buffer",)

    def __init__(self, momentum: float, nesterov: bool, weight_decay: float) -> None:
        super().__init__()
        self.momentum = float(momentum)
        self.nesterov = nesterov
        self.weight_decay = float(weight_decay)

    def _update(self, name, param, grad, lr):
        direction = grad + self.weight_decay * param if self.weight_decay else grad
        if self.momentum:
            key = f"{name}/momentum_buffer"
            buffer = self._slots.get(key)
            # a copy, as torch's clone: the caller may reuse its gradient array
            buffer = direction.copy() if buffer is None else buffer * self.momentum + direction
            self._slots[key] = buffer
            direction = direction + self.momentum * buffer if self.nesterov else buffer
        return param - lr * direction


class AdamW(NumpyOptimizer):
    """torch.optim.AdamW(betas, eps, weight_decay): decoupled decay, bias-corrected moments."""

    slot_names = ("exp_avg", "exp_avg_sq")

    def __init__(self, betas: tuple[float, float], eps: float, weight_decay: float) -> None:
        super().__init__()
        self.beta1, self.beta2 = map(float, betas)
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)

    def _update(self, name, param, grad, lr):
        if self.weight_decay:
            param = param * (1 - lr * self.weight_decay)
        exp_avg = self._slots.get(f"{name}/exp_avg", np.zeros_like(param))
        exp_avg_sq = self._slots.get(f"{name}/exp_avg_sq", np.zeros_like(param))
        exp_avg = exp_avg + (1 - self.beta1) * (grad - exp_avg)  # torch's lerp for weights < 0.5
        exp_avg_sq = exp_avg_sq * self.beta2 + (1 - self.beta2) * grad * grad
        self._slots[f"{name}/exp_avg"] = exp_avg
        self._slots[f"{name}/exp_avg_sq"] = exp_avg_sq
        # the bias corrections are Python floats (float64), as in torch
        step_size = lr / (1 - self.beta1 ** self.steps)
        denominator = np.sqrt(exp_avg_sq) / (1 - self.beta2 ** self.steps) ** 0.5 + self.eps
        return param + (-step_size * exp_avg) / denominator  # addcdiv: (value * t1) / t2


def make_optimizer(config: OptimizerConfig) -> NumpyOptimizer:
    if config.name == "sgd":
        return SGD(config.momentum, config.nesterov, config.weight_decay)
    if config.name == "adamw":
        return AdamW(config.betas, config.eps, config.weight_decay)
    raise LLCompileError(f"unknown optimizer {config.name!r}; choose sgd or adamw")
