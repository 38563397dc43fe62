"""The op registry (``llcompile/ops/``): every op has every fact, the importer accepts exactly the
registered standard ops, and each op's facts live in one file (adding an op touches one file)."""

from __future__ import annotations

import onnx_ir as ir
import pytest

import llcompile.ops
from llcompile.errors import LLCompileError
from llcompile.frontend import importer
from llcompile.ops import PARAMETRIC_OPS, PROBABILITY_OPS, SUPPORTED_OPS
from llcompile.ops.registry import (MAX_OPSET, MIN_OPSET, STANDARD_DOMAIN, Backward, ElementOps, Keeps, OpFacts, Role,
                                    no_macs, op_facts, register, registered_ops)

FACTS = registered_ops()


def _op_specific_callables(facts: OpFacts) -> list:
    found = [facts.torch_emitter, facts.ort_rewrite, facts.backward.extra_saved]
    if facts.macs is not no_macs:
        found.append(facts.macs)
    return [f for f in found if f is not None]


@pytest.mark.parametrize("facts", FACTS, ids=lambda f: f.op_type)
def test_every_op_has_every_fact(facts):
    assert callable(facts.torch_emitter)
    assert callable(facts.macs)  # a MAC rule, or no_macs said explicitly
    assert isinstance(facts.role, Role)
    assert isinstance(facts.element_ops, ElementOps)
    assert isinstance(facts.backward, Backward) and isinstance(facts.backward.keeps, Keeps)
    assert facts.opsets.first <= facts.opsets.last
    if facts.domain == STANDARD_DOMAIN:
        assert MIN_OPSET <= facts.opsets.last <= MAX_OPSET
    assert op_facts(facts.op_type, facts.domain) is facts


@pytest.mark.parametrize("facts", FACTS, ids=lambda f: f.op_type)
def test_an_ops_facts_are_defined_in_its_family_file(facts):
    modules = {f.__module__ for f in _op_specific_callables(facts)}
    assert len(modules) == 1, f"{facts.op_type}: facts spread over {sorted(modules)}"
    (module,) = modules
    assert module in {family.__name__ for family in llcompile.ops.FAMILIES}


def test_the_importer_accepts_exactly_the_registered_standard_ops():
    graph = ir.Graph([], [], nodes=[ir.Node("", op, []) for op in sorted(SUPPORTED_OPS)], name="all")
    importer._refuse_unsupported(ir.Model(graph, ir_version=10), "model")
    for domain, op in [("", "NotAnOp"), ("ai.llcompile", "HebbianUpdate"), ("com.microsoft", "Relu")]:
        graph = ir.Graph([], [], nodes=[ir.Node(domain, op, [])], name="one")
        with pytest.raises(LLCompileError, match=op):
            importer._refuse_unsupported(ir.Model(graph, ir_version=10), "model")


def test_the_sets_by_role():
    assert PARAMETRIC_OPS == {"Conv", "Gemm", "MatMul"}
    assert PROBABILITY_OPS == {"Softmax", "LogSoftmax"}
    assert op_facts("Relu", "ai.onnx") is op_facts("Relu")
    assert op_facts("HebbianUpdate") is None and op_facts("HebbianUpdate", "ai.llcompile") is not None


def test_an_op_is_registered_once():
    with pytest.raises(ValueError, match="twice"):
        register(op_facts("Relu"))
