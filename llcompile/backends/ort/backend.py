"""The onnxruntime-training backend: each stage graph trained by an ORT training ``Module``.

ORT computes the forward pass and the gradients; everything stateful that must match torch is
done here, on the ``CheckpointState`` that the training and eval sessions share:

- the optimizer step is numpy (``numpy_optimizers``: torch's SGD and AdamW rules), read from
  each parameter's ``.grad`` and written back into ``state.parameters[name].data``;
- BatchNormalization's running statistics are not updated by ORT training: the training graph
  returns the new running mean/var as extra outputs and they are written back into the state,
  the variance corrected to torch's unbiased batch variance;
- ``forward`` runs ORT's eval model, which reads the same state, so it always sees the current
  weights and running statistics without any copying.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime
from onnxruntime.training.api import CheckpointState, Module

from llcompile.backends.base import (Backend, OptimizerConfig, RankMeans, StepResult, TrainableStage,
                                     classifier_logits_name, correct_on_batch, head_subsample)
from llcompile.backends.ort.numpy_optimizers import make_optimizer
from llcompile.backends.ort.artifacts import (CHECKPOINT, EVAL_MODEL, TRAINING_MODEL, RunningStats,
                                              check_batch_statistics, default_cache_dir, running_stats,
                                              stage_artifacts, state_value, unbiased_running_var)
from llcompile.backends.ort.hebbian import OrtHebbianStage
from llcompile.errors import LLCompileError
from llcompile.util.ort_errors import ort_error
from llcompile.program.program import Program, Stage
from llcompile.util.ort_session import session_options

NO_CUDA = "the installed onnxruntime-training has no CUDA support; use the torch backend for GPU training"


class OrtBackend(Backend):
    name = "ort"

    def __init__(self, device: str = "cpu", cache_dir: str | Path | None = None, threads: int = 0) -> None:
        self.device = _checked_device(device)
        self.threads = threads  # per session; 0: every core
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()

    def build(self, program: Program, optimizer: OptimizerConfig) -> list[TrainableStage]:
        if self.device != "cpu" and any(stage.updates is not None for stage in program.stages):
            raise LLCompileError("the ort backend runs Hebbian stages on the CPU only; use the torch backend")
        return [OrtHebbianStage(stage, self.threads) if stage.updates is not None else
                OrtStage(stage, classifier_logits_name(stage, program), optimizer, self.device, self.cache_dir,
                         self.threads)
                for stage in program.stages]

    def to_batch(self, x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(labels, dtype=np.int64)

    def to_numpy(self, value: np.ndarray) -> np.ndarray:
        return value


class OrtStage(TrainableStage):
    """One stage graph: an ORT training Module (training and eval sessions) over one CheckpointState,
    plus the numpy optimizer; ``logits`` is the tensor whose argmax is the stage's prediction."""

    def __init__(self, stage: Stage, logits: str, optimizer: OptimizerConfig, device: str = "cpu",
                 cache_dir: Path | None = None, threads: int = 0) -> None:
        self.name = stage.name
        self._output = stage.output
        self._logits = logits
        self._params = list(stage.params)
        self._buffers = list(stage.buffers)
        self._head_every = head_subsample(stage)
        # a head's BatchNormalization on every k-th sample sees ceil(batch / k) of them
        self._running_stats = running_stats(stage.model, {name: self._head_every for name in
                                                          (stage.head.buffers if stage.head else [])})
        directory = stage_artifacts(stage.model, self._params, _extra_outputs(stage, logits, self._running_stats),
                                    cache_dir or default_cache_dir())
        try:
            self._state = CheckpointState.load_checkpoint(str(directory / CHECKPOINT))
            self._module = Module(directory / TRAINING_MODEL, self._state, directory / EVAL_MODEL, device=device,
                                  session_options=session_options(threads))
        except Exception as exc:  # ORT raises RuntimeError or its own Fail types
            raise ort_error(f"stage {self.name}: onnxruntime-training cannot load its training graph", exc) from exc
        self._train_outputs = _output_positions(self._module, training=True)
        self._eval_outputs = _output_positions(self._module, training=False)
        self._optimizer = make_optimizer(optimizer)
        # set by join_ranks (--parallel data): averages the gradients over the ranks, in place, before the step
        self._reduce_gradients: Callable[[dict[str, np.ndarray]], None] | None = None

    def train_step(self, x: np.ndarray, labels: np.ndarray, lr: float,
                   hold: frozenset[str] = frozenset()) -> StepResult:
        check_batch_statistics(self.name, self._running_stats, len(x))
        self._module.lazy_reset_grad()  # ORT accumulates gradients across steps unless told not to
        outputs = self._run(True, x, labels)
        self._apply_optimizer(lr, hold)
        self._update_running_stats(outputs, len(x))
        logits = outputs[self._train_outputs[self._logits]]
        return StepResult(loss=float(outputs[0]),
                          correct=correct_on_batch(logits.reshape(len(logits), -1).argmax(1), labels, self._head_every),
                          output=outputs[self._train_outputs[self._output]])

    def update_batch_statistics(self, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """A training run of the stage (onnxruntime-training computes the gradients too) without the
        optimizer's step; the next ``train_step`` resets the gradients."""
        check_batch_statistics(self.name, self._running_stats, len(x))
        outputs = self._run(True, x, labels)
        self._update_running_stats(outputs, len(x))
        return outputs[self._train_outputs[self._output]]

    def forward(self, x: np.ndarray) -> np.ndarray:
        labels = np.zeros(len(x), dtype=np.int64)  # the eval graph still computes the loss; it is unused
        return self._run(False, x, labels)[self._eval_outputs[self._output]]

    def state(self) -> dict[str, np.ndarray]:
        parameters = self._state.parameters
        values = {name: parameters[name].data.copy() for name in self._params + self._buffers}
        values.update(self._optimizer.state())
        values[f"{self.name}/step"] = np.array(self._optimizer.steps, dtype=np.int64)
        return values

    def arrays(self, names) -> dict[str, np.ndarray]:
        parameters = self._state.parameters
        return {name: parameters[name].data.copy() for name in names}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        for name in self._params + self._buffers:
            if name in state:
                self._write(name, state[name])
        self._optimizer.load_state(state, self._params)
        if f"{self.name}/step" in state:
            self._optimizer.steps = int(state[f"{self.name}/step"])

    def join_ranks(self, ranks: RankMeans) -> None:
        self._reduce_gradients = ranks.average_arrays

    def reduced_bytes(self) -> int:
        return sum(array.nbytes for array in self.gradients().values())

    def gradients(self) -> dict[str, np.ndarray]:
        """The gradient of every parameter in the last ``train_step`` (copies; zeros before the first)."""
        parameters = self._state.parameters
        return {name: parameters[name].grad.copy() for name in self._params}

    def _run(self, training: bool, x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
        self._module.train(training)
        try:
            return self._module(x, labels)
        except Exception as exc:  # ORT raises RuntimeError or its own Fail types
            step = "a training step" if training else "a forward pass"
            raise ort_error(f"stage {self.name}: onnxruntime-training failed in {step}", exc) from exc

    def _apply_optimizer(self, lr: float, hold: frozenset[str]) -> None:
        parameters = self._state.parameters
        values = {name: parameters[name].data for name in self._params if name not in hold}
        gradients = self.gradients()
        if self._reduce_gradients is not None:
            self._reduce_gradients(gradients)
        for name, value in self._optimizer.step(values, gradients, lr).items():
            parameters[name].data = value

    def _update_running_stats(self, outputs: tuple[np.ndarray, ...], batch: int) -> None:
        parameters = self._state.parameters
        for stats in self._running_stats:
            new_var = unbiased_running_var(outputs[self._train_outputs[stats.new_var]],
                                            parameters[stats.var].data, stats, batch)
            parameters[stats.mean].data = outputs[self._train_outputs[stats.new_mean]]
            parameters[stats.var].data = new_var

    def _write(self, name: str, value: np.ndarray) -> None:
        parameter = self._state.parameters[name]
        parameter.data = state_value(self.name, name, value, parameter.data)


def _extra_outputs(stage: Stage, logits: str, stats: list[RunningStats]) -> list[str]:
    """What the training graph must return besides its own outputs ``[loss, output]``."""
    wanted = [logits, *(name for s in stats for name in (s.new_mean, s.new_var))]
    return [name for name in dict.fromkeys(wanted) if name not in (stage.loss, stage.output)]


def _output_positions(module: Module, training: bool) -> dict[str, int]:
    """Output name -> its first position in the training or eval model's outputs."""
    module.train(training)
    names = module.output_names()
    return {name: names.index(name) for name in names}


def _checked_device(device: str) -> str:
    kind = device.split(":")[0]
    if kind == "cuda" and "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        raise LLCompileError(NO_CUDA)
    if kind not in ("cpu", "cuda"):
        raise LLCompileError(f"unknown device {device!r} for the ort backend; use cpu or cuda")
    return device
