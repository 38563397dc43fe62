"""The torch backend: each stage is a generated module (``builder.py``) trained by a torch optimizer.

A stage runs eagerly, as TorchScript (``mode="script"``) or through ``torch.compile``; in every
mode the eager module keeps the mapping from ONNX names to its parameters and buffers, which
the scripted/compiled one shares, so ``state()``/``load_state()`` work the same in all three.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from llcompile.backends.base import (Backend, OptimizerConfig, RankMeans, StepResult, TrainableStage,
                                     classifier_logits_name, correct_on_batch, head_subsample)
from llcompile.backends.torch.builder import build_module
from llcompile.backends.torch.module import StageModule
from llcompile.backends.torch.hebbian import share_state
from llcompile.errors import LLCompileError
from llcompile.program.program import Program, Stage
from llcompile.util.option_names import option_name

MODES = ("eager", "script", "compile")
# Optimizer slots exchanged as "<param>/<slot>", per optimizer.
OPTIMIZER_SLOTS = {torch.optim.SGD: ("momentum_buffer",), torch.optim.AdamW: ("exp_avg", "exp_avg_sq")}


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, device: str | torch.device = "cpu", mode: str = "eager"):
        if mode not in MODES:
            raise LLCompileError(f"unknown torch backend mode {mode!r}; choose one of: {', '.join(MODES)}")
        self.device = _checked_device(device)
        self.mode = mode

    def build(self, program: Program, optimizer: OptimizerConfig) -> list[TrainableStage]:
        return [self._build_stage(stage, program, optimizer) for stage in program.stages]

    def to_batch(self, x: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.from_numpy(x).to(self.device, non_blocking=True),
                torch.from_numpy(labels).to(self.device, non_blocking=True))

    def to_numpy(self, value: torch.Tensor) -> np.ndarray:
        return value.detach().cpu().numpy()

    def _build_stage(self, stage: Stage, program: Program, config: OptimizerConfig) -> TrainableStage:
        if stage.updates is not None:
            module = build_module(stage.model, [stage.output, *stage.updates.values()])
            module.to(self.device)
            forward_only = build_module(stage.model, [stage.output])  # the steps without an update
            forward_only.to(self.device)  # its constants; parameters and buffers become the module's
            share_state(module, forward_only)
            return HebbianTorchStage(stage.name, module, self._runner(module), self._runner(forward_only),
                                     list(stage.updates))
        module = build_module(stage.model, [stage.loss, stage.output, classifier_logits_name(stage, program)])
        module.freeze(set(stage.buffers))
        module.to(self.device)
        return TorchStage(stage.name, module, self._runner(module), make_optimizer(config, module),
                          head_subsample(stage))

    def _runner(self, module: StageModule) -> nn.Module:
        if self.mode == "script":
            with warnings.catch_warnings():  # TorchScript is deprecated upstream, and says so
                warnings.simplefilter("ignore", DeprecationWarning)
                return torch.jit.script(module)
        if self.mode == "compile":
            return torch.compile(module)
        return module


def _checked_device(device: str | torch.device) -> torch.device:
    try:
        checked = torch.device(device)
    except RuntimeError:
        raise LLCompileError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if checked.type == "cuda":
        if not torch.cuda.is_available():
            raise LLCompileError(f"this torch has no usable CUDA device; train on {option_name('device', 'cpu')}")
        if checked.index is not None and checked.index >= torch.cuda.device_count():
            raise LLCompileError(f"{device}: there are {torch.cuda.device_count()} CUDA devices")
    elif checked.type != "cpu":
        raise LLCompileError(f"device {device!r} is not supported; use cpu, cuda or cuda:N")
    return checked


def make_optimizer(config: OptimizerConfig, module: StageModule) -> torch.optim.Optimizer:
    """torch's own optimizer over the module's trained parameters; the lr is set at every step."""
    params = [p for p in module.onnx_parameters().values() if p.requires_grad]
    if config.name == "sgd":
        # Nesterov needs momentum: without it, plain SGD is what the config describes.
        return torch.optim.SGD(params, lr=0.0, momentum=config.momentum,
                               nesterov=config.nesterov and config.momentum > 0, weight_decay=config.weight_decay)
    if config.name == "adamw":
        return torch.optim.AdamW(params, lr=0.0, betas=config.betas, eps=config.eps,
                                 weight_decay=config.weight_decay)
    raise LLCompileError(f"unknown optimizer {config.name!r}; choose sgd or adamw")


class TorchStage(TrainableStage):
    """One stage: ``module`` owns the state by ONNX name, ``runner`` (the module, its TorchScript or
    its torch.compile wrapper, sharing the module's tensors) computes ``(loss, output, logits)``; the
    logits are of every ``head_every``-th sample."""

    def __init__(self, name: str, module: StageModule, runner: nn.Module, optimizer: torch.optim.Optimizer,
                 head_every: int = 1):
        self.name = name
        self.head_every = head_every
        self.module = module
        self.runner = runner
        self.optimizer = optimizer
        self.steps = 0  # optimizer steps taken; AdamW's bias correction counts them

    def train_step(self, x: torch.Tensor, labels: torch.Tensor, lr: float,
                   hold: frozenset[str] = frozenset()) -> StepResult:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.runner.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss, output, logits = self.runner(x, labels)
        loss.backward()
        if hold:
            parameters = self.module.onnx_parameters()
            for name in hold:
                parameters[name].grad = None  # torch's optimizers skip a parameter without a gradient, its slots too
        if isinstance(self.optimizer, torch.optim.AdamW):
            self._count_steps_by_stage()
        self.optimizer.step()
        self.steps += 1
        correct = correct_on_batch(logits.reshape(logits.shape[0], -1).argmax(1), labels, self.head_every)
        # detach(): the output is the next stage's input, and no gradient crosses a boundary
        return StepResult(loss=loss.item(), correct=correct, output=output.detach())

    def update_batch_statistics(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.runner.train()
        with torch.no_grad():
            return self.runner(x, labels)[1]

    def _count_steps_by_stage(self) -> None:
        """AdamW's bias correction counts the stage's steps, as the ort backend's optimizer does, not
        each parameter's own: a parameter held for a while, or new to the stage (a head after a
        boundary move), would count fewer and take larger first steps on one backend only."""
        for param in (p for group in self.optimizer.param_groups for p in group["params"]):
            if param.grad is None:
                continue
            state = self.optimizer.state[param]
            if not state:  # as torch initialises it, but at the stage's count
                state.update(exp_avg=torch.zeros_like(param, memory_format=torch.preserve_format),
                             exp_avg_sq=torch.zeros_like(param, memory_format=torch.preserve_format))
            state["step"] = torch.tensor(float(self.steps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.runner.eval()
        with torch.no_grad():
            # the graph's loss needs labels; its value is not used here
            labels = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
            _, output, _ = self.runner(x, labels)
        return output

    def state(self) -> dict[str, np.ndarray]:
        state = self.module.onnx_state()
        for name, param in self.module.onnx_parameters().items():
            slots = self.optimizer.state.get(param, {})
            for slot in OPTIMIZER_SLOTS[type(self.optimizer)]:
                if isinstance(slots.get(slot), torch.Tensor):
                    state[f"{name}/{slot}"] = slots[slot].detach().cpu().numpy().copy()
        state[f"{self.name}/step"] = np.array(self.steps, dtype=np.int64)
        return state

    def arrays(self, names) -> dict[str, np.ndarray]:
        return self.module.onnx_state(names)

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        if f"{self.name}/step" in state:
            self.steps = int(state[f"{self.name}/step"])
        self.module.load_onnx_state(state)
        slot_names = OPTIMIZER_SLOTS[type(self.optimizer)]
        for name, param in self.module.onnx_parameters().items():
            slots = {slot: state[f"{name}/{slot}"] for slot in slot_names if f"{name}/{slot}" in state}
            if len(slots) != len(slot_names):  # absent (or incomplete): the slots start fresh
                continue
            param_state = self.optimizer.state[param]
            param_state.update({slot: torch.from_numpy(np.array(value)).to(param.device)
                                for slot, value in slots.items()})  # AdamW's step: set at every step

    def join_ranks(self, ranks: RankMeans) -> None:
        # broadcast_buffers=False: only rank 0 evaluates, so forward must not wait for the others
        self.runner = DistributedDataParallel(self.runner, device_ids=ranks.device_ids, broadcast_buffers=False)

    def reduced_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.module.parameters() if p.requires_grad)


class HebbianTorchStage(TrainableStage):
    """A forward-only stage: no autograd graph, no stored activations; the graph's new weights
    (``HebbianUpdate``) are copied into the parameters after the forward pass."""

    def __init__(self, name: str, module: StageModule, runner: nn.Module, forward_only: nn.Module,
                 updated: list[str]):
        self.name = name
        self.module = module
        self.runner = runner
        self.forward_only = forward_only  # the activation alone, on the same tensors
        parameters = module.onnx_parameters()
        self.updated = [parameters[weight] for weight in updated]

    def train_step(self, x: torch.Tensor, labels: torch.Tensor, lr: float, update: bool = True) -> StepResult:
        """``lr`` is the localized learning rate; BN uses (and updates) batch statistics. Without
        ``update`` the weights stay and their update is not computed."""
        if not update:
            return StepResult(loss=float("nan"), correct=0, output=self.update_batch_statistics(x, labels))
        self.runner.train()
        with torch.no_grad():
            output, *new_weights = self.runner(x, torch.tensor(lr, dtype=torch.float32, device=x.device))
            for parameter, value in zip(self.updated, new_weights):
                parameter.copy_(value)
        return StepResult(loss=float("nan"), correct=0, output=output)

    def update_batch_statistics(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.forward_only.train()
        with torch.no_grad():
            return self.forward_only(x, torch.zeros((), dtype=torch.float32, device=x.device))[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.runner.eval()
        with torch.no_grad():
            return self.runner(x, torch.zeros((), dtype=torch.float32, device=x.device))[0]

    def state(self) -> dict[str, np.ndarray]:
        return self.module.onnx_state()

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        self.module.load_onnx_state(state)

    def average_over_ranks(self, ranks: RankMeans) -> None:
        with torch.no_grad():
            for parameter, mean in zip(self.updated, ranks.mean_tensors([p.data for p in self.updated])):
                parameter.copy_(mean)

    def reduced_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.updated)
