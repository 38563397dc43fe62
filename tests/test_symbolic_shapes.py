"""Per-sample shapes of exported transformers: resolved at import, equal to what onnxruntime computes."""

import numpy as np
import onnx_ir as ir
import pytest

import llcompile
from llcompile.verify import session
from tests.fixtures.token_models import INPUT_SHAPE, export_tiny


@pytest.mark.parametrize("name", ["vit", "mixer"])
def test_every_shape_is_static_but_the_batch_and_matches_onnxruntime(tmp_path, name):
    export_tiny(name, tmp_path / "m.onnx")
    model = llcompile.load(tmp_path / "m.onnx")
    values = [v for node in model.graph for v in node.outputs if v.shape is not None and v.shape.rank() > 0]
    batch = 3
    expected = {v.name: [batch if d == "N" else d for d in (x if isinstance(x, int) else str(x) for x in v.shape)]
                for v in values}
    assert all(isinstance(d, int) for dims in expected.values() for d in dims), "a dim other than N is symbolic"
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
