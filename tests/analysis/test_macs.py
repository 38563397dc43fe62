"""per_sample_elements: the batch is the one symbolic dim, wherever it is."""

import onnx_ir as ir
import pytest

from llcompile.ops.elements import per_sample_elements


def _value(dims) -> ir.Value:
    return ir.Value(name="v", shape=ir.Shape(dims), type=ir.TensorType(ir.DataType.FLOAT))


@pytest.mark.parametrize("dims, elements", [
    (["N", 16, 96], 16 * 96),
    ([16, "N", 96], 16 * 96),  # nn.MultiheadAttention works sequence-first: [T, N, E]
    ([3, "N", 2, 17, 8], 3 * 2 * 17 * 8),
    ([4, 16, 96], 16 * 96),  # a static batch is the first dim
])
def test_the_batch_is_left_out_wherever_it_is(dims, elements):
    assert per_sample_elements(_value(dims)) == elements


def test_two_symbolic_dims_are_refused():
    with pytest.raises(ValueError, match="non-batch dimensions must be static"):
        per_sample_elements(_value(["N", "T", 96]))
