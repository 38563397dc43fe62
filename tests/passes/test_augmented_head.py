"""The ``augmented`` aux head (AugLocal style): which segments it copies, that the copies compute
what the originals do with weights of their own, that both backends train it alike, what the cost
report charges for it, and the option errors.

ResNet-20 (3x32x32) has 11 segments (``llcompile inspect``): 0 the stem, 1-9 the residual blocks
(4 and 7 downsample: [16,32,32] -> [32,16,16] -> [64,8,8]; 9 ends with the pooling and flatten:
[64,8,8] -> [64]), 10 the classifier. Balanced by forward MACs (``balance_by="macs"``, which these
tests pin: they are about the heads, not the balance), K=2 cuts after segment 4 and K=4 after
segments 2, 4 and 7.
"""

from __future__ import annotations

import sys

import numpy as np
import onnx_ir as ir
import pytest

import llcompile
from llcompile.analysis.structure import ModelAnalysis, Segment
from llcompile.backends.base import OptimizerConfig
from llcompile.errors import LLCompileError
from llcompile.passes.augmented_head import select_segments
from llcompile.passes.aux_heads import AuxHeadsPass
from llcompile.passes.partition import PartitionPass
from llcompile.program.plan import Plan
from llcompile.cost import cost_program
from llcompile.util.ort_session import session
from llcompile.frontend.canonical.training_mode import with_training_mode
from tests.backends.chain import train_chain
from tests.fixtures import legacy_models as lm

LAYER1_1 = "/stages/layer1/layer1.1/relu/Relu_output_0"  # the output of segment 2
FLATTEN = "/head/flatten/Flatten_output_0"  # the output of segment 9 (the classifier's input)
CLASSES = 10


@pytest.fixture(scope="module")
def resnet20(zoo_file):
    return llcompile.load(zoo_file("resnet20"))


def _dbl_by_macs(model, **options) -> llcompile.Program:
    return llcompile.transform(model, "dbl", balance_by="macs", **options)


def _heads(program) -> list:
    return [stage.head.segments if stage.head else None for stage in program.stages]


# ---------------------------------------------------------------- which segments


def test_selection_on_resnet20(resnet20):
    # K=2, cut after 4: later 5..9 (n=5), d = round(2.5) = 3 -> the last of each third: 6, 8, 9;
    # 7 downsamples before the deepest -> added
    assert _heads(_dbl_by_macs(resnet20, blocks=2, aux_head="augmented", aux_depth=0.5)) == [
        [6, 7, 8, 9], None]
    # K=4: cut after 2: later 3..9 (n=7), d = 4 -> 4, 6, 8, 9, plus 7 -> 5 segments;
    # after 4: as above -> 4; after 7: later 8, 9 (n=2), d = 1 -> the deepest. Depth shrinks toward the output.
    program = _dbl_by_macs(resnet20, blocks=4, aux_head="augmented", aux_depth=0.5)
    assert program.cuts == [LAYER1_1, "/stages/layer2/layer2.0/relu/Relu_output_0",
                            "/stages/layer3/layer3.0/relu/Relu_output_0"]
    assert _heads(program) == [[4, 6, 7, 8, 9], [6, 7, 8, 9], [9], None]
    assert program.options["aux_head"] == "augmented" and program.options["aux_depth"] == 0.5
    # every later segment but the classifier's; only the deepest plus the downsampling ones
    assert _heads(_dbl_by_macs(resnet20, blocks=4, aux_head="augmented", aux_depth=1.0)) == [
        [3, 4, 5, 6, 7, 8, 9], [5, 6, 7, 8, 9], [8, 9], None]
    assert _heads(_dbl_by_macs(resnet20, blocks=4, aux_head="augmented", aux_depth=0.01)) == [
        [4, 7, 9], [7, 9], [9], None]
    # the default depth (0.1, measured) is the shallowest here too: K=4's first head d = round(0.7) = 1
    default = _dbl_by_macs(resnet20, blocks=4, aux_head="augmented")
    assert _heads(default) == [[4, 7, 9], [7, 9], [9], None] and default.options["aux_depth"] == 0.1


def _analysis(shapes: list[list]) -> ModelAnalysis:
    """A model whose segment i maps shapes[i] to shapes[i + 1] (per sample)."""
    segments = [Segment(index=i, input=f"t{i}", output=f"t{i + 1}", layers=[], macs=0, params=0,
                        output_shape=["N", *shapes[i + 1]]) for i in range(len(shapes) - 1)]
    return ModelAnalysis(input="t0", input_shape=["N", *shapes[0]], output=segments[-1].output, logits="",
                         num_classes=CLASSES, layers=[], cut_points=[s.output for s in segments[:-1]],
                         segments=segments)


@pytest.mark.parametrize("depth, expected", [
    (1.0, [1, 2, 3, 4, 5, 6, 7, 8, 9]),
    (0.5, [2, 4, 6, 8, 9]),  # n = 9 later segments, d = round(4.5) = 5 (half up): ceil(k * 9 / 5) = 2, 4, 6, 8, 9
    (0.3, [3, 6, 9]),  # d = round(2.7) = 3
    (0.05, [9]),  # d = round(0.45) = 0 -> at least 1: the deepest
])
def test_uniform_spacing_includes_the_deepest(depth, expected):
    analysis = _analysis([[4, 4, 4]] * 11 + [[CLASSES]])  # 11 segments, none changes the shape but the last
    assert select_segments(analysis, "t1", depth) == expected


def test_shape_changers_before_the_deepest_are_added():
    shapes = [[4, 8, 8]] * 4 + [[8, 4, 4]] * 4 + [[8]] + [[CLASSES]]  # 3 and 7 change the shape
    analysis = _analysis(shapes)
    assert select_segments(analysis, "t1", 0.01) == [3, 7]
    assert select_segments(analysis, "t4", 0.01) == [7]
    assert select_segments(analysis, "t8", 1.0) == []  # nothing between the cut and the classifier


def test_a_chain_that_does_not_fit_is_refused():
    analysis = _analysis([[4, "H"]] * 4 + [[CLASSES]])  # not static: cannot tell that shapes fit
    with pytest.raises(LLCompileError, match=r"segment 1 expects a per-sample input of shape \[4, 'H'\]"):
        select_segments(analysis, "t1", 1.0)
    with pytest.raises(LLCompileError, match="not a cut point"):
        select_segments(analysis, "t4", 1.0)


# ---------------------------------------------------------------- copies compute what the originals do


def _run(model, feeds: dict, outputs: list[str]) -> list[np.ndarray]:
    """``outputs`` of ``model`` (a ModelProto), intermediate values included."""
    ir_model = ir.from_proto(model)
    produced = {v.name: v for node in ir_model.graph for v in node.outputs}
    ir_model.graph.outputs.extend(produced[name] for name in outputs if not produced[name].is_graph_output())
    return session(ir.to_proto(ir_model)).run(outputs, feeds)


def test_full_depth_copy_equals_the_original_tensor(resnet20):
    program = llcompile.transform(resnet20, "dbl", cuts=[LAYER1_1], aux_head="augmented", aux_depth=1.0)
    stage = program.stages[0]
    assert stage.head.segments == [3, 4, 5, 6, 7, 8, 9]
    head = f"aux@{LAYER1_1}"
    fc = next(node for node in stage.model.graph.node if node.output[0] == stage.head.logits)
    assert fc.op_type == "Gemm" and fc.input[1] == f"{head}.fc.weight"
    copied_output = fc.input[0]  # the classifier reads the copy of segment 9 directly (it ends in a flatten)
    assert copied_output == f"{head}.{FLATTEN}"
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 32, 32)).astype(np.float32)
    labels = np.zeros(4, np.int64)
    # the stage (block 1, input -> cut, then the head's copies on the cut) against the original tensor;
    # inference form: the untouched eval model, BN on running statistics in both
    (original,) = _run(program.eval_model, {"input": x}, [FLATTEN])
    (copied,) = _run(with_training_mode(stage.model, training=False), {"input": x, "labels": labels},
                     [copied_output])
    np.testing.assert_allclose(copied, original, rtol=1e-5, atol=1e-5)
    # training form, as the stage trains: batch statistics in both
    (original,) = _run(ir.to_proto(resnet20), {"input": x}, [FLATTEN])
    (copied,) = _run(stage.model, {"input": x, "labels": labels}, [copied_output])
    np.testing.assert_allclose(copied, original, rtol=1e-4, atol=1e-5)
    assert np.abs(original).max() > 0.1  # not a trivially small tensor


def test_weights_are_copies_with_names_of_their_own(resnet20):
    model = ir.from_proto(ir.to_proto(resnet20))  # a copy
    originals = {name: v.const_value.numpy().copy() for name, v in model.graph.initializers.items()}
    PartitionPass(blocks=4)(model)
    AuxHeadsPass(kind="augmented")(model)
    graph = model.graph
    for name, array in originals.items():  # the model's own initializers are untouched
        np.testing.assert_array_equal(graph.initializers[name].const_value.numpy(), array, err_msg=name)
    analysis = llcompile.analyze(resnet20)
    layers = {layer.name: layer for layer in analysis.layers}
    for stage in Plan.read(model).stages[:-1]:
        head = f"aux@{stage.output}."
        copied = {name.removeprefix(head): name for name in stage.head.params + stage.head.buffers}
        assert all(name.startswith(head) for name in copied.values())
        assert {"fc.weight", "fc.bias"} <= set(copied)  # the fresh classifier
        del copied["fc.weight"], copied["fc.bias"]
        # exactly the copied segments' weights, BN scale/shift and running statistics
        weights = {layers[name].weight for i in stage.head.segments for name in analysis.segments[i].layers}
        assert weights <= set(copied)
        assert all(name.endswith(("weight", "bias", "running_mean", "running_var")) for name in copied)
        assert {name for name in copied if name.endswith("running_mean")} == {
            name for name in copied if name.endswith("bn.running_mean")}
        assert sorted(set(copied.values()) - set(stage.head.params)) == stage.head.buffers
        for original, name in copied.items():
            array = graph.initializers[name].const_value.numpy()
            np.testing.assert_array_equal(array, originals[original], err_msg=name)  # the model's values
            assert not np.shares_memory(array, graph.initializers[original].const_value.numpy())
        # the head's nodes read its own initializers, never the model's
        for node in graph:
            if node.name.startswith(head):
                assert all(v.name.startswith(head) or v.name in (stage.output, "labels")
                           for v in node.inputs if v is not None and v.producer() is None), node.name


# ---------------------------------------------------------------- both backends train it


@pytest.fixture(scope="module")
def small_resnet(zoo_file):
    return zoo_file("resnet20", input_shape=(3, 8, 8))


def test_both_backends_train_it_alike(small_resnet, tmp_path_factory):
    from llcompile.backends.ort.backend import OrtBackend
    from llcompile.backends.torch.backend import TorchBackend

    program = _dbl_by_macs(small_resnet, blocks=3, aux_head="augmented", aux_depth=0.5)
    assert _heads(program) == [[4, 5, 7, 9], [7, 8, 9], None]
    config = OptimizerConfig()
    torch_backend = TorchBackend(device="cpu", mode="eager")
    ort_stages = OrtBackend(cache_dir=tmp_path_factory.mktemp("ort")).build(program, config)
    torch_stages = torch_backend.build(program, config)
    head_params = [name for stage in program.stages if stage.head for name in stage.head.params]
    before = {name: value for stage in torch_stages for name, value in stage.state().items()}
    rng = np.random.default_rng(0)
    ort_losses, torch_losses = [], []
    for _ in range(3):
        x = rng.standard_normal((8, 3, 8, 8)).astype(np.float32)
        labels = rng.integers(0, CLASSES, 8).astype(np.int64)
        ort_losses.append(train_chain(ort_stages, x, labels, 0.05))
        torch_losses.append(train_chain(torch_stages, *torch_backend.to_batch(x, labels), 0.05))
    np.testing.assert_allclose(ort_losses, torch_losses, rtol=1e-4)  # as the backends' parity test
    after = {name: value for stage in torch_stages for name, value in stage.state().items()}
    ort_after = {name: value for stage in ort_stages for name, value in stage.state().items()}
    for name in head_params:  # every copied weight trains, in both backends alike
        assert not np.array_equal(after[name], before[name]), name
        np.testing.assert_allclose(ort_after[name], after[name], rtol=1e-3, atol=1e-5, err_msg=name)
    assert set(ort_after) == set(after)


# ---------------------------------------------------------------- the cost report


def test_cost_report_counts_the_copies(resnet20):
    program = _dbl_by_macs(resnet20, blocks=4, aux_head="augmented")
    analysis = llcompile.analyze(resnet20)
    cost = cost_program(program, batch_size=4)
    fc = 64 * CLASSES  # the fresh classifier, Gemm(64 -> 10)
    for stage, stage_cost in zip(program.stages[:-1], cost.stages):
        head = stage_cost.head
        assert head.kind == "augmented"
        assert head.macs_forward == sum(analysis.segments[i].macs for i in stage.head.segments) + fc
        # every head layer, its first included, passes the error on (into the block): dX and dW each = forward
        assert head.macs_backward_dx == head.macs_backward_dw == head.macs_forward
    # by hand, the last head (copy of segment 9 = residual block layer3.2 + pool + flatten): 2 convs 3x3 64->64
    # on 8x8
    last = cost.stages[2].head
    assert last.macs_forward == 2 * 8 * 8 * 64 * 64 * 9 + fc == 4_719_232
    assert last.params == 2 * 64 * 64 * 9 + 2 * 2 * 64 + fc + CLASSES  # convs, BN scale+shift, fc weight+bias
    # element ops per sample on 64x8x8 = 4096 elements: BN, ReLU, BN, Add, ReLU, GAP (its input), the loss
    # (its 10 logits); the backward pass the same
    assert last.element_ops_forward == last.element_ops_backward == 6 * 4096 + CLASSES == 24_586
    # kept at batch 4, float32: both BNs' inputs, both ReLUs' outputs (the first is also the second conv's
    # input), the Gemm's input (64), the log-probabilities (10) and int64 labels per sample; each BN's
    # mean and inverse std (2 x 64); the loss's scalar. The head's input is the block's last ReLU output,
    # kept (and charged) by the block.
    assert last.activation_bytes == 4 * (4 * (4 * 4096 + 64 + CLASSES) + 8) + 2 * 2 * 64 * 4 + 4 == 264_388
    assert cost.macs()["aux_forward"] == sum(s.head.macs_forward for s in cost.stages if s.head)


def test_kept_activations_match_torch(small_resnet):
    from llcompile.report.saved_tensors import measure_saved_bytes

    program = llcompile.transform(small_resnet, "dbl", blocks=3, aux_head="augmented")
    predicted = [stage.activation_bytes for stage in cost_program(program, batch_size=2).stages]
    assert predicted == measure_saved_bytes(program, 2)


# ---------------------------------------------------------------- options


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(kind="fc", depth=0.5), "aux_depth applies to aux_head='augmented' only"),
    (dict(kind="augmented", depth=0.0), "must be in (0, 1]"),
    (dict(kind="augmented", depth=1.5), "must be in (0, 1]"),
])
def test_bad_depth_is_refused(kwargs, fragment):
    with pytest.raises(LLCompileError) as error:
        AuxHeadsPass(**kwargs)
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_depth_is_only_recorded_for_augmented(resnet20):
    assert "aux_depth" not in llcompile.transform(resnet20, "dbl", blocks=2).options
    with pytest.raises(LLCompileError, match="takes no aux_depth"):
        llcompile.transform(resnet20, "bp", aux_depth=0.5)


@pytest.mark.parametrize("args, fragment", [
    (["--aux-depth", "0.5"], "--aux-depth applies to --aux-head augmented only, not fc"),
    (["--aux-head", "conv", "--aux-depth", "0.5"], "augmented only, not conv"),
    (["--aux-head", "augmented", "--aux-depth", "0"], "--aux-depth"),
    (["--aux-head", "augmented", "--aux-depth", "1.01"], "--aux-depth"),
    (["-s", "local-sgd", "--aux-depth", "0.5"], "takes no --aux-depth"),
])
def test_cli_errors_are_one_line_exit_2(tmp_path, save_model, monkeypatch, capsys, args, fragment):
    from llcompile.cli.commands import main

    model = save_model(lm.small_cnn())
    monkeypatch.setattr(sys, "argv", ["llcompile", "transform", str(model), "-o", str(tmp_path / "out"), *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], lines
    assert not (tmp_path / "out").exists()
