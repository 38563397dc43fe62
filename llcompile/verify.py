"""Run a program's stage graphs in order with onnxruntime and compare with the source model.

This is the executable definition of "the program computes what the model computes": each
stage's ``output`` is fed to the next stage's ``input``; the last stage's output must equal the
source model's output.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from llcompile.passes.batchnorm_mode import BatchNormModePass
from llcompile.program import Program


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def with_batchnorm_mode(model: onnx.ModelProto, training: bool) -> onnx.ModelProto:
    ir_model = ir.from_proto(model)
    BatchNormModePass(training=training)(ir_model)
    return ir.to_proto(ir_model)


def run_stage_chain(program: Program, x: np.ndarray, labels: np.ndarray | None = None,
                    batchnorm_training: bool = True) -> tuple[np.ndarray, dict[str, float]]:
    """The final output and every stage's loss for input ``x``.

    ``batchnorm_training=False`` runs BatchNormalization on its running statistics (as the eval
    model does); True runs the stage graphs as written, with batch statistics.
    """
    if labels is None:
        labels = np.zeros(x.shape[0], dtype=np.int64)
    activation = x
    losses = {}
    for stage in program.stages:
        model = stage.model if batchnorm_training else with_batchnorm_mode(stage.model, training=False)
        loss, activation = session(model).run([stage.loss, stage.output],
                                              {stage.input: activation, stage.labels: labels})
        losses[stage.name] = float(loss)
    return activation, losses


def run_model(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = session(model)
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(actual - expected)) / max(float(np.max(np.abs(expected))), 1e-12))
