"""The public compile entry point: ONNX model -> training Program."""

from __future__ import annotations

import os

import onnx_ir as ir
from onnx_ir.passes import common as ir_common

from llcompile.emit import emit
from llcompile.importer import file_sha256, load
from llcompile.passes import TrainingModePass
from llcompile.passes.pipeline import run_passes
from llcompile.program import Program
from llcompile.strategies import build_pipeline


def transform(model: str | os.PathLike | ir.Model, strategy: str = "dbl", *, blocks: int | None = None,
              cuts: list[str] | None = None, aux_head: str | None = None, seed: int | None = None) -> Program:
    """Compile ``model`` (a path or a canonical ir.Model from ``llcompile.load``) with ``strategy``.

    Options left at None take the strategy's defaults; an option the strategy does not take is an
    error. ``program.options`` records the options given.
    """
    options = {k: v for k, v in dict(blocks=blocks, cuts=cuts, aux_head=aux_head, seed=seed).items()
               if v is not None}
    passes = build_pipeline(strategy, **options)
    if isinstance(model, ir.Model):
        source = {"path": None, "sha256": None}
    else:
        source = {"path": os.path.abspath(model), "sha256": file_sha256(model) if os.path.isfile(model) else None}
        model = load(model)
    eval_model = _clone(model)
    run_passes([TrainingModePass(training=False), ir_common.RemoveUnusedNodesPass()], eval_model)
    training_model = _clone(model)
    training_model = run_passes(passes, training_model).model
    return emit(training_model, eval_model, strategy, options, source)


def _clone(model: ir.Model) -> ir.Model:
    """A copy whose graph can be rewritten independently (tensors are shared, not copied)."""
    return ir.Model(model.graph.clone(), ir_version=model.ir_version, producer_name=model.producer_name,
                    producer_version=model.producer_version, metadata_props=dict(model.metadata_props))
