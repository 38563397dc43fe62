"""Layers, cut points and segments of the zoo's networks, checked against their known structure."""

import re

import pytest

import llcompile
from llcompile.frontend.graph_builder import value_named
from tests.fixtures.token_models import export_tiny


def _analysis(zoo_file, name, **kw):
    return llcompile.analyze(llcompile.load(zoo_file(name, **kw)))


@pytest.mark.parametrize("name, blocks_per_stage", [("resnet20", 3), ("resnet56", 9)])
def test_resnet_cut_points_are_residual_block_outputs(zoo_file, name, blocks_per_stage):
    analysis = _analysis(zoo_file, name)
    cuts = analysis.cut_points
    block_outputs = [f"/stages/layer{s}/layer{s}.{b}/relu/Relu_output_0"
                     for s in (1, 2, 3) for b in range(blocks_per_stage)]
    # stem, every residual block output but the last (it feeds pooling, not a layer), the head input
    assert cuts == ["/stem/act/Relu_output_0", *block_outputs[:-1], "/head/flatten/Flatten_output_0"]
    assert len(analysis.layers) == 6 * blocks_per_stage + 2 + 2  # convs + stem + fc + 2 projection shortcuts
    assert sum(s.macs for s in analysis.segments) == analysis.macs


def test_resnet20_macs_by_hand(zoo_file):
    analysis = _analysis(zoo_file, "resnet20")
    conv3 = lambda hw, cin, cout: hw * hw * cout * cin * 9  # noqa: E731
    expected = (conv3(32, 3, 16) + 6 * conv3(32, 16, 16)
                + conv3(16, 16, 32) + 5 * conv3(16, 32, 32) + 16 * 16 * 32 * 16
                + conv3(8, 32, 64) + 5 * conv3(8, 64, 64) + 8 * 8 * 64 * 32
                + 64 * 10)
    assert analysis.macs == expected


def test_mobilenetv2_cut_points(zoo_file):
    analysis = _analysis(zoo_file, "mobilenetv2")
    cuts = set(analysis.cut_points)
    # the output of every inverted-residual block with a skip connection is a cut point ...
    adds = [c for c in cuts if re.search(r"/blocks\.\d+/Add_output_0$", c)]
    assert len(adds) == 10  # (t,c,n,s) table: 1+2+3+2+2 residual blocks
    # plus, in the 7 blocks without a skip, the expand and depthwise outputs and the block output
    # (block 0 has no expansion layer: 2 cuts), the stem output and the head's input
    assert len(cuts) == 10 + (2 + 6 * 3) + 2
    # ... and nothing inside a residual block is
    residual_blocks = {re.search(r"blocks\.(\d+)/", c).group(1) for c in adds}
    for cut in cuts:
        match = re.search(r"/blocks\.(\d+)/(\w+)/", cut)
        if match and match.group(1) in residual_blocks:
            pytest.fail(f"{cut} lies inside residual block {match.group(1)}")
    depthwise = [layer for layer in analysis.layers if layer.op == "DepthwiseConv"]
    assert len(depthwise) == 17


def test_vgg_every_layer_output_is_a_cut_point(zoo_file):
    analysis = _analysis(zoo_file, "vgg11_bn")
    assert len(analysis.layers) == 9
    assert len(analysis.cut_points) == len(analysis.layers) - 1
    assert [len(s.layers) for s in analysis.segments] == [1] * 9


def test_analysis_does_not_mutate(zoo_file):
    import onnx_ir as ir

    model = llcompile.load(zoo_file("small_cnn"))
    before = ir.to_proto(model).SerializeToString()
    llcompile.analyze(model)
    assert ir.to_proto(model).SerializeToString() == before


def test_parameter_roles_cover_biases_and_scale_layers():
    import numpy as np
    import onnx_ir as ir
    from onnx import TensorProto, helper, numpy_helper

    from llcompile.analysis.structure import parameter_roles

    inits = {"w": np.ones((4, 3)), "b": np.ones(3), "scale": np.ones(3), "shift": np.ones(3), "two": np.array(2.0),
             "bn_s": np.ones(3), "bn_b": np.ones(3), "bn_m": np.zeros(3), "bn_v": np.ones(3)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["a"]),
             helper.make_node("Unsqueeze", ["a", "axes"], ["u"]),
             helper.make_node("BatchNormalization", ["u", "bn_s", "bn_b", "bn_m", "bn_v"], ["n"]),
             helper.make_node("Mul", ["n", "scale"], ["s"]), helper.make_node("Add", ["s", "shift"], ["t"]),
             helper.make_node("Mul", ["t", "two"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()]
                              + [numpy_helper.from_array(np.array([2], np.int64), "axes")])
    roles = parameter_roles(ir.from_proto(helper.make_model(graph)).graph)
    assert roles == {"w": "param", "b": "param", "bn_s": "param", "bn_b": "param", "bn_m": "buffer",
                     "bn_v": "buffer", "scale": "param", "shift": "param"}  # not the scalar, not the axes


def test_parameter_roles_of_a_transformer_and_an_input_normalisation():
    """LayerNorm affine, layer scale, positional embedding, class token: trained; the mean and std
    subtracted and divided before the first layer, and scalars: constants."""
    import numpy as np
    import onnx_ir as ir
    from onnx import TensorProto, helper, numpy_helper

    from llcompile.analysis.structure import parameter_roles

    inits = {"mean": np.ones(4), "std": np.ones(4), "w": np.ones((4, 4)), "token": np.ones((1, 1, 4)),
             "pos": np.ones((1, 3, 4)), "ln_s": np.ones(4), "ln_b": np.ones(4), "gamma": np.ones(4),
             "half": np.array(0.5)}
    nodes = [helper.make_node("Sub", ["x", "mean"], ["c"]), helper.make_node("Div", ["c", "std"], ["z"]),
             helper.make_node("MatMul", ["z", "w"], ["h"]),
             helper.make_node("Expand", ["token", "token_shape"], ["tokens"]),
             helper.make_node("Concat", ["tokens", "h"], ["all"], axis=1),
             helper.make_node("Add", ["all", "pos"], ["p"]),
             helper.make_node("LayerNormalization", ["p", "ln_s", "ln_b"], ["n"]),
             helper.make_node("Mul", ["n", "gamma"], ["g"]), helper.make_node("Mul", ["g", "half"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()]
                              + [numpy_helper.from_array(np.array([2, 1, 4], np.int64), "token_shape")])
    roles = parameter_roles(ir.from_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])).graph)
    assert roles == {name: "param" for name in ("w", "token", "pos", "ln_s", "ln_b", "gamma")}


@pytest.mark.parametrize("kind", ["torchscript-17", "torchscript-14-decomposed", "dynamo-18"])
def test_vit_cut_points_are_the_residual_stream(tiny_vit_file, kind):
    """Pre-norm blocks read the stream through a LayerNorm (the op, or its decomposed ReduceMean/Sub):
    the embedding and the stream after each sub-block but the last are cut points; the last feeds the
    head's norm, so the head's input (the class token) is the last dominator before its layer."""
    path, _ = tiny_vit_file(kind)
    model = llcompile.load(path)
    cuts = llcompile.analyze(model).cut_points
    producers = {out.name: node for node in model.graph for out in node.outputs}
    assert [producers[cut].op_type for cut in cuts] == ["Add"] * 4 + ["Gather"]


@pytest.mark.parametrize("name", ["vit", "mixer"])
def test_pre_norm_residual_stream_is_cut_after_every_attention_or_mixing_and_mlp(tmp_path, name):
    # the stream reaches each block's layers only through a LayerNormalization; depth 2: the embedding's
    # output, the stream after each sub-block but the last (which feeds the head's norm), the head's input
    export_tiny(name, tmp_path / "m.onnx")
    model = llcompile.load(tmp_path / "m.onnx")
    cuts = llcompile.analyze(model).cut_points
    shapes = [list(value_named(model.graph, c).shape)[1:] for c in cuts]
    tokens = 5 if name == "vit" else 4  # 8x8 / 4x4 patches (+ the class token)
    # the Mixer's embedding is a Reshape to [N, -1, 16], whose -1 shape inference leaves symbolic
    assert shapes[0][-1] == 16 and shapes[1:] == [[tokens, 16]] * 3 + [[16]]
    assert [c for c in cuts if "/blocks/" in c] == [f"/blocks/blocks.{b}/{a}_output_0"
                                                   for b, a in [(0, "Add"), (0, "Add_1"), (1, "Add")]]
