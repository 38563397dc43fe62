"""What a training backend provides: one trainable object per program stage.

The runtime (``llcompile/train``) drives stages in order: ``train_step`` on a batch returns the
stage's loss, its classifier's number of correct predictions and the *detached* output
activation, which is the next stage's input. Backends know nothing of strategies; a stage is an
ONNX graph with inputs ``[input, labels]`` and outputs ``[loss, output]`` (see program.py).

State is exchanged by name as numpy arrays, so a program re-emitted with other boundaries can
continue from the same weights: parameter and buffer names are the ONNX initializer names;
optimizer slots are ``"<param>/<slot>"`` (``momentum_buffer``, ``exp_avg``, ``exp_avg_sq``) plus
``"<stage>/step"``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from llcompile.program.program import Program, Stage


@dataclass(frozen=True)
class OptimizerConfig:
    """The optimizer every stage uses; both backends implement exactly torch's update rules."""

    name: str = "sgd"  # sgd (momentum, optional Nesterov, coupled weight decay) | adamw
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8


@dataclass
class StepResult:
    loss: float
    # correct top-1 predictions of the stage's classifier (aux head or model head); of a head on every
    # k-th sample, its count on that subset scaled to the batch
    correct: float
    output: Any  # the stage's output activation, detached; backend-specific array type


def classifier_logits_name(stage: Stage, program: Program) -> str:
    """The tensor whose argmax is the stage's prediction: its aux head's logits, or the model's."""
    return stage.head.logits if stage.head else program.logits


def head_subsample(stage: Stage) -> int:
    """k when the stage's aux head trains on every k-th sample of the batch (``aux_subsample``), else 1."""
    return stage.head.every if stage.head else 1


def correct_on_batch(predictions: Any, labels: Any, every: int) -> float:
    """Correct ``predictions`` (argmax of the classifier) of every ``every``-th of ``labels``, scaled to
    the whole batch; numpy arrays or torch tensors."""
    chosen = labels[::every]
    return float((predictions == chosen).sum()) * len(labels) / len(chosen)


class RankMeans(ABC):
    """What data-parallel training (``--parallel data``) lends each stage to average its state over the ranks."""

    # the rank's CUDA device as torch's DistributedDataParallel takes it; None on the CPU
    device_ids: list[int] | None

    @abstractmethod
    def average_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Replace every array of ``arrays`` by its mean over the ranks, in one all-reduce."""

    @abstractmethod
    def mean_tensors(self, tensors: list) -> list:
        """Each torch tensor's mean over the ranks, in one all-reduce."""


class TrainableStage(ABC):
    name: str

    @abstractmethod
    def train_step(self, x: Any, labels: Any, lr: float, hold: frozenset[str] = frozenset()) -> StepResult:
        """Forward, backward and one optimizer step at learning rate ``lr`` (BN on batch statistics)
        of every parameter but those named in ``hold``, which stay as they are, their optimizer
        slots too (the optimizer's step count still advances, as its one count of the stage's steps)."""

    @abstractmethod
    def forward(self, x: Any) -> Any:
        """Inference output (BN on running statistics, no gradients); the logits for the last stage."""

    @abstractmethod
    def update_batch_statistics(self, x: Any, labels: Any) -> Any:
        """The stage's output with BN on batch statistics, its running statistics updated as a training
        step updates them; no weight, optimizer slot or step count changes (precise BN statistics)."""

    @abstractmethod
    def state(self) -> dict[str, np.ndarray]:
        """Parameters, buffers and optimizer slots by name (copies)."""

    def arrays(self, names) -> dict[str, np.ndarray]:
        """The named parameters and buffers (copies): what ``state`` holds of them, without the rest."""
        state = self.state()
        return {name: state[name] for name in names}

    @abstractmethod
    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Set every entry of ``state`` this stage has; ignore the others."""

    def join_ranks(self, ranks: RankMeans) -> None:
        """Data-parallel training, once: from now on each ``train_step`` averages the gradients over
        ``ranks`` before its optimizer step. A forward-only stage has no gradients: nothing to do."""

    def average_over_ranks(self, ranks: RankMeans) -> None:
        """Data-parallel training, after every ``train_step``: average over ``ranks`` what the step set
        without a gradient (a Hebbian stage's new weights). A stage trained by gradient: nothing to do."""

    @abstractmethod
    def reduced_bytes(self) -> int:
        """Bytes data-parallel training all-reduces per step for this stage: its gradients, or a
        Hebbian stage's new weights."""


class Backend(ABC):
    name: str

    @abstractmethod
    def build(self, program: Program, optimizer: OptimizerConfig) -> list[TrainableStage]:
        """One TrainableStage per program stage, in execution order, initialised from the graphs."""

    @abstractmethod
    def to_batch(self, x: np.ndarray, labels: np.ndarray) -> tuple[Any, Any]:
        """Move a batch (float32 NC..., int64 labels) to the backend's array type and device."""

    @abstractmethod
    def to_numpy(self, value: Any) -> np.ndarray:
        """Bring an output activation back as a numpy array."""
