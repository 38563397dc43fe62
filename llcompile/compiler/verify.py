"""Run a program's stage graphs in order with onnxruntime and compare with the source model.

This is the executable definition of "the program computes what the model computes": each
stage's ``output`` is fed to the next stage's ``input``; the last stage's output must equal the
source model's output.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import onnx

from llcompile.errors import LLCompileError
from llcompile.frontend.importer import ModelSource, file_sha256, read_model_proto, read_source
from llcompile.util.ort_errors import ort_error
from llcompile.util.ort_session import session
from llcompile.frontend.canonical.training_mode import with_training_mode
from llcompile.program.program import Program
from llcompile.util.option_names import option_name


def run_graph(model: onnx.ModelProto, outputs: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """``session(model).run(outputs, feeds)``; onnxruntime's refusal (a model it cannot load, an input
    of the wrong shape) as a one-line error naming the graph."""
    try:
        return session(model).run(outputs, feeds)
    except Exception as exc:  # onnxruntime's exception types derive from Exception only
        raise ort_error(f"onnxruntime cannot run {model.graph.name!r}", exc) from exc


def run_stage_chain(program: Program, x: np.ndarray, labels: np.ndarray | None = None,
                    training_form: bool = True) -> tuple[np.ndarray, dict[str, float]]:
    """The final output and every trained stage's loss for input ``x``.

    ``training_form=False`` runs the stages in inference form (BatchNormalization on running
    statistics, Dropout off, as the eval model does); True runs the stage graphs as written.
    A Hebbian stage runs with a learning rate of 0 (its new weights are not used here).
    """
    if labels is None:
        labels = np.zeros(x.shape[0], dtype=np.int64)
    activation = x
    losses = {}
    for stage in program.stages:
        model = stage.model if training_form else with_training_mode(stage.model, training=False)
        if stage.updates is not None:
            (activation,) = run_graph(model, [stage.output],
                                      {stage.input: activation, stage.lr_input: np.zeros((), np.float32)})
            continue
        loss, activation = run_graph(model, [stage.loss, stage.output], {stage.input: activation, stage.labels: labels})
        losses[stage.name] = float(loss)
    return activation, losses


def run_model(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The first output of ``model`` on ``x``, fed to its one non-initializer input."""
    return run_graph(model, None, {_data_input(model).name: x})[0]


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(actual - expected)) / max(float(np.max(np.abs(expected))), 1e-12))


DEFAULT_TOLERANCE = 1e-4  # float32 through other kernels: rounding, not a different computation


@dataclass(frozen=True)
class Verification:
    """``verify``'s result: the relative error of each check and the largest one accepted."""

    errors: dict[str, float]
    tolerance: float

    @property
    def worst(self) -> float:
        return max(self.errors.values())

    @property
    def ok(self) -> bool:
        return self.worst <= self.tolerance


def verify(program: Program | str | os.PathLike, model: ModelSource | None = None, batch_size: int = 4,
           tolerance: float = DEFAULT_TOLERANCE, seed: int = 0) -> Verification:
    """Check that ``program`` (a Program or its directory), its stages chained, computes what its source
    model computes, on a random batch: ``model`` (a path, bytes, ``onnx.ModelProto`` or ``onnx_ir.Model``),
    or by default the file ``program.json`` records when it is unchanged (its sha256).

    Always in inference form (BatchNormalization on running statistics, Dropout off): the stage
    chain and the eval model against the source with its mode-dependent ops in inference form.
    When the source is a training-mode export without Dropout, also the stage chain as written
    (batch statistics) against the untouched source.
    """
    where = "the program" if isinstance(program, Program) else os.fspath(program)
    if not isinstance(program, Program):
        program = Program.load(program)
    source = read_source(model)[0] if model is not None else _recorded_source(program, where)
    rng = np.random.default_rng(seed)
    batch = static_batch(source) or batch_size
    x = rng.standard_normal([batch, *program.input["shape"][1:]]).astype(np.float32)
    labels = rng.integers(0, program.num_classes, batch).astype(np.int64)
    reference = run_model(with_training_mode(source, training=False), x)
    chain, _ = run_stage_chain(program, x, labels, training_form=False)
    errors = {"stage chain vs source (inference)": relative_error(chain, reference),
              "eval_model vs source (inference)": relative_error(run_model(program.eval_model, x), reference)}
    op_types = {node.op_type for node in source.graph.node}
    source_trains_bn = any(node.op_type == "BatchNormalization" and any(
        a.name == "training_mode" and a.i == 1 for a in node.attribute) for node in source.graph.node)
    if source_trains_bn and "Dropout" not in op_types:
        chain, _ = run_stage_chain(program, x, labels, training_form=True)
        errors["stage chain vs source (batch statistics)"] = relative_error(chain, run_model(source, x))
    return Verification(errors, tolerance)


def _recorded_source(program: Program, program_dir) -> onnx.ModelProto:
    """The source model ``program.json`` names, read only when it is the very file compiled from
    (its sha256 matches): a program from elsewhere cannot point verify at another file."""
    recorded = program.source if isinstance(program.source, dict) else {}
    path, sha256 = recorded.get("path"), recorded.get("sha256")
    if not isinstance(path, str) or not isinstance(sha256, str):
        raise LLCompileError(f"{program_dir}: the program records no source model; pass {option_name('model')}")
    if not os.path.isfile(path) or file_sha256(path) != sha256:
        raise LLCompileError(f"{program_dir}: the recorded source model {path!r} is missing or is not the file the "
                             f"program was compiled from; pass {option_name('model')}")
    return read_model_proto(path)


def static_batch(model: onnx.ModelProto) -> int | None:
    """The data input's batch size when the export fixed it, else None."""
    dims = _data_input(model).type.tensor_type.shape.dim
    return dims[0].dim_value if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0 else None


def _data_input(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    """The first graph input that is not an initializer."""
    initializers = {t.name for t in model.graph.initializer}
    return next(v for v in model.graph.input if v.name not in initializers)
