"""PartitionPass and its linear-partition DP, checked against brute force over all splits."""

from __future__ import annotations

import itertools

import onnx_ir as ir
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llcompile.analysis.structure import analyze
from llcompile.errors import LLCompileError
from llcompile.frontend.importer import canonicalize
from llcompile.passes.partition import PartitionPass, min_max_partition
from llcompile.program.plan import Plan
from tests.fixtures import legacy_models as lm
from tests.fixtures.cnn_graphs import CnnSpec, UnitSpec, build_cnn

# Five cut points (u0, u2, u3, u4, head.flatten) -> six segments of unequal cost.
SPEC = CnnSpec(seed=1, in_channels=3, size=8, classes=5, units=(
    UnitSpec("conv", 8, bn=True, relu=True), UnitSpec("conv", 8, stride=2, relu=True), UnitSpec("pool"),
    UnitSpec("res", 8), UnitSpec("concat", 8, branch_channels=(4, 4), relu=True),
    UnitSpec("dwconv", 8, relu=True)))
SPEC_CUTS = ["u0.out", "u2.out", "u3.out", "u4.out", "head.flatten.out"]


def _cnn() -> ir.Model:
    return canonicalize(build_cnn(SPEC))


def _group_sums(costs: list[int], starts: list[int]) -> list[int]:
    bounds = [0, *starts, len(costs)]
    return [sum(costs[a:b]) for a, b in zip(bounds, bounds[1:])]


def _brute_force_optimum(costs: list[int], parts: int) -> int:
    """Smallest possible largest group sum over every split into `parts` non-empty contiguous groups."""
    return min(max(_group_sums(costs, list(starts)))
               for starts in itertools.combinations(range(1, len(costs)), parts - 1))


def _check_split(costs: list[int], parts: int, starts: list[int]) -> None:
    assert len(starts) == parts - 1
    # strictly increasing starts inside (0, n): contiguous, non-empty groups covering everything
    assert all(0 < s < len(costs) for s in starts)
    assert starts == sorted(set(starts))
    assert max(_group_sums(costs, starts)) == _brute_force_optimum(costs, parts)


# ---------------------------------------------------------------- min_max_partition of sums


def balanced_boundaries(costs: list[int], parts: int) -> list[int]:
    """The start of every group but the first, for groups costing their items' sum."""
    groups = min_max_partition(len(costs), parts, lambda first, last: sum(costs[first:last + 1]))
    return [first for first, _ in groups[1:]]


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_balanced_boundaries_is_optimal(data):
    costs = data.draw(st.lists(st.integers(0, 1000), min_size=1, max_size=9), label="costs")
    parts = data.draw(st.integers(1, len(costs)), label="parts")
    _check_split(costs, parts, balanced_boundaries(costs, parts))


def test_balanced_boundaries_seeded_loop():
    """Same property on a fixed set of inputs with skewed costs (one huge item, many zeros)."""
    import random

    rng = random.Random(1234)
    for _ in range(200):
        n = rng.randint(1, 10)
        costs = [rng.choice([0, 0, 1, 5, 10**6, rng.randint(0, 10**9)]) for _ in range(n)]
        parts = rng.randint(1, n)
        _check_split(costs, parts, balanced_boundaries(costs, parts))


@pytest.mark.parametrize("costs, parts, expected", [
    ([5], 1, []),
    ([1, 2, 3, 4], 1, []),
    ([1, 2, 3, 4], 4, [1, 2, 3]),
    ([10, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], 2, [1]),  # the big item alone, the rest (10) together
])
def test_balanced_boundaries_known_cases(costs, parts, expected):
    assert balanced_boundaries(costs, parts) == expected


def test_min_max_partition_with_a_hand_off():
    """A group's cost is its items' sum plus the hand-off after its last item (none after the last):
    times 3, 3, 3, 3 and hand-offs 0, 5, 1 make the even split 6 + 5 | 6 = 11 worse than 3 | 9 = 9."""
    times, hand_off = [3, 3, 3, 3], [0, 5, 1, 0]

    def cost(first, last):
        return sum(times[first:last + 1]) + hand_off[last]

    assert min_max_partition(4, 2, cost) == [(0, 0), (1, 3)]
    assert min_max_partition(4, 2, lambda a, b: sum(times[a:b + 1])) == [(0, 1), (2, 3)]
    assert min_max_partition(4, 4, cost) == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert min_max_partition(4, 1, cost) == [(0, 3)]


# ---------------------------------------------------------------- PartitionPass: the plan


def _check_chain(plan: Plan, model: ir.Model, blocks: int) -> None:
    graph = model.graph
    assert plan.input == graph.inputs[0].name
    assert plan.output == graph.outputs[0].name
    assert len(plan.stages) == blocks and len(plan.cuts) == blocks - 1
    assert plan.stages[0].input == plan.input
    assert plan.stages[-1].output == plan.output
    for i, cut in enumerate(plan.cuts):
        assert plan.stages[i].output == cut == plan.stages[i + 1].input
    assert [s.kind for s in plan.stages] == ["block"] * (blocks - 1) + ["final"]
    assert [s.name for s in plan.stages] == [f"block{i + 1}" for i in range(blocks)]
    assert all(s.loss is None and s.head is None for s in plan.stages)
    assert plan.options["blocks"] == blocks


@pytest.mark.parametrize("blocks", [1, 2, 3, 4, 5, 6])
def test_blocks_plan_is_a_chain_of_balanced_stages(blocks):
    model = _cnn()
    ops_before = [(n.op_type, n.name) for n in model.graph]
    result = PartitionPass(blocks=blocks)(model)
    assert result.modified is True and result.model is model
    plan = Plan.read(model)
    _check_chain(plan, model, blocks)
    assert plan.num_classes == SPEC.classes and plan.logits == "logits"
    # cuts are valid cut points in graph order
    assert all(c in SPEC_CUTS for c in plan.cuts)
    assert plan.cuts == sorted(plan.cuts, key=SPEC_CUTS.index)
    # the split by segment MACs is the brute-force optimum
    segments = analyze(model).segments
    costs = [s.macs for s in segments]
    starts = [next(i for i, s in enumerate(segments) if s.input == c) for c in plan.cuts]
    assert max(_group_sums(costs, starts)) == _brute_force_optimum(costs, blocks)
    # partitioning only annotates: the graph is untouched
    assert [(n.op_type, n.name) for n in model.graph] == ops_before


def test_plan_survives_serialisation():
    model = _cnn()
    PartitionPass(blocks=3)(model)
    reloaded = ir.from_proto(ir.to_proto(model))
    assert Plan.read(reloaded) == Plan.read(model)


def test_legacy_model_with_softmax_output_uses_softmax_input_as_logits():
    model = canonicalize(lm.legacy_caffe_style())
    PartitionPass(blocks=2)(model)
    plan = Plan.read(model)
    _check_chain(plan, model, 2)
    assert plan.output == "prob_1" and plan.logits == "fc_1" and plan.num_classes == 10


def test_matmul_mlp_two_dimensional_cuts():
    model = canonicalize(lm.matmul_mlp())
    PartitionPass(blocks=3)(model)
    plan = Plan.read(model)
    _check_chain(plan, model, 3)
    assert plan.cuts == ["relu_0", "relu_1"]


@pytest.mark.parametrize("cuts", [
    ["u4.out", "u0.out"],
    ["head.flatten.out", "u3.out", "u0.out"],
    ["u2.out"],
    list(reversed(SPEC_CUTS)),
])
def test_explicit_cuts_are_sorted_into_graph_order(cuts):
    model = _cnn()
    assert PartitionPass(cuts=cuts)(model).modified is True
    plan = Plan.read(model)
    assert plan.cuts == sorted(cuts, key=SPEC_CUTS.index)
    _check_chain(plan, model, len(cuts) + 1)


def test_explicit_cuts_with_matching_blocks():
    model = _cnn()
    PartitionPass(blocks=3, cuts=["u3.out", "u0.out"])(model)
    assert Plan.read(model).cuts == ["u0.out", "u3.out"]


def test_no_options_is_one_block():
    model = _cnn()
    PartitionPass()(model)
    plan = Plan.read(model)
    _check_chain(plan, model, 1)
    assert plan.cuts == []


def test_repartition_replaces_the_plan():
    model = _cnn()
    PartitionPass(blocks=4)(model)
    assert PartitionPass(blocks=2)(model).modified is True
    _check_chain(Plan.read(model), model, 2)


# ---------------------------------------------------------------- PartitionPass: errors
# PassBase.__call__ only wraps exceptions from requires()/ensures(); those raised by call()
# propagate unchanged, so calling the pass directly raises LLCompileError itself.


def test_too_many_blocks_names_the_maximum():
    model = _cnn()
    with pytest.raises(LLCompileError, match=r"at most 6\b"):
        PartitionPass(blocks=7)(model)
    assert Plan.read(model) is None


def test_negative_blocks():
    with pytest.raises(LLCompileError, match="at least 1"):
        PartitionPass(blocks=-1)(_cnn())


def test_zero_blocks_is_an_error():
    with pytest.raises(LLCompileError, match="at least 1"):
        PartitionPass(blocks=0)(_cnn())


def test_unknown_cut_lists_the_valid_ones():
    with pytest.raises(LLCompileError, match="not a cut point: u1.out") as info:
        PartitionPass(cuts=["u0.out", "u1.out"])(_cnn())
    message = str(info.value)
    assert all(c in message for c in SPEC_CUTS)


def test_duplicated_cut():
    with pytest.raises(LLCompileError, match="twice"):
        PartitionPass(cuts=["u0.out", "u3.out", "u0.out"])(_cnn())


@pytest.mark.parametrize("blocks, cuts", [(2, ["u0.out", "u3.out"]), (4, ["u0.out"]), (0, ["u0.out"])])
def test_blocks_and_cuts_disagree(blocks, cuts):
    with pytest.raises(LLCompileError, match="disagrees"):
        PartitionPass(blocks=blocks, cuts=cuts)


def test_no_parametric_layer():
    model = canonicalize(lm.no_parametric_layer())
    with pytest.raises(LLCompileError, match="no parametric layer"):
        PartitionPass(blocks=1)(model)


def test_non_logits_output():
    model = canonicalize(lm.non_logits_output())
    with pytest.raises(LLCompileError, match="not class logits"):
        PartitionPass(blocks=1)(model)
    assert Plan.read(model) is None


def test_error_inside_a_pass_manager_is_wrapped():
    """Under onnx_ir's PassManager the same error arrives as a PassError whose cause is ours."""
    manager = ir.passes.PassManager([PartitionPass(blocks=99)])
    with pytest.raises(ir.passes.PassError) as info:
        manager(_cnn())
    cause = info.value
    while cause is not None and not isinstance(cause, LLCompileError):
        cause = cause.__cause__
    assert isinstance(cause, LLCompileError)
