"""llcompile.emit and llcompile.verify: llcompile's passes in a pipeline of one's own, and a typed check."""

from __future__ import annotations

import onnx_ir as ir
import pytest

import llcompile
import llcompile.passes
from llcompile.errors import LLCompileError
from llcompile.passes import AuxHeadsPass, ModelLossPass, PartitionPass
from tests.fixtures import legacy_models as lm

CUT_4D = "/pool/MaxPool_output_0"


def _planned(model: ir.Model, *passes) -> ir.Model:
    planned = ir.from_proto(ir.to_proto(model))
    if passes:
        ir.passes.PassManager(list(passes))(planned)
    return planned


def test_passes_in_ones_own_pass_manager_emit_the_program_transform_would():
    model = llcompile.load(lm.small_cnn())
    planned = _planned(model, PartitionPass(cuts=[CUT_4D]), AuxHeadsPass(kind="conv"), ModelLossPass())
    program = llcompile.emit(planned, model)
    expected = llcompile.transform(lm.small_cnn(), "dbl", cuts=[CUT_4D], aux_head="conv", boundary_policy="fixed")
    assert program.strategy == "dbl" and program.options["boundary_policy"] == "fixed"
    assert [s.to_json() for s in program.stages] == [s.to_json() for s in expected.stages]
    assert [s.model.SerializeToString() for s in program.stages] == [s.model.SerializeToString()
                                                                      for s in expected.stages]
    assert program.eval_model.SerializeToString() == expected.eval_model.SerializeToString()
    result = llcompile.verify(program, lm.small_cnn())
    assert result.ok and result.worst < 1e-5 and set(result.errors) >= {"stage chain vs source (inference)"}


def test_the_strategy_is_read_from_the_plan():
    model = llcompile.load(lm.small_cnn())
    bp = llcompile.emit(_planned(model, PartitionPass(blocks=1), ModelLossPass()), model)
    assert bp.strategy == "bp" and len(bp.stages) == 1


@pytest.mark.parametrize("passes, fragment", [
    ((), "carries no llcompile plan"),
    ((PartitionPass(cuts=[CUT_4D]),), "stage block1 of the plan has no loss"),
])
def test_an_incomplete_plan_is_refused_by_name(passes, fragment):
    model = llcompile.load(lm.small_cnn())
    with pytest.raises(LLCompileError, match=fragment):
        llcompile.emit(_planned(model, *passes), model)


def test_verify_reports_a_wrong_program_as_not_ok(tmp_path):
    program = llcompile.transform(lm.small_cnn(), "bp")
    weight = next(t for t in program.stages[0].model.graph.initializer if t.name.endswith("weight"))
    weight.raw_data = bytes(len(weight.raw_data))  # zeroed: the stage no longer computes the model
    result = llcompile.verify(program, lm.small_cnn(), tolerance=1e-4)
    assert not result.ok and result.worst > 1e-4
    assert result.errors["eval_model vs source (inference)"] < 1e-6  # the eval model was left alone


# ---------------------------------------------------------------- errors a Python caller can tell apart


@pytest.mark.parametrize("call, error", [
    (lambda: llcompile.transform(lm.small_cnn(), "dbl", blocks="2"), llcompile.OptionError),
    (lambda: llcompile.load(b"not onnx"), llcompile.ModelError),
    (lambda: llcompile.Program.load("/nonexistent/program"), llcompile.ProgramError),
    (lambda: llcompile.fit(llcompile.transform(lm.small_cnn(), "bp"), "nosuchdata"), llcompile.DataError),
])
def test_each_kind_of_bad_input_raises_its_own_subclass(call, error):
    with pytest.raises(error) as caught:
        call()
    assert isinstance(caught.value, LLCompileError) and "\n" not in str(caught.value)


def test_run_passes_raises_the_passs_own_error_not_a_pass_error():
    passes = [PartitionPass(cuts=[CUT_4D]), AuxHeadsPass(pool=3)]  # 3 does not divide the 8 x 8 activation
    with pytest.raises(ir.passes.PassError):  # onnx_ir's manager wraps it
        ir.passes.PassManager(passes)(llcompile.load(lm.small_cnn()))
    with pytest.raises(LLCompileError, match="aux_pool=3: the spatial sizes \\[8, 8\\]"):
        llcompile.passes.run_passes(passes, llcompile.load(lm.small_cnn()))


def test_passes_print_as_their_options():
    assert repr(AuxHeadsPass(kind="dgl", seed=3)) == (
        "AuxHeadsPass(kind='dgl', seed=3, pool=None, width=None, subsample=None, recon_weight=None, "
        "contrast_weight=None, temperature=None, loss='ce', ce_weight=None, depth=None, ema_momentum=None)")
    assert repr(PartitionPass(cuts=[CUT_4D])).startswith(f"PartitionPass(blocks=None, cuts=['{CUT_4D}'], prefix=0")
