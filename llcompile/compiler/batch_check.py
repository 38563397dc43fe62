"""Prove at transform time that a program compiled from a static-batch export runs at any batch.

torch's default exporter writes the example's batch into the graph (the input ``[2, 3, 32, 32]``,
Reshape targets, expanded tokens); canonicalisation makes the batch symbolic
(``frontend/canonical/dynamic_batch.py``), but a constant it does not recognise still carries the
exported batch. Rather than trust the rewrite, the compiled stage chain runs at two batch sizes that
are not multiples of the exported one and is compared, sample by sample, with the source model run
at its own batch; a program that fails is refused, never emitted.
"""

from __future__ import annotations

import numpy as np
import onnx

from llcompile.compiler.verify import DEFAULT_TOLERANCE, relative_error, run_model, run_stage_chain, static_batch
from llcompile.errors import LLCompileError, ModelError
from llcompile.frontend.canonical.training_mode import with_training_mode
from llcompile.program.program import Program

REEXPORT = ("re-export it with a dynamic batch (torch.onnx.export(..., dynamic_shapes=...) with a Dim for the "
            "batch, or dynamo=False with dynamic_axes)")


def check_any_batch(program: Program, source: onnx.ModelProto, name: str, seed: int = 0) -> None:
    """Raise LLCompileError unless ``program``'s stage chain, in inference form at batches B + 1 and
    2B + 1 (B the source's static batch), equals the source run in chunks of B on the same samples,
    and its training form runs at B + 1 with outputs of that batch. Nothing to prove without a static
    batch."""
    batch = static_batch(source)
    if batch is None:
        return
    sizes = (batch + 1, 2 * batch + 1)
    rng = np.random.default_rng(seed)
    samples = rng.standard_normal([sizes[-1], *program.input["shape"][1:]]).astype(np.float32)
    reference_model = with_training_mode(source, training=False)
    padded = np.concatenate([samples, samples[:(-len(samples)) % batch]])  # whole chunks of B
    reference = np.concatenate([run_model(reference_model, padded[i:i + batch])
                                for i in range(0, len(padded), batch)])
    labels = rng.integers(0, program.num_classes, sizes[-1]).astype(np.int64)
    for size in sizes:
        try:
            output, _ = run_stage_chain(program, samples[:size], labels[:size], training_form=False)
        except LLCompileError as exc:
            raise _refusal(name, batch, size, str(exc)) from None
        if output.shape[0] != size:
            raise _refusal(name, batch, size, f"its output has a batch of {output.shape[0]}")
        error = relative_error(output, reference[:size])
        if not error <= DEFAULT_TOLERANCE:
            raise _refusal(name, batch, size, f"its outputs differ from the model's by {error:.1e} (relative)")
    try:
        output, losses = run_stage_chain(program, samples[:sizes[0]], labels[:sizes[0]], training_form=True)
    except LLCompileError as exc:
        raise _refusal(name, batch, sizes[0], f"training: {exc}") from None
    if output.shape[0] != sizes[0] or not all(np.isfinite(list(losses.values()))):
        raise _refusal(name, batch, sizes[0], "training: its losses or outputs do not have that batch")


def _refusal(name: str, batch: int, size: int, why: str) -> ModelError:
    return ModelError(f"{name} was exported with a static batch of {batch}, and the program compiled from it "
                      f"does not compute the model at batch {size} ({why}): a constant in the graph still "
                      f"carries the exported batch; {REEXPORT}")
