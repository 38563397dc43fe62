"""The ort backend's forward-only Hebbian stage: an inference session that also returns the new weights.

The stage graph's parameters and BatchNormalization statistics become graph inputs, fed from a
numpy store at every step; the session returns the activation, the ``HebbianUpdate`` results
and the new running statistics, which are written back into the store. No training session,
no gradient graph, no stored activations.
"""

from __future__ import annotations

import numpy as np
import onnx

from llcompile.backends.base import RankMeans, StepResult, TrainableStage
from llcompile.backends.ort.artifacts import (check_batch_statistics, running_stats, state_value,
                                              unbiased_running_var)
from llcompile.util.ort_errors import ort_error
from llcompile.program.program import Stage
from llcompile.util.ort_session import session
from llcompile.frontend.canonical.training_mode import with_training_mode


class OrtHebbianStage(TrainableStage):
    def __init__(self, stage: Stage, threads: int = 0):
        self.name = stage.name
        self._input, self._lr_input, self._output = stage.input, stage.lr_input, stage.output
        self._updates = dict(stage.updates)
        self._stats = running_stats(stage.model)
        state_names = list(stage.params) + list(stage.buffers)
        self._store = {t.name: onnx.numpy_helper.to_array(t).copy()
                       for t in stage.model.graph.initializer if t.name in set(state_names)}
        stat_outputs = [name for s in self._stats for name in (s.new_mean, s.new_var)]
        self._train_outputs = [self._output, *self._updates.values(), *stat_outputs]
        self._threads = threads
        self._train = session(_with_state_inputs(stage.model, self._store, self._train_outputs), threads)
        # the steps without an update (--hebbian-every): the activation and BN statistics only (ORT
        # drops the rest); built on first use, since a session has its own memory arena
        self._model = stage.model
        self._forward_outputs = [self._output, *stat_outputs]
        self._forward = None
        # the eval graph returns the activation only: ORT then drops the update computation
        self._eval = session(_with_state_inputs(with_training_mode(stage.model, training=False), self._store,
                                                [self._output]), threads)

    def train_step(self, x: np.ndarray, labels: np.ndarray, lr: float, update: bool = True) -> StepResult:
        """``lr`` is the localized learning rate; BN uses (and updates) batch statistics. Without
        ``update`` the weights stay and their update is not computed."""
        if not update:
            return StepResult(loss=float("nan"), correct=0, output=self.update_batch_statistics(x, labels))
        check_batch_statistics(self.name, self._stats, len(x))
        feeds = {self._input: x, self._lr_input: np.asarray(lr, dtype=np.float32), **self._store}
        output, *rest = self._run(self._train, self._train_outputs, feeds)
        new_weights, new_stats = rest[:len(self._updates)], rest[len(self._updates):]
        self._store.update(zip(self._updates, new_weights))
        self._write_running_stats(new_stats, len(x))
        return StepResult(loss=float("nan"), correct=0, output=output)

    def update_batch_statistics(self, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
        check_batch_statistics(self.name, self._stats, len(x))
        if self._forward is None:
            self._forward = session(_with_state_inputs(self._model, self._store, self._forward_outputs),
                                    self._threads)
        feeds = {self._input: x, self._lr_input: np.zeros((), np.float32), **self._store}
        output, *new_stats = self._run(self._forward, self._forward_outputs, feeds)
        self._write_running_stats(new_stats, len(x))
        return output

    def _write_running_stats(self, new_stats: list[np.ndarray], batch: int) -> None:
        for stats, new_mean, new_var in zip(self._stats, new_stats[0::2], new_stats[1::2]):
            new_var = unbiased_running_var(new_var, self._store[stats.var], stats, batch)
            self._store[stats.mean], self._store[stats.var] = new_mean, new_var

    def forward(self, x: np.ndarray) -> np.ndarray:
        feeds = {self._input: x, self._lr_input: np.zeros((), np.float32), **self._store}
        return self._run(self._eval, [self._output], feeds)[0]

    def state(self) -> dict[str, np.ndarray]:
        return {name: value.copy() for name, value in self._store.items()}

    def updated_weights(self) -> dict[str, np.ndarray]:
        """The weights a step's ``HebbianUpdate`` rewrites, by name (copies)."""
        return {name: self._store[name].copy() for name in self._updates}

    def average_over_ranks(self, ranks: RankMeans) -> None:
        weights = self.updated_weights()
        ranks.average_arrays(weights)
        self.load_state(weights)

    def reduced_bytes(self) -> int:
        return sum(array.nbytes for array in self.updated_weights().values())

    def _run(self, session, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return session.run(outputs, feeds)
        except Exception as exc:  # onnxruntime's exception types derive from Exception only
            raise ort_error(f"stage {self.name}: onnxruntime failed", exc) from exc

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        for name, current in self._store.items():
            if name in state:
                self._store[name] = state_value(self.name, name, state[name], current)


def _with_state_inputs(model: onnx.ModelProto, state: dict[str, np.ndarray], outputs: list[str]) -> onnx.ModelProto:
    """``model`` with the initializers named in ``state`` turned into graph inputs and exactly
    ``outputs`` as graph outputs (types from shape inference)."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    kept = [t for t in model.graph.initializer if t.name not in state]
    moved = [onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
             for t in model.graph.initializer if t.name in state]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    model.graph.input.extend(moved)
    typed = onnx.shape_inference.infer_shapes(model).graph
    values = {v.name: v for v in [*typed.value_info, *typed.output]}
    del model.graph.output[:]
    model.graph.output.extend(values[name] for name in outputs)
    return model
