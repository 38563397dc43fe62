"""Export zoo models (or any single-input classifier) to ONNX."""

import contextlib
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import onnx
import onnx.numpy_helper
import torch
from torch import nn

from .registry import DEFAULT_INPUT_SHAPE, InputShape, build

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_DIM = "N"
EXPORT_MODES = ("training", "eval", "eval-unfolded", "dynamo")
MIN_DYNAMO_OPSET = 18
# Batch of the traced example when the batch dim is dynamic; more than 1 because
# train-mode BatchNorm1d needs more than one value per channel.
TRACE_BATCH = 2


def export(
    name_or_module: str | nn.Module,
    path: str | os.PathLike,
    num_classes: int = 10,
    input_shape: InputShape = DEFAULT_INPUT_SHAPE,
    mode: str = "training",
    opset: int = 17,
    batch_size: int | None = None,
) -> Path:
    """Write ``name_or_module`` to ``path`` as ONNX with input ``input`` and output ``logits``.

    Modes:
      training       TorchScript exporter, train mode: BatchNormalization(training_mode=1)
                     with its running-stat initializers, no constant folding.
      eval           TorchScript exporter, eval mode, constant folding (BN folded into Conv).
      eval-unfolded  TorchScript exporter, eval mode, BatchNormalization(training_mode=0) kept.
      dynamo         torch.export-based exporter in eval mode, opset >= 18; its optimizer
                     folds BN into Conv and the folded weights keep the conv's names.

    The batch dim is dynamic and named ``N`` unless ``batch_size`` is given. ``num_classes``
    and ``input_shape`` are used to build a registered model and to shape the example
    input. The module's parameters, buffers and train/eval flags are left as they were.
    The file is written atomically.
    """
    if mode not in EXPORT_MODES:
        raise ValueError(f"unknown export mode {mode!r}; choose one of {', '.join(EXPORT_MODES)}")
    if batch_size is not None and not (isinstance(batch_size, int) and batch_size > 0):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    if isinstance(name_or_module, str):
        model = build(name_or_module, num_classes, input_shape)
    else:
        model = name_or_module
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = _example_input(batch_size or TRACE_BATCH, input_shape)
    dynamic_batch = batch_size is None

    # Export into a scratch folder beside the target, then rename: readers never see a
    # partial file, and the exporter creates it with the usual umask permissions.
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as scratch:
        tmp = Path(scratch) / path.name
        with _preserved_state(model) as state_before, _quiet_exporter():
            if mode == "dynamo":
                _export_dynamo(model, example, tmp, max(opset, MIN_DYNAMO_OPSET), dynamic_batch)
            else:
                _export_torchscript(model, example, tmp, mode, opset, dynamic_batch)
        if mode != "dynamo":
            _fix_torchscript_initializers(tmp, mode, state_before)
        os.replace(tmp, path)
    return path


def _example_input(batch: int, input_shape: InputShape) -> torch.Tensor:
    # A private generator, so exporting does not advance the caller's global RNG.
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, *input_shape, generator=generator)


@contextlib.contextmanager
def _preserved_state(model: nn.Module) -> Iterator[dict[str, torch.Tensor]]:
    """Snapshot the state dict and train/eval flags, yield the snapshot, restore both on exit.

    A train-mode TorchScript export runs a forward pass, which updates BN running stats.
    """
    state = {key: value.detach().clone() for key, value in model.state_dict().items()}
    training_flags = {module: module.training for module in model.modules()}
    try:
        yield state
    finally:
        model.load_state_dict(state)
        for module, training in training_flags.items():
            module.training = training


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence deprecation/tracer warnings and the dynamo exporter's logging."""
    onnx_logger = logging.getLogger("torch.onnx")
    previous_level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        onnx_logger.setLevel(previous_level)


def _export_torchscript(
    model: nn.Module, example: torch.Tensor, path: Path, mode: str, opset: int, dynamic_batch: bool
) -> None:
    training = mode == "training"
    model.train(training)
    torch.onnx.export(
        model,
        (example,),
        str(path),
        dynamo=False,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        opset_version=opset,
        dynamic_axes=(
            {INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}} if dynamic_batch else None
        ),
        training=torch.onnx.TrainingMode.TRAINING if training else torch.onnx.TrainingMode.EVAL,
        do_constant_folding=mode == "eval",
    )


def _export_dynamo(
    model: nn.Module, example: torch.Tensor, path: Path, opset: int, dynamic_batch: bool
) -> None:
    model.eval()
    torch.onnx.export(
        model,
        (example,),
        str(path),
        dynamo=True,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        opset_version=opset,
        dynamic_shapes=({0: torch.export.Dim(BATCH_DIM)},) if dynamic_batch else None,
        external_data=False,  # one self-contained file, so the atomic rename covers everything
        verbose=False,  # no "[torch.onnx] ..." progress prints
    )


def _fix_torchscript_initializers(
    path: Path, mode: str, state_before: dict[str, torch.Tensor]
) -> None:
    """Make the file's initializers match the module as it was before export."""
    model = onnx.load(str(path))
    if mode == "training":
        _restore_state_initializers(model.graph, state_before)
    else:
        _unalias_initializers(model.graph)
    onnx.save(model, str(path))


def _restore_state_initializers(graph: onnx.GraphProto, state: dict[str, torch.Tensor]) -> None:
    """Overwrite initializers named after state-dict entries with the pre-export values.

    The train-mode trace captures BN running stats after its own forward pass has updated
    them; nothing is constant-folded in this mode, so a name match means the same tensor.
    """
    for initializer in graph.initializer:
        if initializer.name in state:
            value = state[initializer.name].numpy()
            initializer.CopyFrom(onnx.numpy_helper.from_array(value, initializer.name))


def _unalias_initializers(graph: onnx.GraphProto) -> None:
    """Undo the eval-mode exporter's deduplication of equal-valued initializers.

    It keeps one copy and turns the others into ``Identity`` nodes (a fresh model's BN
    running_var becomes ``Identity(bn.weight)``, as both are all ones); give each its own
    initializer again so every parameter and buffer stays independent.
    """
    initializers = {init.name: init for init in graph.initializer}
    graph_outputs = {output.name for output in graph.output}
    aliases = [
        node
        for node in graph.node
        if node.op_type == "Identity"
        and node.input[0] in initializers
        and node.output[0] not in graph_outputs
    ]
    for node in aliases:
        copy = graph.initializer.add()
        copy.CopyFrom(initializers[node.input[0]])
        copy.name = node.output[0]
        graph.node.remove(node)
