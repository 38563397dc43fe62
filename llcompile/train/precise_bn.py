"""Precise BatchNormalization statistics: each BN's running mean and variance recomputed as their means
over N training batches (as ``torch.optim.swa_utils.update_bn`` and pycls' precise BN do) before an
evaluation and before the trained model is written.

After a few dozen steps the running statistics (an exponential average with momentum 0.9 over
batches whose weights kept changing) describe early weights; evaluated with them, a briefly trained
model can score near chance although it fits the training data. The recomputation changes nothing
that training reads but those buffers.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx

from llcompile.backends.base import Backend, TrainableStage
from llcompile.program.program import Program

ONNX_DEFAULT_MOMENTUM = 0.9


def running_statistics(program: Program) -> dict[str, float]:
    """Every training-form BatchNormalization's running mean and var buffer -> the node's momentum
    (ONNX's: running = momentum x running + (1 - momentum) x the batch's); a BN with momentum 1 never
    updates them, and is left out."""
    momenta = {}
    for stage in program.stages:
        for node in stage.model.graph.node:
            attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            momentum = float(attributes.get("momentum", ONNX_DEFAULT_MOMENTUM))
            if node.op_type == "BatchNormalization" and attributes.get("training_mode", 0) == 1 and momentum < 1:
                momenta.update({node.input[3]: momentum, node.input[4]: momentum})
    return momenta


def precise_batch_statistics(stages: list[TrainableStage], program: Program, backend: Backend,
                             batches: Iterable[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """The mean over ``batches`` of each BN's batch mean and (unbiased) batch variance, by buffer name,
    the batches run through the stage chain with BN on batch statistics. A batch's statistics are read
    from the running ones its forward writes from zero: (1 - momentum) x the batch's. The stages'
    buffers are left at the last batch's; load the result into them."""
    momenta = running_statistics(program)
    zeros = [{name: np.zeros_like(value) for name, value in stage.state().items() if name in momenta}
             for stage in stages]
    sums: dict[str, np.ndarray] = {}
    count = 0
    for x, labels in batches:
        activation, batch_labels = backend.to_batch(x, labels)
        for stage, zero in zip(stages, zeros):
            stage.load_state(zero)
            activation = stage.update_batch_statistics(activation, batch_labels)
            state = stage.state()
            for name in zero:
                batch = state[name] / np.float32(1.0 - momenta[name])
                sums[name] = sums[name] + batch if name in sums else batch
        count += 1
    return {name: (total / count).astype(np.float32) for name, total in sums.items()}
