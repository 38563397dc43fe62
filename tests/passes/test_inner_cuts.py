"""Inner cut points (dbl --inner-cuts): the joins compute what the model computes, sit where the
residual units are, and a block boundary there trains what the model's own graph would."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest

import llcompile
from llcompile.analysis.structure import analyze
from llcompile.errors import LLCompileError
from llcompile.passes import PartitionPass, TrainingModePass
from llcompile.passes.inner_cuts import INNER_CUT_KEY, DropUnusedInnerCutsPass, JoinInnerCutsPass
from llcompile.train import TrainConfig, train
from llcompile.train.checkpoint import load_checkpoint

# ResNet-20: three stages of three units; each unit's second convolution follows the inner cut
UNITS = [f"/stages/layer{stage}/layer{stage}.{unit}" for stage in (1, 2, 3) for unit in (0, 1, 2)]
INNER_CUTS = [f"inner_cut.{unit}/conv2/conv/Conv" for unit in UNITS]
DOWNSAMPLING_CUT = "inner_cut./stages/layer2/layer2.0/conv2/conv/Conv"


@pytest.fixture(scope="module")
def resnet(zoo_file):
    return zoo_file("resnet20", input_shape=(1, 8, 8))


def _joined(path) -> ir.Model:
    return JoinInnerCutsPass()(llcompile.load(path)).model


def _run(model: ir.Model, x: np.ndarray) -> np.ndarray:
    model = ir.from_proto(ir.to_proto(model))  # a copy to put in inference form
    TrainingModePass(training=False)(model)
    session = ort.InferenceSession(ir.to_proto(model).SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _marked(model: ir.Model) -> list[ir.Node]:
    return [node for node in model.graph if INNER_CUT_KEY in node.metadata_props]


def test_every_residual_unit_gets_one_inner_cut_before_its_second_convolution(resnet):
    analysis = analyze(_joined(resnet))
    assert [c for c in analysis.cut_points if c.startswith("inner_cut.")] == INNER_CUTS
    assert len(analysis.cut_points) == len(analyze(llcompile.load(resnet)).cut_points) + len(INNER_CUTS)


@pytest.mark.parametrize("name, shape", [("resnet20", (1, 8, 8)), ("mobilenetv2", (3, 32, 32))])
def test_the_joined_model_computes_what_the_model_computes(zoo_file, name, shape):
    path = zoo_file(name, input_shape=shape)
    joined = _joined(path)
    assert _marked(joined)
    x = np.random.default_rng(0).standard_normal((3, *shape)).astype(np.float32)
    np.testing.assert_allclose(_run(joined, x), _run(llcompile.load(path), x), rtol=1e-5, atol=1e-6)


def test_a_projection_shortcut_is_computed_before_the_cut(resnet):
    """In layer2.0 the skip path is a strided 1x1 conv: the cut crosses its output and conv1's."""
    joined = _joined(resnet)
    order = {node.name: i for i, node in enumerate(joined.graph)}
    concat = next(n for n in _marked(joined) if n.outputs[0].name == DOWNSAMPLING_CUT)
    assert order["/stages/layer2/layer2.0/shortcut/conv/Conv"] < order[concat.name]
    assert [v.shape[1] for v in concat.inputs] == [32, 32]
    program = llcompile.transform(resnet, "dbl", cuts=[DOWNSAMPLING_CUT], boundary_policy="fixed", inner_cuts=True)
    assert "/stages/layer2/layer2.0/shortcut/conv/Conv" in program.stages[0].layers
    assert program.stages[1].layers[0] == "/stages/layer2/layer2.0/conv2/conv/Conv"


def test_a_model_without_residual_units_is_left_alone(zoo_file):
    assert not JoinInnerCutsPass()(llcompile.load(zoo_file("small_cnn", input_shape=(1, 8, 8)))).modified


def test_only_the_chosen_joins_stay(resnet):
    model = _joined(resnet)
    initializers = len(model.graph.initializers)
    PartitionPass(cuts=[DOWNSAMPLING_CUT])(model)
    assert DropUnusedInnerCutsPass()(model).modified
    assert [(n.op_type, n.outputs[0].name) for n in _marked(model)][0] == ("Concat", DOWNSAMPLING_CUT)
    assert [n.op_type for n in _marked(model)] == ["Concat", "Split"]
    assert len(model.graph.initializers) == initializers - (len(INNER_CUTS) - 1)  # the other joins' split sizes
    x = np.random.default_rng(1).standard_normal((2, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(_run(model, x), _run(llcompile.load(resnet), x), rtol=1e-5, atol=1e-6)


def test_balancing_over_inner_cuts(resnet):
    program = llcompile.transform(resnet, "dbl", blocks=4, boundary_policy="fixed", inner_cuts=True)
    assert program.options["inner_cuts"] is True
    assert set(program.cuts) <= set(analyze(_joined(resnet)).cut_points)
    assert any(cut.startswith("inner_cut.") for cut in program.cuts)
    # a schedule compiles each of its partitions with the inner cuts too
    llcompile.transform(resnet, "dbl", inner_cuts=True, boundary_policy="schedule", boundary_schedule="1:2,2:4")


@pytest.mark.parametrize("strategy, options, message", [
    ("bp", {}, "strategy 'bp' takes no inner_cuts"),
    ("dbl-hebbian", {"blocks": 2}, "strategy 'dbl-hebbian' takes no inner_cuts"),
    ("dbl", {"blocks": 2, "boundary_policy": "sliding"}, "not 'sliding'"),
    ("dbl", {"blocks": 2, "boundary_policy": "progressive"}, "not 'progressive'"),
])
def test_inner_cuts_are_refused_where_they_cannot_work(resnet, strategy, options, message):
    with pytest.raises(LLCompileError, match=message):
        llcompile.transform(resnet, strategy, inner_cuts=True, **options)


def test_an_inner_cut_needs_the_option(resnet):
    with pytest.raises(LLCompileError, match="not a cut point"):
        llcompile.transform(resnet, "dbl", cuts=[DOWNSAMPLING_CUT], boundary_policy="fixed")


@pytest.mark.parametrize("backend", ["torch", "ort"])
def test_the_block_after_an_inner_cut_learns_what_backprop_teaches_it(resnet, tmp_path, backend):
    """No gradient crosses a boundary, but the block after it sees the same skip and branch and the
    same loss as in end-to-end backprop: after a step from the same weights its parameters are bp's,
    while the block before it (trained by its aux head) moves elsewhere."""
    config = TrainConfig(data="digits", epochs=1, batch_size=64, data_limit=64, lr=0.1, seed=0, threads=1,
                         backend=backend)
    programs = {"bp": llcompile.transform(resnet, "bp"),
                "dbl": llcompile.transform(resnet, "dbl", cuts=[DOWNSAMPLING_CUT], boundary_policy="fixed",
                                           inner_cuts=True)}
    weights = {}
    for name, program in programs.items():
        train(program.save(tmp_path / name), config, tmp_path / f"run-{name}", show_progress=False)
        weights[name] = load_checkpoint(tmp_path / f"run-{name}" / "checkpoint.npz")[0]
    block1, block2 = programs["dbl"].stages
    for param in block2.params:
        np.testing.assert_allclose(weights["dbl"][param], weights["bp"][param], rtol=1e-4, atol=1e-6, err_msg=param)
    shared = set(programs["bp"].stages[0].params)  # block 1's aux head is not in bp
    moved = [p for p in block1.params if p in shared
             and not np.allclose(weights["dbl"][p], weights["bp"][p], rtol=1e-4, atol=1e-6)]
    assert len(moved) > len(block1.params) // 2
