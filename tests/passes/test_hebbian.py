"""HebbianPass on real graphs (which tensors each HebbianUpdate reads, and the new weights it computes),
and the compile side of LoCal+SGD: ``local-sgd`` / ``dbl-hebbian`` programs and ``recompile``."""

from __future__ import annotations

import numpy as np
import onnx
import onnx.reference
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from llcompile.analysis.structure import analyze
from llcompile.compiler.transform import recompile, transform
from llcompile.errors import LLCompileError
from llcompile.frontend.importer import load
from llcompile.ops import hebbian as hebbian_op
from llcompile.passes import hebbian_function
from llcompile.frontend.graph_builder import value_named
from llcompile.passes.hebbian import HebbianPass
from llcompile.passes.partition import PartitionPass
from llcompile.program.plan import Plan
from llcompile.program.program import Program
from llcompile.util.ort_session import session as ort_session
from llcompile.compiler.verify import verify
from tests.fixtures.token_models import INPUT_SHAPE, export_tiny
from tests.reference import dense_hebbian_update, hebbian_update

RULES = {"oja": (1.0, 0), "hebb": (0.0, 1)}
LR = 0.5  # large: the step must stand out against float32 rounding of the weight
EPS = 1e-5
IN, OUT, CLASSES = 6, 5, 4


# ---------------------------------------------------------------- helpers


def _localized(path, prefix: int = 1, rule: str = "oja", activation: str = "post") -> ir.Model:
    """The canonical model at ``path`` partitioned with a Hebbian prefix and rewritten by the pass."""
    model = load(path)
    PartitionPass(blocks=1, prefix=prefix)(model)
    result = HebbianPass(rule=rule, activation=activation)(model)
    assert result.modified is True and result.model is model
    return model


def _run(model: ir.Model, outputs: list[str], feeds: dict) -> dict[str, np.ndarray]:
    """Run ``model`` (a copy) with exactly ``outputs`` as graph outputs."""
    model = ir.from_proto(ir.to_proto(model))
    produced = {v.name: v for node in model.graph for v in node.outputs}
    produced.update({v.name: v for v in model.graph.inputs})
    model.graph.outputs.clear()
    model.graph.outputs.extend(produced[name] for name in outputs)
    return dict(zip(outputs, ort_session(model).run(outputs, feeds)))


def _updates(model: ir.Model) -> list[ir.Node]:
    return [node for node in model.graph
            if (node.domain, node.op_type) == (hebbian_function.DOMAIN, hebbian_function.OP_TYPE)]


def _update_of(model: ir.Model, weight: str) -> ir.Node:
    """The HebbianUpdate node whose result is (a Reshape/Transpose away from) the plan's new ``weight``."""
    value = value_named(model.graph, Plan.read(model).stages[0].updates[weight])
    while (value.producer().domain, value.producer().op_type) != (hebbian_function.DOMAIN, hebbian_function.OP_TYPE):
        assert value.producer().op_type in ("Reshape", "Transpose")
        value = value.producer().inputs[0]
    return value.producer()


def _source(value: ir.Value) -> ir.Value:
    """Look through the Reshape/Transpose the pass puts around a dense layer's operands."""
    while value.producer() is not None and value.producer().op_type in ("Reshape", "Transpose") \
            and ".hebbian." in value.producer().name:
        value = value.producer().inputs[0]
    return value


def _batch_norm_training(z: np.ndarray, scale, bias) -> np.ndarray:
    mean, var = z.mean(axis=0), z.var(axis=0)
    return (z - mean) / np.sqrt(var + EPS) * scale + bias


# ---------------------------------------------------------------- dense layers (Gemm, MatMul)


def _dense_model(kind: str, bn: bool, seed: int = 0) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """x [N, IN] -> layer (OUT units) -> [BatchNormalization] -> Relu -> Gemm -> logits [N, CLASSES].

    ``kind``: ``gemm_t`` (Gemm transB=1, weight [OUT, IN]), ``gemm`` (transB=0, weight [IN, OUT]),
    ``matmul`` (MatMul, weight [IN, OUT], no bias).
    """
    rng = np.random.default_rng(seed)
    rows = rng.standard_normal((OUT, IN)).astype(np.float32)
    params = {"w": rows if kind == "gemm_t" else np.ascontiguousarray(rows.T),
              "b": 0.5 * rng.standard_normal(OUT) if kind != "matmul" else np.zeros(OUT),
              "scale": rng.uniform(0.5, 1.5, OUT), "shift": rng.standard_normal(OUT),
              "head_w": rng.standard_normal((CLASSES, OUT)), "head_b": np.zeros(CLASSES)}
    params = {name: value.astype(np.float32) for name, value in params.items()}
    if kind == "matmul":
        nodes = [helper.make_node("MatMul", ["x", "w"], ["z"], name="layer")]
    else:
        nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["z"], name="layer", transB=int(kind == "gemm_t"))]
    h = "z"
    if bn:
        params.update(mean=np.zeros(OUT, np.float32), var=np.ones(OUT, np.float32))
        nodes.append(helper.make_node("BatchNormalization", ["z", "scale", "shift", "mean", "var"], ["bn"], name="bn",
                                      epsilon=EPS))
        h = "bn"
    nodes += [helper.make_node("Relu", [h], ["h"], name="relu"),
              helper.make_node("Gemm", ["h", "head_w", "head_b"], ["logits"], name="head", transB=1)]
    used = {i for n in nodes for i in n.input}
    graph = helper.make_graph(nodes, "dense", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", IN])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])],
                              [numpy_helper.from_array(v, k) for k, v in params.items() if k in used])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), params


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("activation", ["pre", "post"])
@pytest.mark.parametrize("bn", [False, True], ids=["relu", "bn-relu"])
@pytest.mark.parametrize("kind", ["gemm_t", "gemm", "matmul"])
def test_dense_layer_update_is_y_transposed_x(save_model, kind, bn, activation, rule):
    proto, p = _dense_model(kind, bn)
    model = _localized(save_model(proto), rule=rule, activation=activation)
    plan = Plan.read(model)
    stage = plan.stages[0]
    assert stage.kind == "hebbian" and list(stage.updates) == ["w"]  # the head is not localized
    new_weight = stage.updates["w"]

    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, IN)).astype(np.float32)
    lr = np.asarray(LR, np.float32)
    result = _run(model, [new_weight], {"x": x, stage.lr_input: lr})[new_weight]
    assert result.shape == p["w"].shape  # the weight's own layout: [OUT, IN] for transB=1, else [IN, OUT]

    np.testing.assert_allclose(result, _expected_dense(kind, p, x, bn, activation, rule), rtol=1e-4, atol=1e-5)


def _expected_dense(kind: str, p: dict, x: np.ndarray, bn: bool, activation: str, rule: str) -> np.ndarray:
    """The new weight of ``_dense_model``'s layer, in the weight's own layout, computed in numpy."""
    rows = p["w"] if kind == "gemm_t" else p["w"].T  # [OUT, IN]
    z = x.astype(np.float64) @ rows.T.astype(np.float64) + p["b"]
    y = z if activation == "pre" else np.maximum(_batch_norm_training(z, p["scale"], p["shift"]) if bn else z, 0)
    expected = dense_hebbian_update(x, y, rows, LR, *RULES[rule])
    return expected if kind == "gemm_t" else expected.T


@pytest.mark.parametrize("kind", ["gemm_t", "gemm", "matmul"])
def test_dense_program_stage_passes_the_checker_and_computes_the_update(save_model, tmp_path, kind):
    """Through emit (full ONNX check of the stage graph, whose outputs include the new weight) and ORT."""
    proto, p = _dense_model(kind, bn=True)
    program = transform(save_model(proto), "local-sgd", prefix=1)
    hebbian, final = program.stages
    assert list(hebbian.updates) == ["w"] and "w" not in final.params
    x = np.random.default_rng(6).standard_normal((16, IN)).astype(np.float32)
    (new,) = ort_session(hebbian.model).run([hebbian.updates["w"]], {hebbian.input: x,
                                                                     hebbian.lr_input: np.asarray(LR, np.float32)})
    np.testing.assert_allclose(new, _expected_dense(kind, p, x, True, "post", "oja"), rtol=1e-4, atol=1e-5)
    program.save(tmp_path / "program")
    errors = verify(tmp_path / "program").errors
    assert all(error < 1e-5 for error in errors.values()), errors


def test_dense_update_reads_the_layer_input_and_the_chosen_activation(save_model):
    proto, _ = _dense_model("gemm", bn=True)
    for activation, expected in [("pre", "z"), ("post", "h")]:
        model = _localized(save_model(proto, f"{activation}.onnx"), activation=activation)
        node = _update_of(model, "w")
        assert _source(node.inputs[0]).name == "x"
        assert _source(node.inputs[1]).name == expected
        assert _source(node.inputs[2]).name == "w"
        assert node.inputs[3].name == Plan.read(model).stages[0].lr_input


def test_zoo_mlp_post_activation_is_the_relu_after_batchnorm(zoo_file):
    path = zoo_file("mlp", input_shape=(3, 4, 4))
    model = _localized(path, prefix=2)
    analysis = analyze(load(path))
    stage = Plan.read(model).stages[0]
    localized = [layer for layer in analysis.layers if layer.segment < 2]
    assert set(stage.updates) == {layer.weight for layer in localized} and len(localized) == 2
    nodes = {node.name: node for node in model.graph}
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3, 4, 4)).astype(np.float32)
    for layer in localized:
        update = _update_of(model, layer.weight)
        y = _source(update.inputs[1])
        assert y.producer().op_type == "Relu"
        assert y.producer().inputs[0].producer().op_type == "BatchNormalization"
        assert y.producer().inputs[0].producer().inputs[0] is nodes[layer.name].outputs[0]
        layer_x = nodes[layer.name].inputs[0]
        values = _run(model, [layer_x.name, y.name, stage.updates[layer.weight]],
                      {analysis.input: x, stage.lr_input: np.asarray(LR, np.float32)})
        weight = model.graph.initializers[layer.weight].const_value.numpy()  # Gemm transB=1: rows
        expected = dense_hebbian_update(values[layer_x.name], values[y.name], weight, LR, *RULES["oja"])
        np.testing.assert_allclose(values[stage.updates[layer.weight]], expected, rtol=1e-4, atol=1e-5)


def test_gemm_with_transposed_input_is_refused(save_model):
    proto, _ = _dense_model("gemm", bn=False)
    layer = proto.graph.node[0]
    layer.attribute.append(helper.make_attribute("transA", 1))
    layer.input[0] = "xt"
    proto.graph.node.insert(0, helper.make_node("Transpose", ["x"], ["xt"], name="t", perm=[1, 0]))
    model = load(save_model(proto))
    PartitionPass(blocks=1, prefix=1)(model)
    with pytest.raises(LLCompileError, match="transA"):
        HebbianPass()(model)


# ---------------------------------------------------------------- convolutions


def _conv_model(seed: int = 0, **conv_attributes) -> tuple[onnx.ModelProto, np.ndarray]:
    """x [N, 4, 9, 8] -> Conv (6 filters of 2 channels: group 2, 3x2 kernel) -> BN -> Relu -> GAP -> Flatten
    -> Gemm -> logits."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((6, 2, 3, 2)).astype(np.float32)
    inits = {"w": w, "scale": rng.uniform(0.5, 1.5, 6), "shift": rng.standard_normal(6), "mean": np.zeros(6),
             "var": np.ones(6), "head_w": rng.standard_normal((CLASSES, 6)), "head_b": np.zeros(CLASSES)}
    nodes = [helper.make_node("Conv", ["x", "w"], ["z"], name="conv", kernel_shape=[3, 2], group=2, **conv_attributes),
             helper.make_node("BatchNormalization", ["z", "scale", "shift", "mean", "var"], ["bn"], name="bn"),
             helper.make_node("Relu", ["bn"], ["h"], name="relu"),
             helper.make_node("GlobalAveragePool", ["h"], ["gap"], name="gap"),
             helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
             helper.make_node("Gemm", ["flat", "head_w", "head_b"], ["logits"], name="head", transB=1)]
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 9, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES])],
                              [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), w


CONVS = {
    "explicit": dict(strides=[2, 1], pads=[1, 0, 2, 1], dilations=[1, 2]),
    # the 2-wide kernel on the 8 columns needs one pad column: after them (UPPER) or before (LOWER)
    "same-upper": dict(strides=[2, 1], auto_pad="SAME_UPPER"),
    "same-lower": dict(auto_pad="SAME_LOWER"),  # ORT's Conv has no dilation with SAME
    "valid": dict(strides=[2, 1], auto_pad="VALID"),
}


@pytest.mark.parametrize("conv", CONVS)
@pytest.mark.parametrize("activation", ["pre", "post"])
def test_conv_update_is_the_correlation_of_the_conv(save_model, conv, activation):
    """Against the definition's numpy loops for explicit pads; for auto_pad through the adjoint identity
    ``count * <H, V> = sum(y * Conv(x, V))`` for random V, with ORT's own Conv (same attributes)
    computing the right side, so the pads the pass resolved are checked against the Conv itself."""
    proto, w = _conv_model(**CONVS[conv])
    model = _localized(save_model(proto), activation=activation)
    stage = Plan.read(model).stages[0]
    node = _update_of(model, "w")
    y_name = {"pre": "z", "post": "h"}[activation]
    assert [v.name for v in node.inputs[:3]] == ["x", y_name, "w"]
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 4, 9, 8)).astype(np.float32)
    values = _run(model, [y_name, stage.updates["w"]], {"x": x, stage.lr_input: np.asarray(LR, np.float32)})
    y, new = values[y_name].astype(np.float64), values[stage.updates["w"]]
    if conv == "explicit":
        a = CONVS[conv]
        expected = hebbian_update(x, y, w, LR, a["strides"], a["pads"], a["dilations"], 2, *RULES["oja"])
        np.testing.assert_allclose(new, expected, rtol=1e-4, atol=1e-5)
    else:
        _check_adjoint(proto, x, y, w, new)


def _check_adjoint(proto: onnx.ModelProto, x: np.ndarray, y: np.ndarray, w: np.ndarray, new: np.ndarray) -> None:
    """``count * <H, V> == sum(y * Conv(x, V))`` for random V, the Conv being the model's own node."""
    rng = np.random.default_rng(5)
    count = y.shape[0] * y.shape[2] * y.shape[3]
    power = (y ** 2).sum(axis=(0, 2, 3)) / count
    h = (new - w) / LR + power[:, None, None, None] * w  # Oja: W_new = W + lr (H - D W)
    conv_node = next(n for n in proto.graph.node if n.op_type == "Conv")
    conv_only = helper.make_model(helper.make_graph(
        [helper.make_node("Conv", ["x", "v"], ["out"], **{a.name: helper.get_attribute_value(a)
                                                          for a in conv_node.attribute})], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape),
         helper.make_tensor_value_info("v", TensorProto.FLOAT, w.shape)],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)]),
        opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    session = ort_session(conv_only)
    for _ in range(3):
        v = rng.standard_normal(w.shape).astype(np.float32)
        (out,) = session.run(None, {"x": x, "v": v})
        assert out.shape == y.shape
        assert abs(count * np.sum(h * v) - np.sum(y * out)) < 1e-5 * np.sum(np.abs(y * out))


def _producer_chain(value: ir.Value) -> list[str]:
    ops = []
    while value.producer() is not None and value.producer().op_type != "Conv":
        ops.append(value.producer().op_type)
        value = value.producer().inputs[0]
    return ops[::-1]


@pytest.mark.parametrize("activation", ["pre", "post"])
def test_resnet_activations_stop_at_the_residual_add(zoo_file, activation):
    """Post: the Relu after BN, but for a block's second conv (BN -> Add -> Relu) the BN output."""
    path = zoo_file("resnet20")
    model = _localized(path, prefix=3, activation=activation)
    analysis = analyze(load(path))
    nodes = {node.name: node for node in model.graph}
    localized = [layer for layer in analysis.layers if layer.segment < 3]
    assert len(_updates(model)) == len(localized) == 5
    chains = []
    for layer in localized:
        conv = nodes[layer.name]
        update = _update_of(model, layer.weight)
        assert update.inputs[0] is conv.inputs[0] and update.inputs[2] is conv.inputs[1]
        for name, default in [("strides", [1, 1]), ("dilations", [1, 1]), ("pads", [0] * 4)]:
            assert list(update.attributes[name].value) == list(conv.attributes.get_ints(name, default)), name
        assert update.attributes["group"].value == conv.attributes.get_int("group", 1)
        y = update.inputs[1]
        if activation == "pre":
            assert y is conv.outputs[0]
            continue
        chain = _producer_chain(y)
        chains.append(chain)
        consumers = [use.node.op_type for use in y.uses() if use.node is not update]
        if chain == ["BatchNormalization"]:
            assert consumers == ["Add"]
        else:
            assert chain == ["BatchNormalization", "Relu"]
    if activation == "post":
        assert chains.count(["BatchNormalization"]) == 2 and chains.count(["BatchNormalization", "Relu"]) == 3


@pytest.mark.parametrize("rule", RULES)
def test_resnet_conv_updates_match_the_definition(zoo_file, rule):
    """Every localized conv of resnet20's first two segments, on the values the model computes."""
    path = zoo_file("resnet20")
    model = _localized(path, prefix=2, rule=rule)
    stage = Plan.read(model).stages[0]
    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float32)
    wanted = []
    for weight, new in stage.updates.items():
        update = _update_of(model, weight)
        wanted += [update.inputs[0].name, update.inputs[1].name, new]
    values = _run(model, list(dict.fromkeys(wanted)), {Plan.read(model).input: x,
                                                       stage.lr_input: np.asarray(0.05, np.float32)})
    for weight, new in stage.updates.items():
        update = _update_of(model, weight)
        a = {k: v.value for k, v in update.attributes.items()}
        w = model.graph.initializers[weight].const_value.numpy()
        expected = hebbian_update(values[update.inputs[0].name], values[update.inputs[1].name], w, 0.05,
                                  a["strides"], a["pads"], a["dilations"], a["group"], *RULES[rule])
        np.testing.assert_allclose(values[new], expected, rtol=1e-4, atol=1e-5, err_msg=weight)
    assert len(stage.updates) == 3


# ---------------------------------------------------------------- the plan


def test_pass_records_updates_lr_input_and_options(save_model):
    proto, _ = _dense_model("gemm_t", bn=True)
    model = _localized(save_model(proto), rule="hebb", activation="pre")
    plan = Plan.read(model)
    stage = plan.stages[0]
    lr = next(v for v in model.graph.inputs if v.name == stage.lr_input)
    assert lr.shape == ir.Shape([]) and lr.dtype == ir.DataType.FLOAT
    assert plan.options["hebbian_rule"] == "hebb" and plan.options["hebbian_activation"] == "pre"
    assert plan.options["prefix"] == 1
    (node,) = _updates(model)
    assert {k: v.value for k, v in node.attributes.items() if k in ("decay", "renormalize")} == {
        "decay": 0.0, "renormalize": 1}
    assert model.opset_imports[hebbian_function.DOMAIN] == hebbian_op.DOMAIN_VERSION
    assert (hebbian_function.DOMAIN, hebbian_function.OP_TYPE, "") in model.functions
    # a second run finds the updates in place and changes nothing
    assert HebbianPass()(model).modified is False
    assert len(_updates(model)) == 1


def test_pass_without_a_prefix_only_records_its_rule(save_model):
    proto, _ = _dense_model("gemm_t", bn=False)
    model = load(save_model(proto))
    PartitionPass(blocks=2)(model)
    nodes = [node.op_type for node in model.graph]
    assert HebbianPass(rule="hebb")(model).modified is True
    assert [node.op_type for node in model.graph] == nodes  # no node added
    options = Plan.read(model).options
    assert (options["hebbian_rule"], options["hebbian_activation"]) == ("hebb", "post")
    assert HebbianPass(rule="hebb")(model).modified is False  # recorded already


@pytest.mark.parametrize("options, message", [
    (dict(rule="bcm"), "unknown Hebbian rule 'bcm'"),
    (dict(activation="middle"), "unknown Hebbian activation 'middle'"),
    (dict(subsample=0), "hebbian_subsample must be >= 1"),
])
def test_unknown_rule_or_activation(options, message):
    with pytest.raises(LLCompileError, match=message):
        HebbianPass(**options)


# ---------------------------------------------------------------- compiled programs

PROGRAMS = {"local-sgd-3": ("local-sgd", dict(prefix=3)),
            "dbl-hebbian-2x2": ("dbl-hebbian", dict(prefix=2, blocks=2)),
            "local-sgd-hebb-pre": ("local-sgd", dict(prefix=1, hebbian_rule="hebb", hebbian_activation="pre"))}
ZOO_PROGRAMS = [("resnet20", program) for program in PROGRAMS] + [
    (name, program) for name in ("mobilenetv2", "vgg11_bn") for program in ("local-sgd-3", "dbl-hebbian-2x2")]


def _check_program(program: Program, path, prefix: int) -> None:
    analysis = analyze(load(path))
    hebbian, *trained = program.stages
    localized = [layer for segment in analysis.segments[:prefix] for layer in segment.layers]
    weights = {layer.name: layer.weight for layer in analysis.layers}
    assert hebbian.kind == "hebbian" and hebbian.name == "hebbian"
    assert hebbian.layers == localized
    assert set(hebbian.updates) == {weights[name] for name in localized}
    assert hebbian.loss is None and hebbian.lr_input is not None
    assert hebbian.input == analysis.input and hebbian.output == analysis.segments[prefix].input
    assert [v.name for v in hebbian.model.graph.input] == [hebbian.input, hebbian.lr_input]
    assert [v.name for v in hebbian.model.graph.output] == [hebbian.output, *hebbian.updates.values()]
    assert set(hebbian.updates) <= set(hebbian.params)
    assert program.cuts[0] == hebbian.output == trained[0].input
    for stage in trained:
        assert stage.updates is None and stage.loss is not None
        assert not set(stage.params) & set(hebbian.updates)
        assert not {node.domain for node in stage.model.graph.node} & {hebbian_function.DOMAIN}
    assert [layer for stage in program.stages for layer in stage.layers] == [layer.name for layer in analysis.layers]
    assert program.options["prefix"] == prefix


@pytest.mark.parametrize("name, program_id", ZOO_PROGRAMS)
def test_zoo_program_chain_equals_the_model(zoo_file, tmp_path, name, program_id):
    strategy, options = PROGRAMS[program_id]
    path = zoo_file(name)
    program = transform(path, strategy, **options)
    _check_program(program, path, options["prefix"])
    if strategy == "dbl-hebbian":
        assert [s.kind for s in program.stages] == ["hebbian", "block", "final"]
        assert program.stages[1].head is not None
    else:
        assert [s.kind for s in program.stages] == ["hebbian", "final"]
    program.save(tmp_path / "program")
    errors = verify(tmp_path / "program", batch_size=2).errors
    assert len(errors) == 3 and all(error < 1e-4 for error in errors.values()), errors


def test_hebbian_stage_runs_in_onnx_reference(zoo_file):
    """The stage graph is standard ONNX plus the model-local function: onnx.reference runs it as ORT does."""
    program = transform(zoo_file("mobilenetv2"), "local-sgd", prefix=2)
    stage = program.stages[0]
    onnx.checker.check_model(stage.model, full_check=True)
    assert [(f.domain, f.name) for f in stage.model.functions] == [(hebbian_function.DOMAIN,
                                                                    hebbian_function.OP_TYPE)]
    x = np.random.default_rng(4).standard_normal((2, 3, 32, 32)).astype(np.float32)
    feeds = {stage.input: x, stage.lr_input: np.asarray(0.1, np.float32)}
    names = [stage.output, *stage.updates.values()]
    expected = ort_session(stage.model).run(names, feeds)
    actual = onnx.reference.ReferenceEvaluator(stage.model).run(names, feeds)
    for name, a, e in zip(names, actual, expected):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-5, err_msg=name)
    weights = {t.name: numpy_helper.to_array(t) for t in stage.model.graph.initializer}
    for weight, new in zip(stage.updates, expected[1:]):
        assert new.shape == weights[weight].shape and not np.allclose(new, weights[weight])


@pytest.mark.parametrize("strategy, options", [("local-sgd", {}), ("dbl-hebbian", dict(blocks=2))])
def test_recompile_moves_the_prefix_like_transform(zoo_file, strategy, options):
    path = zoo_file("resnet20")
    program = transform(path, strategy, prefix=2, **options)
    moved = recompile(program, prefix=4)
    direct = transform(path, strategy, prefix=4, **options)
    structure = lambda p: [(s.name, s.kind, s.input, s.output, s.layers, s.params, s.buffers,  # noqa: E731
                            sorted(s.updates or {}), s.loss is None) for s in p.stages]
    assert structure(moved) == structure(direct)
    assert moved.cuts == direct.cuts and moved.options["prefix"] == 4
    assert moved.source == program.source
    _check_program(moved, path, 4)
    assert structure(recompile(moved, prefix=2)) == structure(program)


def test_recompile_keeps_the_rule_and_activation(zoo_file):
    program = transform(zoo_file("resnet20"), "local-sgd", prefix=1, hebbian_rule="hebb", hebbian_activation="pre")
    moved = recompile(program, prefix=2)
    assert moved.options["hebbian_rule"] == "hebb" and moved.options["hebbian_activation"] == "pre"
    graph = moved.stages[0].model.graph
    updates = [node for node in graph.node if node.op_type == hebbian_function.OP_TYPE]
    producers = {out: node for node in graph.node for out in node.output}
    assert len(updates) == 3
    for node in updates:
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        assert (attributes["decay"], attributes["renormalize"]) == (0.0, 1)
        assert producers[node.input[1]].op_type == "Conv"  # pre: the conv's own output


def _one_line_error(call) -> str:
    with pytest.raises(LLCompileError) as info:
        call()
    message = str(info.value)
    assert message and "\n" not in message
    return message


def test_compile_errors_are_one_line(zoo_file):
    path = zoo_file("resnet20")
    segments = len(analyze(load(path)).segments)
    message = _one_line_error(lambda: transform(path, "local-sgd", prefix=segments))
    assert f"at most {segments - 1}" in message
    _one_line_error(lambda: transform(path, "dbl-hebbian", prefix=segments, blocks=1))
    cut_points = analyze(load(path)).cut_points
    message = _one_line_error(lambda: transform(path, "dbl-hebbian", prefix=3, cuts=[cut_points[1], cut_points[5]]))
    assert cut_points[1] in message and "prefix" in message
    # the prefix's own end is no cut between trained blocks either
    _one_line_error(lambda: transform(path, "dbl-hebbian", prefix=3, cuts=[cut_points[2], cut_points[5]]))
    assert "'bcm'" in _one_line_error(lambda: transform(path, "local-sgd", prefix=1, hebbian_rule="bcm"))
    assert "'middle'" in _one_line_error(lambda: transform(path, "local-sgd", prefix=1, hebbian_activation="middle"))
    _one_line_error(lambda: transform(path, "local-sgd", prefix=-1))
    _one_line_error(lambda: transform(path, "dbl", prefix=1))  # a strategy without a prefix


def test_cuts_after_the_prefix_are_kept(zoo_file):
    path = zoo_file("resnet20")
    cut_points = analyze(load(path)).cut_points
    program = transform(path, "dbl-hebbian", prefix=3, cuts=[cut_points[5], cut_points[3]])
    assert program.cuts == [cut_points[2], cut_points[3], cut_points[5]]
    assert [s.input for s in program.stages] == [analyze(load(path)).input, *program.cuts]
    _check_program(program, path, 3)


def test_prefix_zero_is_plain_sgd(zoo_file):
    program = transform(zoo_file("resnet20"), "local-sgd", prefix=0)
    assert [s.kind for s in program.stages] == ["final"]
    assert all(s.updates is None for s in program.stages)


# ---------------------------------------------------------------- Linear layers on token tensors


@pytest.mark.parametrize("rule", RULES)
def test_vit_linear_layers_update_with_every_token_as_a_sample(tmp_path, rule):
    """A transformer's Linear reads [N, tokens, features]: its update is the dense rule over the N x tokens
    rows, each token a sample."""
    export_tiny("vit", tmp_path / "vit.onnx")
    model = _localized(tmp_path / "vit.onnx", prefix=2, rule=rule)  # the patch embedding and block 0's attention
    stage = Plan.read(model).stages[0]
    x = np.random.default_rng(3).standard_normal((3, *INPUT_SHAPE)).astype(np.float32)
    updates = {weight: _update_of(model, weight) for weight in stage.updates}
    dense = {w: u for w, u in updates.items() if model.graph.initializers[w].const_value.numpy().ndim == 2}
    assert len(dense) == 2  # qkv and proj (the class-token attention products are not layers)
    wanted = [name for w, u in dense.items() for name in (_source(u.inputs[0]).name, _source(u.inputs[1]).name,
                                                           stage.updates[w])]
    values = _run(model, list(dict.fromkeys(wanted)), {Plan.read(model).input: x,
                                                       stage.lr_input: np.asarray(0.05, np.float32)})
    for weight, update in dense.items():
        tokens_in, tokens_out = values[_source(update.inputs[0]).name], values[_source(update.inputs[1]).name]
        w = model.graph.initializers[weight].const_value.numpy()  # MatMul weight [in, out]
        assert tokens_in.ndim == 3 and tokens_in.shape[:2] == (3, 5)  # [N, class token + 4 patches, features]
        np.testing.assert_allclose(tokens_out, tokens_in @ w, rtol=1e-4, atol=1e-5)  # the layer's own output
        rows_in, rows_out = tokens_in.reshape(-1, w.shape[0]), tokens_out.reshape(-1, w.shape[1])
        expected = dense_hebbian_update(rows_in, rows_out, w.T, 0.05, *RULES[rule]).T
        np.testing.assert_allclose(values[stage.updates[weight]], expected, rtol=1e-4, atol=1e-5, err_msg=weight)
