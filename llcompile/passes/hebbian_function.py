"""``ai.llcompile::HebbianUpdate``: a localized layer's new weight, as a model-local ONNX function.

``W_new = HebbianUpdate(X, Y, W, lr)`` for a layer in convolution layout: ``X`` its input
``[N, Cin, *S]``, ``Y`` its activation ``[N, Cout, *So]``, ``W`` its weight ``[Cout, Cin/group, *K]``
(the Hebbian pass brings Gemm and MatMul layers into this layout with a length-1 spatial axis).

The correlation ``H = mean over (sample, position) of y x^T`` is ONE convolution: the conv
weight-gradient computation with ``Y`` in place of dY. Input and output are transposed so that
the batch becomes the channel axis (``[Cin/g, g*N, *S]`` and ``[Cout, N, *So]``), the
convolution runs with ``group=g`` and stride and dilation swapped, and the result is cropped
to the kernel size. Its MACs equal the layer's forward MACs.

The rule is three attributes (one function serves every rule; ONNX runtimes ignore function
overloads, so a rule cannot be a separate overload):

- ``decay``: the weight of the decay term ``D W`` in ``dW = H - decay * D W`` (1 = Oja or Sanger,
  0 = plain Hebb);
- ``triangular``: which ``D``: 0 its diagonal part ``diag(mean(y^2))``, every filter on its own
  (Oja's rule, which drives every filter toward the same first principal component); 1 the lower
  triangle of ``mean(y y^T)`` within each group (Sanger's generalized Hebbian algorithm: filter
  ``i`` also subtracts what filters ``0..i-1`` already explain, so the filters converge to the
  leading principal components in order). The full ``[Cout, Cout]`` product costs
  ``Cout / (Cin/g * prod(K))`` of the correlation's MACs, so it runs (an ``If``) only for Sanger;
- ``renormalize``: 1 rescales every filter (row of ``W``) back to its norm before the update;
- ``temperature``: 0 uses ``Y`` as given; ``T > 0`` replaces it in ``H`` and ``D`` by SoftHebb's soft
  winner-take-all ``y = softmax(Y / T)`` over the filters, with Oja's term ``diag(mean(y * Y))``: every
  filter learns mostly from the inputs it wins, toward the unit-norm mean of its share of them
  (SoftHebb's ``dw_i = y_i (x - u_i w_i)`` with ``u = Y`` the layer's pre-activation).

``W_new = renorm(W + lr * dW)``. The body is standard ONNX (opset 14-21), so onnxruntime and
``onnx.reference`` run it.
"""

from __future__ import annotations

import onnx
import onnx_ir as ir
from onnx import helper

from llcompile.ops.hebbian import DOMAIN, OP_TYPE
# rule -> its attributes
RULES = {
    "oja": {"decay": 1.0, "triangular": 0, "renormalize": 0, "temperature": 0.0},
    "hebb": {"decay": 0.0, "triangular": 0, "renormalize": 1, "temperature": 0.0},
    "sanger": {"decay": 1.0, "triangular": 1, "renormalize": 0, "temperature": 0.0},
    # SoftHebb's own temperature: unit-norm filters on unit-scale inputs give pre-activations of order 1
    "softhebb": {"decay": 1.0, "triangular": 0, "renormalize": 0, "temperature": 1.0},
}
ATTRIBUTES = ("strides", "pads", "dilations", "group", "decay", "triangular", "renormalize", "temperature")


def _const_ints(name: str, values: list[int]) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=helper.make_tensor(name, onnx.TensorProto.INT64,
                                                                              [len(values)], values))


def _ref(name: str, ref: str, kind: int) -> onnx.AttributeProto:
    """Attribute ``name`` that takes the value of the function's attribute ``ref``."""
    return onnx.AttributeProto(name=name, ref_attr_name=ref, type=kind)


def function_proto(opset: int) -> onnx.FunctionProto:
    """The function definition for a model whose standard opset is ``opset``."""
    node = helper.make_node
    ints, float_, int_ = onnx.AttributeProto.INTS, onnx.AttributeProto.FLOAT, onnx.AttributeProto.INT
    group_scalar = node("Constant", [], ["group_scalar"])
    group_scalar.attribute.append(_ref("value_int", "group", int_))
    decay = node("Constant", [], ["decay"])
    decay.attribute.append(_ref("value_float", "decay", float_))
    temperature = node("Constant", [], ["temperature"])
    temperature.attribute.append(_ref("value_float", "temperature", float_))
    triangular_int = node("Constant", [], ["triangular_int"])
    triangular_int.attribute.append(_ref("value_int", "triangular", int_))
    renormalize_int = node("Constant", [], ["renormalize_int"])
    renormalize_int.attribute.append(_ref("value_int", "renormalize", int_))
    correlation = node("Conv", ["x_by_channel", "y_by_channel"], ["correlation"])
    correlation.attribute.extend([_ref("strides", "dilations", ints), _ref("dilations", "strides", ints),
                                  _ref("pads", "pads", ints), _ref("group", "group", int_)])
    nodes = [
        _const_ints("zero", [0]), _const_ints("one", [1]), _const_ints("two", [2]),
        _const_ints("minus_one", [-1]), _const_ints("end", [2**62]), _const_ints("axes_02", [0, 2]),
        _const_ints("axis_1", [1]),
        group_scalar, node("Reshape", ["group_scalar", "one"], ["group"]), decay, renormalize_int,
        # X [N, Cin, *S] -> [Cin/g, g*N, *S]: channel (j, n) of the result is sample n of group j
        node("Shape", ["X"], ["x_shape"]),
        node("Slice", ["x_shape", "zero", "one"], ["n"]),
        node("Slice", ["x_shape", "one", "two"], ["cin"]),
        node("Slice", ["x_shape", "two", "end"], ["x_spatial"]),
        node("Div", ["cin", "group"], ["cin_per_group"]),
        node("Concat", ["n", "group", "cin_per_group", "minus_one"], ["x_grouped_shape"], axis=0),
        node("Reshape", ["X", "x_grouped_shape"], ["x_grouped"]),
        node("Transpose", ["x_grouped"], ["x_transposed"], perm=[2, 1, 0, 3]),
        node("Mul", ["group", "n"], ["group_times_n"]),
        node("Concat", ["cin_per_group", "group_times_n", "x_spatial"], ["x_by_channel_shape"], axis=0),
        node("Reshape", ["x_transposed", "x_by_channel_shape"], ["x_by_channel"]),
        # the y of the rule: Y, or its soft winner-take-all over the filters
        temperature, node("Greater", ["temperature", "zero_float"], ["soft_winner"]),
        node("If", ["soft_winner"], ["y_learning"], then_branch=_soft_winner_take_all(), else_branch=_as_given()),
        # y [N, Cout, *So] -> [Cout, N, *So]: the "weight" of the correlation
        node("Shape", ["Y"], ["y_shape"]),
        node("Slice", ["y_shape", "one", "two"], ["cout"]),
        node("Slice", ["y_shape", "two", "end"], ["y_spatial"]),
        node("Concat", ["n", "cout", "minus_one"], ["y_flat_shape"], axis=0),
        node("Reshape", ["y_learning", "y_flat_shape"], ["y_flat"]),
        node("Transpose", ["y_flat"], ["y_by_sample"], perm=[1, 0, 2]),
        node("Concat", ["cout", "n", "y_spatial"], ["y_by_channel_shape"], axis=0),
        node("Reshape", ["y_by_sample", "y_by_channel_shape"], ["y_by_channel"]),
        correlation,  # [Cin/g, Cout, *K'] with K' >= K
        node("Shape", ["W"], ["w_shape"]),
        node("Slice", ["w_shape", "two", "end"], ["kernel"]),
        node("Concat", ["cin_per_group", "cout", "kernel"], ["crop_end"], axis=0),
        node("Mul", ["crop_end", "zero"], ["crop_start"]),
        node("Slice", ["correlation", "crop_start", "crop_end"], ["correlation_cropped"]),
        node("Concat", ["cin_per_group", "cout", "minus_one"], ["correlation_flat_shape"], axis=0),
        node("Reshape", ["correlation_cropped", "correlation_flat_shape"], ["correlation_flat"]),
        node("Transpose", ["correlation_flat"], ["correlation_by_filter"], perm=[1, 0, 2]),
        node("Concat", ["cout", "minus_one"], ["filter_rows_shape"], axis=0),
        node("Reshape", ["correlation_by_filter", "filter_rows_shape"], ["correlation_sum"]),
        # means over the (sample, position) pairs: count = N * prod(So)
        node("Size", ["Y"], ["y_size"]),
        node("Div", ["y_size", "cout"], ["pair_count_int"]),
        node("Cast", ["pair_count_int"], ["pair_count"], to=onnx.TensorProto.FLOAT),
        node("Div", ["correlation_sum", "pair_count"], ["hebbian"]),
        # mean(y * Y) per filter (mean y^2 when y is Y), reduced in [N, Cout, P] layout
        node("Reshape", ["Y", "y_flat_shape"], ["y_given_flat"]),
        node("Mul", ["y_flat", "y_given_flat"], ["y_squared"]),
        node("ReduceSum", ["y_squared", "axes_02"], ["y_squared_sum"], keepdims=1),
        node("Reshape", ["y_squared_sum", "filter_rows_shape"], ["y_squared_sum_rows"]),
        node("Div", ["y_squared_sum_rows", "pair_count"], ["y_power"]),  # [Cout, 1]
        node("Reshape", ["W", "filter_rows_shape"], ["w_rows"]),
        triangular_int, node("Cast", ["triangular_int"], ["triangular"], to=onnx.TensorProto.BOOL),
        node("If", ["triangular"], ["unit_term"], then_branch=_sanger_term(), else_branch=_oja_term()),
        node("Mul", ["decay", "unit_term"], ["decay_term"]),
        node("Sub", ["hebbian", "decay_term"], ["delta"]),
        node("Mul", ["lr", "delta"], ["step"]),
        node("Add", ["w_rows", "step"], ["w_stepped"]),
        # renormalize: factor = ||w|| / ||w_stepped|| per filter when on, 1 when off; also 1 for a
        # filter that is all zero after the step (a silent zero filter stays zero, never 0/0 = NaN)
        node("Mul", ["w_rows", "w_rows"], ["w_squared"]),
        node("ReduceSum", ["w_squared", "axis_1"], ["w_norm_squared"], keepdims=1),
        node("Mul", ["w_stepped", "w_stepped"], ["w_stepped_squared"]),
        node("ReduceSum", ["w_stepped_squared", "axis_1"], ["w_stepped_norm_squared"], keepdims=1),
        node("Greater", ["w_stepped_norm_squared", "zero_float"], ["stepped_nonzero"]),
        node("Where", ["stepped_nonzero", "w_stepped_norm_squared", "one_float"], ["safe_norm_squared"]),
        node("Div", ["w_norm_squared", "safe_norm_squared"], ["norm_ratio_squared"]),
        node("Sqrt", ["norm_ratio_squared"], ["norm_ratio"]),
        node("Cast", ["renormalize_int"], ["renormalize"], to=onnx.TensorProto.BOOL),
        node("And", ["renormalize", "stepped_nonzero"], ["rescale"]),
        node("Where", ["rescale", "norm_ratio", "one_float"], ["factor"]),
        node("Mul", ["w_stepped", "factor"], ["w_new_rows"]),
        node("Reshape", ["w_new_rows", "w_shape"], ["W_new"]),
    ]
    nodes[:0] = [node("Constant", [], ["one_float"], value_float=1.0),
                 node("Constant", [], ["zero_float"], value_float=0.0)]
    return helper.make_function(
        DOMAIN, OP_TYPE, ["X", "Y", "W", "lr"], ["W_new"], nodes,
        [helper.make_opsetid("", opset)], attributes=list(ATTRIBUTES),
        doc_string="A localized layer's new weight: W + lr * (H - decay * D W), renormalized per filter when "
                   "renormalize=1; H = mean over samples and positions of y x^T (one convolution); D = "
                   "diag(mean y^2) (Oja), or with triangular=1 the lower triangle of mean y y^T per group (Sanger); "
                   "with temperature T > 0, y = softmax(Y / T) over the filters and D = diag(mean y Y) (SoftHebb).")


def _soft_winner_take_all() -> onnx.GraphProto:
    node = helper.make_node
    return helper.make_graph([node("Div", ["Y", "temperature"], ["y_scaled"]),
                              node("Softmax", ["y_scaled"], ["y_soft"], axis=1)], "soft_winner_take_all", [],
                             [helper.make_tensor_value_info("y_soft", onnx.TensorProto.FLOAT, None)])


def _as_given() -> onnx.GraphProto:
    return helper.make_graph([helper.make_node("Identity", ["Y"], ["y_given"])], "as_given", [],
                             [helper.make_tensor_value_info("y_given", onnx.TensorProto.FLOAT, None)])


def _oja_term() -> onnx.GraphProto:
    """``diag(mean y^2) W``: each filter decays by its own output power."""
    node = helper.make_node
    return helper.make_graph([node("Mul", ["y_power", "w_rows"], ["oja_term"])], "oja_term", [],
                             [helper.make_tensor_value_info("oja_term", onnx.TensorProto.FLOAT, None)])


def _sanger_term() -> onnx.GraphProto:
    """``LT(mean y y^T) W``: the lower triangle (diagonal included) of the outputs' correlation, within
    each group (filters of different groups see different inputs), times the filters."""
    node = helper.make_node
    nodes = [
        node("Reshape", ["y_by_sample", "filter_rows_shape"], ["y_rows"]),  # [Cout, N * prod(So)]
        node("Transpose", ["y_rows"], ["y_columns"], perm=[1, 0]),
        node("MatMul", ["y_rows", "y_columns"], ["y_gram_sum"]),
        node("Div", ["y_gram_sum", "pair_count"], ["y_gram"]),
        node("Trilu", ["y_gram"], ["y_gram_lower"], upper=0),
        # group of filter i: i // (Cout / g); keep the pairs of one group
        node("Div", ["cout", "group"], ["filters_per_group"]),
        node("Squeeze", ["cout"], ["cout_scalar"]),
        node("Constant", [], ["index_start"], value=helper.make_tensor("index_start", onnx.TensorProto.INT64, [], [0])),
        node("Constant", [], ["index_step"], value=helper.make_tensor("index_step", onnx.TensorProto.INT64, [], [1])),
        node("Range", ["index_start", "cout_scalar", "index_step"], ["filter_index"]),
        node("Div", ["filter_index", "filters_per_group"], ["filter_group"]),
        node("Unsqueeze", ["filter_group", "one"], ["filter_group_column"]),
        node("Equal", ["filter_group_column", "filter_group"], ["same_group"]),
        node("Where", ["same_group", "y_gram_lower", "zero_float"], ["competition"]),
        node("MatMul", ["competition", "w_rows"], ["sanger_term"]),
    ]
    return helper.make_graph(nodes, "sanger_term", [],
                             [helper.make_tensor_value_info("sanger_term", onnx.TensorProto.FLOAT, None)])


def function(opset: int) -> ir.Function:
    return ir.serde.deserialize_function(function_proto(opset))
