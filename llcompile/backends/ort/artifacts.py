"""onnxruntime-training artifacts for one stage graph, generated once and cached by content.

``generate_artifacts`` writes a training model (forward + gradient graph), an eval model and a
checkpoint holding the initial weights. The runtime re-emits programs whenever block boundaries
move, so the artifacts are cached under a hash of the stage graph (weights included) and of
everything else that shapes them; an unchanged stage is never regenerated.

Fixes for onnxruntime-training 1.19.2, applied here so that the backend gets loadable files:
- a model-local function on the gradient path breaks the gradient builder: functions are inlined;
- some ops have no gradient builder (HardSigmoid, HardSwish, PRelu, Elu, Softplus, LRN, Sum,
  ReduceMax/Min) or a wrong one (Gelu's tanh approximation), Dropout's needs its optional mask
  output, and AveragePool's gradient kernel breaks on a symbolic batch: they are rewritten into ops
  that work (``backends/ort/decompose.py``);
- SoftmaxCrossEntropyLoss's gradient needs its log_prob output, which ORT adds only in some graphs,
  and LayerNormalization's its mean and inverse-std-dev outputs: they are added here;
- ORT 1.19 refuses IR versions above 10: the IR version is capped;
- the eval model's BatchNormalization gets ``training_mode=0`` but keeps its running-mean/var
  outputs, which ORT then rejects: they are dropped (and with them the graph outputs they fed).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx.inliner
import onnx_ir as ir
import onnxruntime
from onnxruntime.training import artifacts

from llcompile.util.cache_dir import cache_root
from llcompile.errors import LLCompileError
from llcompile.util.ort_errors import ort_error
from llcompile.backends.ort.decompose import DecomposeForOrtPass

TRAINING_MODEL = "training_model.onnx"
EVAL_MODEL = "eval_model.onnx"
CHECKPOINT = "checkpoint"
MAX_IR_VERSION = 10
# Part of the cache key: bump it whenever the generation or the fixes below change.
ARTIFACTS_FORMAT = 4


@dataclass(frozen=True)
class RunningStats:
    """One training-mode BatchNormalization's running statistics and the outputs that update them."""

    mean: str  # the buffers (initializers)
    var: str
    new_mean: str  # the node's running_mean and running_var outputs
    new_var: str
    momentum: float  # ONNX convention: new = momentum * old + (1 - momentum) * batch statistic
    values_per_sample: int  # values per channel in one sample: the product of the spatial dims
    every: int = 1  # it sees every k-th sample of the batch (an aux head on a subset)

    def values(self, batch: int) -> int:
        """Values per channel it normalises in a batch of ``batch`` samples."""
        return -(-batch // self.every) * self.values_per_sample


def running_stats(model: onnx.ModelProto, every: dict[str, int] | None = None) -> list[RunningStats]:
    """The running statistics of every training-mode BatchNormalization in ``model``; ``every``: running
    mean -> k for one that sees every k-th sample of the batch."""
    nodes = [n for n in model.graph.node if n.op_type == "BatchNormalization" and _attribute(n, "training_mode", 0)]
    if not nodes:
        return []
    shapes = _value_shapes(onnx.shape_inference.infer_shapes(model))
    stats = []
    for node in nodes:
        if len(node.output) < 3 or not all(node.output[1:3]):
            raise LLCompileError(f"BatchNormalization {node.name!r}: training form needs its running_mean "
                                 "and running_var outputs")
        shape = shapes.get(node.input[0])
        spatial = shape[2:] if shape else [None]
        if not all(isinstance(d, int) for d in spatial):
            raise LLCompileError(f"BatchNormalization {node.name!r}: the ort backend needs static spatial "
                                 "dimensions to update the running variance")
        stats.append(RunningStats(mean=node.input[3], var=node.input[4], new_mean=node.output[1],
                                  new_var=node.output[2], momentum=_attribute(node, "momentum", 0.9),
                                  values_per_sample=int(np.prod(spatial, dtype=np.int64)),
                                  every=(every or {}).get(node.input[3], 1)))
    return stats


def check_batch_statistics(stage: str, stats: list[RunningStats], batch: int) -> None:
    """Refuse a batch too small to train BatchNormalization (torch refuses it too; here the unbiased
    variance would divide by zero)."""
    if any(s.values(batch) < 2 for s in stats):
        raise LLCompileError(f"stage {stage}: BatchNormalization needs more than one value per channel "
                             f"to train (got a batch of {batch})")


def state_value(stage: str, name: str, value: np.ndarray, current: np.ndarray) -> np.ndarray:
    """``value`` from a state dict, as the contiguous array that replaces ``current`` (same shape)."""
    value = np.ascontiguousarray(value, dtype=current.dtype)
    if value.shape != current.shape:
        raise LLCompileError(f"stage {stage}: {name} has shape {list(value.shape)} in the state, "
                             f"{list(current.shape)} in the stage")
    return value


def unbiased_running_var(ort_running_var: np.ndarray, old_running_var: np.ndarray, stats: RunningStats,
                         batch: int) -> np.ndarray:
    """ORT updates the running variance with the biased batch variance, torch with the unbiased one.

    ORT: ``new = m * old + (1 - m) * var_biased``; torch: ``(1 - m) * var_biased * n / (n - 1)`` in
    place of that last term, n values per channel. The difference is ``(new - m * old) / (n - 1)``.
    """
    n = stats.values(batch)
    momentum = np.float32(stats.momentum)
    return ort_running_var + (ort_running_var - momentum * old_running_var) / np.float32(n - 1)


def default_cache_dir() -> Path:
    return cache_root() / "ort-artifacts"


def stage_artifacts(model: onnx.ModelProto, params: list[str], extra_outputs: list[str], cache_dir: Path) -> Path:
    """The artifact directory for ``model`` trained in ``params``, returning ``extra_outputs`` after
    the loss and the graph's other outputs; generated unless already in ``cache_dir``."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / _cache_key(model, params, extra_outputs)
    if target.is_dir():
        return target
    scratch = Path(tempfile.mkdtemp(prefix=".generating-", dir=cache_dir))
    try:
        _generate(model, params, extra_outputs, scratch)
        os.replace(scratch, target)  # atomic: readers see complete directories only
    except OSError:
        if not target.is_dir():  # another process may have put the same artifacts in place first
            raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _generate(model: onnx.ModelProto, params: list[str], extra_outputs: list[str], directory: Path) -> None:
    model = _trainable_copy(model)
    float_initializers = [t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    frozen = [name for name in float_initializers if name not in set(params)]
    try:
        with _native_stderr_discarded():
            artifacts.generate_artifacts(model, requires_grad=list(params), frozen_params=frozen, loss=None,
                                         optimizer=None, artifact_directory=directory,
                                         additional_output_names=list(extra_outputs) or None)
    except Exception as exc:  # the gradient builder raises RuntimeError or ORT's own Fail types
        raise ort_error(f"onnxruntime-training cannot build the training graph of {model.graph.name!r} "
                        "(the torch backend may train it)", exc) from exc
    _fix_eval_model(directory / EVAL_MODEL)
    _cap_ir_version(directory / TRAINING_MODEL)


def _trainable_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    if model.functions:
        model = onnx.inliner.inline_local_functions(model)
    # shapes first: the AveragePool rewrite reads its input's channels and spatial size
    model = ir.serde.serialize_model(
        DecomposeForOrtPass()(ir.serde.deserialize_model(onnx.shape_inference.infer_shapes(model))).model)
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    _add_saved_outputs(model)
    return model


# op -> how many outputs its gradient builder reads (optional ones the exporters leave out)
_OUTPUTS_FOR_GRADIENT = {"SoftmaxCrossEntropyLoss": 2, "LayerNormalization": 3}


def _add_saved_outputs(model: onnx.ModelProto) -> None:
    """Give SoftmaxCrossEntropyLoss its log_prob and LayerNormalization its mean and inv_std_var
    outputs, which their gradients read.

    ORT's graph optimizer is meant to add log_prob, but in 1.19 it only does so in some graphs
    (with BatchNormalization, not in a BN-folded ResNet); the gradient builder then fails with
    "GradientBuilderBase::O(size_t) ... i < node_->OutputDefs().size() was false".
    """
    names = {name for node in model.graph.node for name in (*node.input, *node.output)}
    for node in model.graph.node:
        wanted = _OUTPUTS_FOR_GRADIENT.get(node.op_type, 0)
        for index in range(len(node.output), wanted):
            saved = _unique_name(f"{node.output[0]}_saved_{index}", names)
            node.output.append(saved)
            names.add(saved)


def _unique_name(name: str, taken: set[str]) -> str:
    candidate, index = name, 1
    while candidate in taken:
        candidate, index = f"{name}_{index}", index + 1
    return candidate


def _fix_eval_model(path: Path) -> None:
    """Give the eval model's inference-form BatchNormalization its single output."""
    model = onnx.load(path)
    dropped = set()
    for node in model.graph.node:
        if node.op_type == "BatchNormalization" and not _attribute(node, "training_mode", 0):
            dropped.update(node.output[1:])
            del node.output[1:]
    outputs = [o for o in model.graph.output if o.name not in dropped]
    del model.graph.output[:]
    model.graph.output.extend(outputs)
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    onnx.save(model, path)


def _cap_ir_version(path: Path) -> None:
    model = onnx.load(path)
    if model.ir_version > MAX_IR_VERSION:
        model.ir_version = MAX_IR_VERSION
        onnx.save(model, path)


def _cache_key(model: onnx.ModelProto, params: list[str], extra_outputs: list[str]) -> str:
    digest = hashlib.sha256(model.SerializeToString())
    for part in (str(ARTIFACTS_FORMAT), onnxruntime.__version__, *params, "|", *extra_outputs):
        digest.update(b"\0" + part.encode())
    return digest.hexdigest()[:32]


@contextlib.contextmanager
def _native_stderr_discarded() -> Iterator[None]:
    """Silence what ORT's C++ code prints to file descriptor 2: its graph optimizer logs every
    transformer at INFO level whatever the configured severity. Python exceptions still propagate."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _attribute(node: onnx.NodeProto, name: str, default):
    return next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _value_shapes(model: onnx.ModelProto) -> dict[str, list[int | str | None]]:
    values = [*model.graph.input, *model.graph.value_info, *model.graph.output]
    return {v.name: [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                     for d in v.type.tensor_type.shape.dim] for v in values}
