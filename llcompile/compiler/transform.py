"""The public compile entry point: ONNX model -> training Program."""

from __future__ import annotations

import os

import onnx_ir as ir
from onnx_ir.passes import common as ir_common

from llcompile.analysis.structure import analyze
from llcompile.compiler.batch_check import check_any_batch
from llcompile.compiler.emit import complete_plan, emit
from llcompile.frontend.importer import ModelSource, canonicalize, file_sha256, read_source
from llcompile.passes import TrainingModePass
from llcompile.frontend.pass_pipeline import run_passes
from llcompile.program.plan import StageKind
from llcompile.program.program import Program
from llcompile.errors import LLCompileError
from llcompile.compiler.strategies import (boundary_policy_of, build_pipeline, check_options, get_strategy,
                                          learning_mode_of)
from llcompile.util.option_names import option_name


def transform(model: ModelSource, strategy: str = "dbl", **options) -> Program:
    """Compile ``model`` with ``strategy``: a path to an ONNX file, its bytes, an ``onnx.ModelProto`` or
    an ``onnx_ir.Model``, each brought into canonical form by ``llcompile.load`` (the caller's object
    is not changed). ``program.source`` records the file's path and sha256 when a path is given.

    ``options`` are the strategy's (``llcompile strategies``); those left at None take the
    strategy's defaults; an option the strategy does not take is an error. ``program.options``
    records the options given, what the passes chose, and the resolved learning mode of a
    strategy with a Hebbian prefix and the boundary policy of one with blocks.

    A model exported with a static batch is compiled to a program that runs at any batch size
    (proven by running it, ``batch_check.py``) or refused.
    """
    options = check_options(strategy, options)  # refused before the model is read
    if isinstance(model, (str, os.PathLike)):
        source = {"path": os.path.abspath(model), "sha256": file_sha256(model) if os.path.isfile(model) else None}
    else:
        source = {"path": None, "sha256": None}
    proto, name = read_source(model)
    program = _compile(canonicalize(proto, name), source, strategy, options)
    check_any_batch(program, proto, name)  # a static-batch export: runs at any batch, or is refused
    policy = boundary_policy_of(strategy, program.options)
    for entry in policy.entries() if policy is not None else ():
        try:  # every scheduled partition must compile: fail now, not in the middle of a run
            recompile(program, **entry.options())
        except LLCompileError as exc:
            raise LLCompileError(f"{option_name('boundary_schedule')} entry for epoch {entry.epoch}: {exc}") from None
    if policy is not None and policy.boundary_policy in ("progressive", "sliding"):
        # a boundary may reach any cut point after the prefix: every one must take an aux head, so a
        # program with a block per segment is compiled once now (the runtime emits the others lazily)
        segments = len(analyze(ir.from_proto(program.eval_model)).segments) - program.options.get("prefix", 0)
        try:
            recompile(program, blocks=segments, cuts=None)
        except LLCompileError as exc:
            raise LLCompileError(f"{option_name('boundary_policy', policy.boundary_policy)} may move a boundary to "
                                 f"any cut point, but not every one takes an aux head: {exc}") from None
    return program


def _compile_canonical(model: ir.Model, strategy: str, **options) -> Program:
    """``transform`` of a model already in canonical form, without its source or its schedule checks:
    what the partition's block coster compiles copies of the model with."""
    return _compile(model, {"path": None, "sha256": None}, strategy, options)


def _compile(model: ir.Model, source: dict, strategy: str, options: dict) -> Program:
    """``model`` (canonical) compiled with ``strategy``; ``source`` is what program.json records of it."""
    options = {k: v for k, v in options.items() if v is not None}
    passes = build_pipeline(strategy, _compile_canonical, **options)
    eval_model = _eval_form(model)
    training_model = run_passes(passes, _clone(model)).model
    return _resolved(emit(training_model, eval_model, strategy, options, source), eval_model)


def _eval_form(model: ir.Model) -> ir.Model:
    """A copy of ``model`` in inference form: what a program's eval model is."""
    eval_model = _clone(model)
    run_passes([TrainingModePass(training=False), ir_common.RemoveUnusedNodesPass()], eval_model)
    return eval_model


def _resolved(program: Program, eval_model: ir.Model) -> Program:
    """``program`` with only the options its strategy takes (the passes record what they chose, a
    partition its block count), and the resolved learning mode of a strategy with a Hebbian prefix
    and the boundary policy of one with blocks."""
    takes = get_strategy(program.strategy).options
    program.options = {k: v for k, v in program.options.items() if k in takes}
    learning_mode = learning_mode_of(program.strategy, program.options)
    if learning_mode is not None:
        segment_macs = [segment.macs for segment in analyze(eval_model).segments]
        program.options.update(learning_mode.resolved(segment_macs).to_json())
    policy = boundary_policy_of(program.strategy, program.options)
    if policy is not None:
        program.options.update(policy.to_json())
    return program


def recompile(program: Program, **changes) -> Program:
    """``program``'s strategy compiled again from its own eval model with some options changed
    (the runtime moves the Hebbian prefix and block boundaries this way); names of unchanged parts
    stay. A change to None drops that option (``blocks=K, cuts=None``)."""
    model = ir.from_proto(program.eval_model)
    run_passes([TrainingModePass(training=True)], model)
    names = set(get_strategy(program.strategy).options)
    options = {k: v for k, v in {**program.options, **changes}.items() if k in names}
    if "balance_by" in names and "balance_by" not in program.options:
        options.setdefault("balance_by", "macs")  # a program from before --balance-by: balanced by forward MACs
    return _compile(model, program.source, program.strategy, options)


def emit_planned(planned: ir.Model, model: ir.Model, strategy: str | None = None) -> Program:
    """The Program of ``planned``: a copy of ``model`` (as ``llcompile.load`` returns it) that llcompile's
    passes, run in the caller's own ``PassManager``, gave a complete plan (a partition, then aux
    heads or a Hebbian prefix, then the model's loss). ``model`` is what the program's eval model is
    made from. ``strategy`` is what ``program.json`` records; by default the one whose stages the plan
    has (``bp``, ``dbl``, ``local-sgd`` or ``dbl-hebbian``). Boundaries stay where the passes put them
    (the ``fixed`` boundary policy): moving them would recompile with the strategy's own passes.
    Neither model is changed."""
    plan = complete_plan(planned)
    if strategy is None:
        kinds = {stage.kind for stage in plan.stages}
        blocks = StageKind.BLOCK in kinds
        strategy = ("dbl-hebbian" if blocks else "local-sgd") if StageKind.HEBBIAN in kinds else (
            "dbl" if blocks else "bp")
    takes = get_strategy(strategy).options  # a known name: the runtime looks its options up
    options = {"boundary_policy": "fixed"} if "boundary_policy" in takes else {}
    eval_model = _eval_form(model)
    return _resolved(emit(_clone(planned), eval_model, strategy, options, {"path": None, "sha256": None}), eval_model)


def _clone(model: ir.Model) -> ir.Model:
    """A copy whose graph can be rewritten independently (tensors are shared, not copied)."""
    return ir.Model(model.graph.clone(), ir_version=model.ir_version, producer_name=model.producer_name,
                    producer_version=model.producer_version, metadata_props=dict(model.metadata_props))
