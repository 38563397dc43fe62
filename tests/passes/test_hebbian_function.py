"""``ai.llcompile::HebbianUpdate`` (ONNX function body, run by onnx.reference and onnxruntime) and torch's
``hebbian_update`` (eager and TorchScript), against the loop-and-slice numpy definition in ``tests.reference``."""

from __future__ import annotations

import functools
import itertools
import zlib

import numpy as np
import onnx
import onnx.reference
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from llcompile.ops.hebbian import hebbian_update as torch_hebbian_update
from llcompile.ops import hebbian as hebbian_op
from llcompile.passes import hebbian_function
from tests.reference import hebbian_update as reference_update

LR = 0.1
RULES = {"oja": (1.0, 0), "hebb": (0.0, 1)}


def _update_model(x_shape, y_shape, w_shape, opset: int = 17, **attributes) -> onnx.ModelProto:
    """One HebbianUpdate node with the function attached, as the Hebbian pass emits it."""
    node = helper.make_node(hebbian_function.OP_TYPE, ["x", "y", "w", "lr"], ["w_new"],
                            domain=hebbian_function.DOMAIN, **attributes)
    value = lambda name, shape: helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)  # noqa: E731
    graph = helper.make_graph([node], "hebbian", [value("x", x_shape), value("y", y_shape), value("w", w_shape),
                                                  value("lr", [])], [value("w_new", w_shape)])
    model = helper.make_model(graph, ir_version=10, functions=[hebbian_function.function_proto(opset)],
                              opset_imports=[helper.make_opsetid("", opset),
                                             helper.make_opsetid(hebbian_function.DOMAIN,
                                                                 hebbian_op.DOMAIN_VERSION)])
    onnx.checker.check_model(model, full_check=True)
    return model


def _conv_output_size(size, kernel, stride, pad_begin, pad_end, dilation) -> int:
    return (size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1


def _case(rng, cin, cout, group, kernel, size, strides, pads, dilations, n=3):
    dims = len(kernel)
    out = [_conv_output_size(size[i], kernel[i], strides[i], pads[i], pads[dims + i], dilations[i])
           for i in range(dims)]
    x = rng.standard_normal((n, cin, *size)).astype(np.float32)
    w = rng.standard_normal((cout, cin // group, *kernel)).astype(np.float32)
    y = rng.standard_normal((n, cout, *out)).astype(np.float32)
    return x, y, w


def _run_all(x, y, w, lr, strides, pads, dilations, group, decay, renormalize, opset=17,
             triangular=0, temperature=0.0) -> dict[str, np.ndarray]:
    """The new weight from onnx.reference, onnxruntime and torch."""
    attributes = dict(strides=list(strides), pads=list(pads), dilations=list(dilations), group=group, decay=decay,
                      renormalize=renormalize, triangular=triangular, temperature=temperature)
    model = _update_model(x.shape, y.shape, w.shape, opset=opset, **attributes)
    feeds = {"x": x, "y": y, "w": w, "lr": np.asarray(lr, np.float32)}
    results = {
        "onnx.reference": onnx.reference.ReferenceEvaluator(model).run(None, feeds)[0],
        "onnxruntime": ort.InferenceSession(model.SerializeToString(),
                                            providers=["CPUExecutionProvider"]).run(None, feeds)[0],
    }
    arguments = (torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(w), torch.tensor(lr, dtype=torch.float32),
                 list(strides), list(pads), list(dilations), group, decay, bool(renormalize), bool(triangular),
                 temperature)
    with torch.no_grad():
        results["torch"] = torch_hebbian_update(*arguments).numpy()
        results["torchscript"] = _scripted_update()(*arguments).numpy()
    return results


@functools.cache
def _scripted_update():
    """The torch function as TorchScript compiles it into a scripted stage (both rules' code paths)."""
    return torch.jit.script(torch_hebbian_update)


def _check(results: dict[str, np.ndarray], expected: np.ndarray, w: np.ndarray) -> None:
    # the step itself must be resolved, not just the (large) weight it is added to
    assert not np.allclose(expected, w, rtol=0, atol=1e-3)
    for runtime, actual in results.items():
        assert actual.shape == w.shape and actual.dtype == np.float32, runtime
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=2e-6, err_msg=runtime)


# stride, padding, dilation, groups, rule: every combination; a 3x2 kernel on a 9x8 input keeps the two
# spatial axes apart, and the sizes leave a remainder for stride 2 (the correlation must be cropped)
STRIDES = {"s1": (1, 1), "s2": (2, 2), "s21": (2, 1)}
PADS = {"p0": (0, 0, 0, 0), "p1": (1, 1, 1, 1), "p1021": (1, 0, 2, 1)}
DILATIONS = {"d1": (1, 1), "d2": (2, 2)}
GROUPS = {"g1": (4, 6, 1), "g2": (4, 6, 2), "depthwise": (4, 4, 4)}  # cin, cout, group


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("groups", GROUPS)
@pytest.mark.parametrize("dilation", DILATIONS)
@pytest.mark.parametrize("pad", PADS)
@pytest.mark.parametrize("stride", STRIDES)
def test_conv2d_update_matches_the_definition(stride, pad, dilation, groups, rule):
    rng = np.random.default_rng(zlib.crc32(f"{stride}-{pad}-{dilation}-{groups}-{rule}".encode()))
    cin, cout, group = GROUPS[groups]
    strides, pads, dilations = STRIDES[stride], PADS[pad], DILATIONS[dilation]
    x, y, w = _case(rng, cin, cout, group, (3, 2), (9, 8), strides, pads, dilations)
    decay, renormalize = RULES[rule]
    expected = reference_update(x, y, w, LR, strides, pads, dilations, group, decay, renormalize)
    _check(_run_all(x, y, w, LR, strides, pads, dilations, group, decay, renormalize), expected, w)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("stride, pads, dilation, cin, cout, group", [
    (1, (0, 0), 1, 3, 5, 1),
    (2, (1, 1), 1, 4, 6, 2),
    (2, (1, 2), 2, 4, 4, 4),
    (3, (2, 0), 2, 2, 3, 1),
])
def test_conv1d_update_matches_the_definition(stride, pads, dilation, cin, cout, group, rule):
    rng = np.random.default_rng(stride * 100 + cin * 10 + group)
    x, y, w = _case(rng, cin, cout, group, (3,), (11,), (stride,), pads, (dilation,), n=4)
    decay, renormalize = RULES[rule]
    expected = reference_update(x, y, w, LR, (stride,), pads, (dilation,), group, decay, renormalize)
    _check(_run_all(x, y, w, LR, (stride,), pads, (dilation,), group, decay, renormalize), expected, w)


@pytest.mark.parametrize("groups", GROUPS)
@pytest.mark.parametrize("stride, pad", [("s1", "p1"), ("s21", "p1021")])
def test_sanger_update_matches_the_definition(stride, pad, groups):
    """Sanger's decay term, the lower triangle of mean(y y^T) within each group times W; depthwise it is Oja's."""
    rng = np.random.default_rng(zlib.crc32(f"sanger-{stride}-{pad}-{groups}".encode()))
    cin, cout, group = GROUPS[groups]
    strides, pads, dilations = STRIDES[stride], PADS[pad], (1, 1)
    x, y, w = _case(rng, cin, cout, group, (3, 2), (9, 8), strides, pads, dilations)
    expected = reference_update(x, y, w, LR, strides, pads, dilations, group, 1.0, 0, triangular=True)
    _check(_run_all(x, y, w, LR, strides, pads, dilations, group, 1.0, 0, triangular=1), expected, w)
    oja = reference_update(x, y, w, LR, strides, pads, dilations, group, 1.0, 0)
    assert np.allclose(expected, oja) == (groups == "depthwise")


@pytest.mark.parametrize("groups", GROUPS)
@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_soft_winner_take_all_update_matches_the_definition(temperature, groups):
    """SoftHebb: the softmax of y / T over the filters in H, and mean(softmax * y) as Oja's term."""
    rng = np.random.default_rng(zlib.crc32(f"softhebb-{temperature}-{groups}".encode()))
    cin, cout, group = GROUPS[groups]
    x, y, w = _case(rng, cin, cout, group, (3, 2), (9, 8), (2, 1), (1, 0, 2, 1), (1, 1))
    expected = reference_update(x, y, w, LR, (2, 1), (1, 0, 2, 1), (1, 1), group, 1.0, 0, temperature=temperature)
    _check(_run_all(x, y, w, LR, (2, 1), (1, 0, 2, 1), (1, 1), group, 1.0, 0, temperature=temperature), expected, w)
    assert not np.allclose(expected, reference_update(x, y, w, LR, (2, 1), (1, 0, 2, 1), (1, 1), group, 1.0, 0))


@pytest.mark.parametrize("opset", [14, 18, 21])
def test_function_body_for_every_supported_opset(opset):
    """ReduceSum, Slice, Reshape... change between opsets: the body is valid and right in each."""
    rng = np.random.default_rng(opset)
    x, y, w = _case(rng, 4, 6, 2, (3, 3), (7, 7), (2, 2), (1, 1, 1, 1), (1, 1))
    for triangular in (0, 1):
        expected = reference_update(x, y, w, LR, (2, 2), (1, 1, 1, 1), (1, 1), 2, 1.0, 0, triangular)
        _check(_run_all(x, y, w, LR, (2, 2), (1, 1, 1, 1), (1, 1), 2, 1.0, 0, opset, triangular), expected, w)


def test_general_rule_both_terms():
    """decay and renormalize are independent attributes: Oja's term and renormalisation together."""
    rng = np.random.default_rng(7)
    x, y, w = _case(rng, 3, 4, 1, (3, 3), (6, 6), (1, 1), (1, 1, 1, 1), (1, 1))
    expected = reference_update(x, y, w, LR, (1, 1), (1, 1, 1, 1), (1, 1), 1, 0.5, 1)
    _check(_run_all(x, y, w, LR, (1, 1), (1, 1, 1, 1), (1, 1), 1, 0.5, 1), expected, w)


@pytest.mark.parametrize("rule", RULES)
def test_zero_learning_rate_keeps_the_weight(rule):
    rng = np.random.default_rng(3)
    x, y, w = _case(rng, 4, 4, 2, (3, 3), (6, 6), (1, 1), (1, 1, 1, 1), (1, 1))
    for runtime, actual in _run_all(x, y, w, 0.0, (1, 1), (1, 1, 1, 1), (1, 1), 2, *RULES[rule]).items():
        np.testing.assert_allclose(actual, w, rtol=1e-6, atol=0, err_msg=runtime)


def test_renormalized_filters_keep_their_norms_and_oja_shrinks_large_ones():
    rng = np.random.default_rng(5)
    x, y, w = _case(rng, 4, 6, 1, (3, 3), (6, 6), (1, 1), (1, 1, 1, 1), (1, 1))
    norms = lambda a: np.linalg.norm(a.reshape(len(a), -1), axis=1)  # noqa: E731
    for runtime, actual in _run_all(x, y, w, LR, (1, 1), (1, 1, 1, 1), (1, 1), 1, *RULES["hebb"]).items():
        np.testing.assert_allclose(norms(actual), norms(w), rtol=1e-5, err_msg=runtime)
        assert not np.allclose(actual, w, atol=1e-3)
    # Oja with y = w.x on a unit-norm input: ||w|| > 1 decays toward 1 (its fixed point)
    x = rng.standard_normal((256, 8, 1)).astype(np.float32)
    w = (3.0 * rng.standard_normal((1, 8, 1))).astype(np.float32)
    w *= 3.0 / np.linalg.norm(w)
    y = np.einsum("nci,oci->noi", x, w).astype(np.float32)
    for runtime, actual in _run_all(x, y, w, 0.01, (1,), (0, 0), (1,), 1, *RULES["oja"]).items():
        assert 1.0 < np.linalg.norm(actual) < 3.0, runtime


def test_a_silent_zero_filter_stays_zero():
    """A filter of zeros whose output is all zero (its pre-activation) has H = 0 and mean y^2 = 0: no
    update, under either rule; nothing may turn into NaN (0/0 in the renormalisation)."""
    rng = np.random.default_rng(11)
    x, y, w = _case(rng, 3, 4, 1, (3, 3), (6, 6), (1, 1), (1, 1, 1, 1), (1, 1))
    w[2] = 0.0
    y[:, 2] = 0.0
    for rule, (decay, renormalize) in RULES.items():
        with np.errstate(invalid="ignore"):  # the definition's 0/0 for the zero filter
            expected = reference_update(x, y, w, LR, (1, 1), (1, 1, 1, 1), (1, 1), 1, decay, renormalize)
        for runtime, actual in _run_all(x, y, w, LR, (1, 1), (1, 1, 1, 1), (1, 1), 1, decay, renormalize).items():
            assert np.isfinite(actual).all(), f"{rule} {runtime}"
            np.testing.assert_array_equal(actual[2], 0.0, err_msg=f"{rule} {runtime}")
            others = [0, 1, 3]
            np.testing.assert_allclose(actual[others], expected[others], rtol=1e-5, atol=2e-6,
                                       err_msg=f"{rule} {runtime}")


def test_dynamic_batch_and_sizes():
    """The body reads N, Cin and the sizes from the tensors: one model serves any batch."""
    model = _update_model(["N", 2, "H", "W"], ["N", 3, "Ho", "Wo"], [3, 2, 3, 3], strides=[1, 1],
                          pads=[1, 1, 1, 1], dilations=[1, 1], group=1, decay=1.0, renormalize=0, triangular=0,
                          temperature=0.0)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(2)
    for n, size in [(1, 5), (7, 4)]:
        x, y, w = _case(rng, 2, 3, 1, (3, 3), (size, size), (1, 1), (1, 1, 1, 1), (1, 1), n=n)
        expected = reference_update(x, y, w, LR, (1, 1), (1, 1, 1, 1), (1, 1), 1, 1.0, 0)
        actual = session.run(None, {"x": x, "y": y, "w": w, "lr": np.asarray(LR, np.float32)})[0]
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=2e-6)


def test_function_declares_its_attributes_and_standard_body():
    function = hebbian_function.function_proto(17)
    assert (function.domain, function.name) == (hebbian_function.DOMAIN, hebbian_function.OP_TYPE)
    assert list(function.input) == ["X", "Y", "W", "lr"] and list(function.output) == ["W_new"]
    assert set(function.attribute) == set(hebbian_function.ATTRIBUTES)
    assert {node.domain for node in function.node} <= {""}
    # exactly one convolution: the correlation costs one GEMM
    assert [node.op_type for node in function.node].count("Conv") == 1
    # Sanger's [Cout, Cout] products sit in a branch that only the triangular rule runs
    branches = {node.output[0]: {a.name: [n.op_type for n in a.g.node] for a in node.attribute}
                for node in function.node if node.op_type == "If"}
    assert branches["unit_term"]["else_branch"] == ["Mul"] and branches["unit_term"]["then_branch"].count("MatMul") == 2
    # and SoftHebb's softmax in one that only a positive temperature runs
    assert branches["y_learning"] == {"then_branch": ["Div", "Softmax"], "else_branch": ["Identity"]}


def test_reference_is_the_weight_gradient_of_the_correlation():
    """Sanity of the test's own reference: H is d/dW of sum(y * conv(x, W)) / count (torch autograd)."""
    rng = np.random.default_rng(13)
    for strides, pads, dilations, group in itertools.islice(
            itertools.product([(2, 1)], [(1, 0, 2, 1)], [(1, 2)], [1, 2]), 2):
        x, y, w = _case(rng, 4, 6, group, (3, 2), (9, 8), strides, pads, dilations)
        weight = torch.from_numpy(w).double().requires_grad_()
        xp = torch.nn.functional.pad(torch.from_numpy(x).double(), (pads[1], pads[3], pads[0], pads[2]))
        out = torch.nn.functional.conv2d(xp, weight, stride=strides, dilation=dilations, groups=group)
        (out * torch.from_numpy(y).double()).sum().backward()
        h = weight.grad.numpy() / (y.shape[0] * y.shape[2] * y.shape[3])
        expected = reference_update(x, y, w, 1.0, strides, pads, dilations, group, 0.0, 0) - w
        np.testing.assert_allclose(h, expected, rtol=1e-9, atol=1e-12)
