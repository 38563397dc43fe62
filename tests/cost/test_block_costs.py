"""Block costs for --balance-by: hand-made costs, a hand count on a tiny MLP, and the cost model of
the programs the cuts make as the reference for every split of a CNN."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import llcompile
from llcompile.analysis.structure import analyze
from llcompile.analysis.segment_costs import SegmentCosts
from llcompile.cost.block_costs import ELEMENT_OP_MACS, segment_coster
from llcompile.errors import LLCompileError
from llcompile.frontend.importer import canonicalize
from llcompile.cost.cost_model import cost_program
from llcompile.compiler.transform import transform
from tests.fixtures.cnn_graphs import CnnSpec, UnitSpec, build_cnn


def test_block_cost_adds_segments_drops_inner_heads_adds_inner_entry_dx():
    costs = SegmentCosts(criterion="hand", alone=[10.0, 20.0, 30.0], head=[1.0, 2.0, 0.0], entry_dx=[0.0, 3.0, 4.0])
    assert costs.block(1, 1) == 20.0
    assert costs.block(0, 1) == 10 + 20 - 1 + 3
    assert costs.block(1, 2) == 20 + 30 - 2 + 4
    assert costs.block(0, 2) == 10 + 20 + 30 - (1 + 2) + (3 + 4)


def _mlp(dims: list[int]) -> onnx.ModelProto:
    """x [N, dims[0]] -> (MatMul + Add bias + Relu) ... -> MatMul + Add -> logits [N, dims[-1]]."""
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i, (cin, cout) in enumerate(zip(dims, dims[1:])):
        last = i == len(dims) - 2
        inits += [numpy_helper.from_array(rng.standard_normal((cin, cout)).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(np.zeros(cout, np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"mm{i}"], name=f"matmul_{i}"),
                  helper.make_node("Add", [f"mm{i}", f"b{i}"], ["logits" if last else f"add{i}"], name=f"add_{i}")]
        if not last:
            nodes.append(helper.make_node("Relu", [f"add{i}"], [f"relu{i}"], name=f"relu_{i}"))
            x = f"relu{i}"
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", dims[0]])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", dims[-1]])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_hand_counted_mlp_cut_moves_with_the_training_macs():
    """8 -> 16 -> 2 -> 4 (per sample: layers of 128, 32 and 8 MACs; an fc aux head on a 2-D
    activation is one Gemm to 4 classes, trained with forward + dX + dW).

    Cut after layer 0: block1 = 128 + dW 128 (no dX: the network's first layer) + head 16x4 x 3 = 448;
                       block2 = 32 + dW 32 (no dX: the block's first) + 8 x 3 = 88.
    Cut after layer 1: block1 = 128 x 2 + 32 x 3 + head 2x4 x 3 = 376; block2 = 8 + dW 8 = 16.
    Forward MACs: max(128, 40) = 128 < max(160, 8) = 160 cuts after layer 0; training MACs:
    376 < 448 cuts after layer 1."""
    model = canonicalize(_mlp([8, 16, 2, 4]))
    costs = segment_coster("train-macs", {}, transform)(model, analyze(model))
    assert costs.criterion == "train-macs"
    assert [costs.block(0, 0), costs.block(1, 2)] == [448, 88]
    assert [costs.block(0, 1), costs.block(2, 2)] == [376, 16]
    by_macs = llcompile.transform(model, "dbl", blocks=2, balance_by="macs")
    by_training = llcompile.transform(model, "dbl", blocks=2, balance_by="train-macs")
    assert by_macs.cuts == ["relu0"] and by_macs.options["balance_by"] == "macs"
    assert by_training.cuts == ["relu1"] and by_training.options["balance_by"] == "train-macs"


SPEC = CnnSpec(seed=1, in_channels=3, size=8, classes=5, units=(
    UnitSpec("conv", 8, bn=True, relu=True), UnitSpec("conv", 8, stride=2, relu=True), UnitSpec("pool"),
    UnitSpec("res", 8), UnitSpec("concat", 8, branch_channels=(4, 4), relu=True),
    UnitSpec("dwconv", 8, relu=True)))


def _program_cost(stage, criterion: str) -> float:
    elements = stage.element_ops_forward + stage.element_ops_backward
    if stage.head:
        elements += stage.head.element_ops_forward + stage.head.element_ops_backward
    return stage.macs()["total"] + (ELEMENT_OP_MACS * elements if criterion == "train-cost" else 0)


@pytest.mark.parametrize("criterion", ["train-macs", "train-cost"])
@pytest.mark.parametrize("heads", [{}, {"aux_head": "conv"}])
def test_block_costs_equal_the_cost_model_of_every_split(criterion, heads):
    """For every split of a CNN (BN, a residual unit, a concat, a depthwise conv) into 2 and 3 blocks,
    each block's cost is what the cost model charges that stage of the program those cuts make."""
    model = canonicalize(build_cnn(SPEC))
    analysis = analyze(model)
    costs = segment_coster(criterion, heads, transform)(model, analysis)
    count = len(analysis.segments)
    for parts in (2, 3):
        for starts in itertools.combinations(range(1, count), parts - 1):
            program = llcompile.transform(model, "dbl", cuts=[analysis.segments[i].input for i in starts],
                                          boundary_policy="fixed", **heads)
            bounds = [0, *starts, count]
            expected = [_program_cost(stage, criterion) for stage in cost_program(program).stages]
            assert [costs.block(a, b - 1) for a, b in zip(bounds, bounds[1:])] == pytest.approx(expected)


def test_dbl_hebbian_balances_the_segments_after_the_prefix():
    model = canonicalize(build_cnn(SPEC))
    analysis = analyze(model)
    costs = segment_coster("train-cost", {}, transform)(model, analysis)
    program = llcompile.transform(model, "dbl-hebbian", prefix=1, blocks=2)
    count = len(analysis.segments)
    best = min(range(2, count), key=lambda i: max(costs.block(1, i - 1), costs.block(i, count - 1)))
    assert program.cuts[1:] == [analysis.segments[best].input]
    assert program.options["balance_by"] == "train-cost"


def test_a_cut_without_an_aux_head_falls_back_to_forward_macs():
    """--aux-pool 4 fits the 8x8 activations but not the 4x4 ones after the stride-2 conv: the
    block-per-segment program cannot be costed, so the blocks are balanced by forward MACs, and the
    program says so."""
    model = canonicalize(build_cnn(SPEC))
    costs = segment_coster("train-cost", {"aux_pool": 4}, transform)(model, analyze(model))
    assert costs.criterion == "macs"
    assert costs.alone == [float(s.macs) for s in analyze(model).segments]


def test_unknown_criterion_is_a_clear_error():
    with pytest.raises(LLCompileError, match="unknown balance_by 'flops'"):
        segment_coster("flops", {}, transform)


def test_default_is_train_cost_and_recompile_keeps_an_old_program_on_forward_macs():
    model = canonicalize(build_cnn(SPEC))
    program = llcompile.transform(model, "dbl", blocks=3)
    assert program.options["balance_by"] == "train-cost"
    old = llcompile.transform(model, "dbl", blocks=3, balance_by="macs")
    del old.options["balance_by"]  # written before --balance-by existed
    assert llcompile.compiler.transform.recompile(old).cuts == llcompile.transform(model, "dbl", blocks=3,
                                                                         balance_by="macs").cuts
