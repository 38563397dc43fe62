"""Hostile names and string attributes: the model trains correctly or is refused, and nothing runs.

Every name of a small CNN (graph, nodes, values, initializers, doc strings, metadata) is replaced by
a hostile string; the torch stages must compute what onnxruntime computes on the original model,
train a step, and leave the working directory (where the payload would write) empty. The code fx
writes must not depend on the model's names at all.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import llcompile
from llcompile.backends.base import OptimizerConfig, classifier_logits_name
from llcompile.backends.torch.backend import TorchBackend
from llcompile.backends.torch.builder import build_module
from llcompile.errors import LLCompileError
from llcompile.frontend.importer import canonicalize
from llcompile.compiler.verify import relative_error, run_model
from llcompile.util.ort_session import session
from llcompile.frontend.canonical.training_mode import with_training_mode
from tests.backends.chain import losses_on_both_backends
from tests.fixtures import legacy_models as lm
from tests.fixtures.hostile_names import HOSTILE_NAMES, PAYLOAD_FILE, renamed

TOLERANCE = 1e-5


@pytest.fixture
def empty_cwd(tmp_path, monkeypatch):
    """The working directory, where a payload's relative paths land; checked empty afterwards."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    yield work
    assert not (work / PAYLOAD_FILE).exists()
    assert list(work.iterdir()) == []


def _stage_modules(program: llcompile.Program):
    return [build_module(s.model, [s.loss, s.output, classifier_logits_name(s, program)]) for s in program.stages]


@pytest.mark.parametrize("key", list(HOSTILE_NAMES))
def test_hostile_names_train_like_onnxruntime(key, empty_cwd):
    original = lm.small_cnn()
    program = llcompile.transform(canonicalize(renamed(original, HOSTILE_NAMES[key])), "dbl", blocks=2)
    plain = llcompile.transform(canonicalize(original), "dbl", blocks=2)
    for module, plain_module in zip(_stage_modules(program), _stage_modules(plain)):
        assert module.code == plain_module.code
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    stages = TorchBackend().build(program, OptimizerConfig())
    output = torch.from_numpy(x)
    for stage in stages:
        output = stage.forward(output)
    expected = run_model(with_training_mode(original, training=False), x)
    assert relative_error(output.numpy(), expected) < TOLERANCE
    losses = losses_on_both_backends(program, x, np.arange(4) % 10)
    assert all(np.isfinite(losses["torch"]))
    np.testing.assert_allclose(losses["torch"], losses["ort"], rtol=1e-3, atol=1e-5)


def test_annotated_code_shows_names_escaped(empty_cwd):
    name = HOSTILE_NAMES["control"]
    program = llcompile.transform(canonicalize(renamed(lm.small_cnn(), name)), "bp")
    (module,) = _stage_modules(program)
    annotated = module.annotated_code()
    assert "\x1b" not in annotated and "\r" not in annotated and "\x00" not in annotated
    assert "\\x1b[31mred\\x1b[0m\\r\\t\\x00\\x7f" in annotated


def _conv_model(**attributes) -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.ones((2, 3, 3, 3), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], **attributes)], "conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _loss_model(reduction: str) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("SoftmaxCrossEntropyLoss", ["scores", "labels"], ["loss"], reduction=reduction)], "loss",
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [3, 5]),
         helper.make_tensor_value_info("labels", TensorProto.INT64, [3])],
        [helper.make_tensor_value_info("loss", TensorProto.FLOAT, [])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _pad_model(mode: str) -> onnx.ModelProto:
    pads = numpy_helper.from_array(np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64), "pads")
    graph = helper.make_graph([helper.make_node("Pad", ["x", "pads"], ["y"], mode=mode)], "pad",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[pads])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _gelu_model(approximate: str) -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Gelu", ["x"], ["y"], approximate=approximate)], "gelu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])


STRING_ATTRIBUTE_MODELS = {
    "auto_pad": lambda text: _conv_model(auto_pad=text),
    "reduction": _loss_model,
    "mode": _pad_model,
    "approximate": _gelu_model,
}


@pytest.mark.parametrize("key", ["newline_code", "quotes", "backslash", "control", "format"])
@pytest.mark.parametrize("attribute", list(STRING_ATTRIBUTE_MODELS))
def test_hostile_string_attributes_are_refused(attribute, key, empty_cwd):
    """The string attributes the backend reads select from a fixed set; anything else is an error."""
    model = STRING_ATTRIBUTE_MODELS[attribute](HOSTILE_NAMES[key])
    with pytest.raises(LLCompileError, match=f"{attribute}=.* is not supported"):
        build_module(model, [model.graph.output[0].name])


@pytest.mark.parametrize("attribute,value", [("auto_pad", "SAME_UPPER"), ("reduction", "sum"), ("mode", "reflect"),
                                             ("approximate", "tanh")])
def test_known_string_attributes_still_work(attribute, value):
    model = STRING_ATTRIBUTE_MODELS[attribute](value)
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    rng = np.random.default_rng(1)
    feeds = {i.name: (rng.integers(0, 5, [3]) if i.type.tensor_type.elem_type == TensorProto.INT64
                      else rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32))
             for i in inputs}
    (expected,) = session(model).run(None, feeds)
    (actual,) = build_module(model, [model.graph.output[0].name])(*(torch.from_numpy(v) for v in feeds.values()))
    assert relative_error(actual.detach().numpy(), expected) < TOLERANCE
