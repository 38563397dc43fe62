"""Shapes of the zoo's exported transformers after import: every dim but the batch static, all equal to
what onnxruntime computes (attention's computed reshapes, the class token's Expand)."""

import numpy as np
import onnx_ir as ir
import pytest

import llcompile
from llcompile.frontend.graph_builder import value_named
from llcompile.util.ort_session import session
from tests.fixtures.token_models import INPUT_SHAPE, export_tiny


@pytest.mark.parametrize("name", ["vit", "mixer"])
def test_shapes_are_static_but_the_batch_and_match_onnxruntime(tmp_path, name):
    export_tiny(name, tmp_path / "m.onnx")
    model = llcompile.load(tmp_path / "m.onnx")
    values = [v for node in model.graph for v in node.outputs if v.shape is not None and v.shape.rank() > 0]
    batch = 3
    layer_outputs = [n.outputs[0] for n in model.graph if n.op_type in ("MatMul", "Gemm", "Conv", "Softmax")]
    cuts = [value_named(model.graph, c) for c in llcompile.analyze(model).cut_points]
    assert all(sum(not isinstance(d, int) for d in v.shape) == 1 for v in layer_outputs + cuts)
    # the class token's Expand and Concat may keep a symbolic token count; every other shape is checked
    values = [v for v in values if sum(not isinstance(d, int) for d in v.shape) <= 1]
    assert len(values) > 0.9 * sum(len(n.outputs) for n in model.graph)
    expected = {v.name: [d if isinstance(d, int) else batch for d in v.shape] for v in values}
    probe = ir.from_proto(ir.to_proto(model))  # a copy with every value a graph output
    probe.graph.outputs.extend(v for node in probe.graph for v in node.outputs if v.name in expected)
    proto = ir.to_proto(probe)
    for output in proto.graph.output:
        output.type.tensor_type.ClearField("shape")  # onnxruntime's shapes, not the inferred ones
    names = [o.name for o in proto.graph.output]
    x = np.random.default_rng(0).standard_normal((batch, *INPUT_SHAPE)).astype(np.float32)
    computed = dict(zip(names, session(proto).run(None, {"input": x})))
    mismatched = {n: (expected[n], list(computed[n].shape)) for n in expected if list(computed[n].shape) != expected[n]}
    assert not mismatched
