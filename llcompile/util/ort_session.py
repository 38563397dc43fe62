"""onnxruntime inference sessions as llcompile opens them: quiet, on the CPU, with a known thread count,
and without the graph optimisation that breaks training-form BatchNormalization."""

from __future__ import annotations

import onnx
import onnx_ir as ir
import onnxruntime as ort


def session_options(threads: int = 0) -> ort.SessionOptions:
    """Quiet options; ``threads`` for the operators (0: onnxruntime's default, every core)."""
    options = ort.SessionOptions()
    options.log_severity_level = 4  # fatal only: llcompile reports a failed run itself, in one line
    options.intra_op_num_threads = threads
    return options


def session(model: onnx.ModelProto | ir.Model, threads: int = 0) -> ort.InferenceSession:
    """A CPU session with ``session_options(threads)``."""
    if isinstance(model, ir.Model):
        model = ir.to_proto(model)
    options = session_options(threads)
    # ORT 1.19's ConstantSharing merges equal initializers (a fresh BN's weight and running_var are
    # both ones); a training-mode BN then updates the shared buffer and its output goes wrong.
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=["ConstantSharing"])
