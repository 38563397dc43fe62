"""Random valid small CNNs with random names (any unicode, control characters included) go through
transform, save/load, verify and a training step on both backends, and nothing lands in the cwd."""

from __future__ import annotations

import numpy as np
import onnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import llcompile
from llcompile.frontend.importer import canonicalize
from llcompile.program.program import Program
from llcompile.compiler.verify import verify
from tests.backends.chain import losses_on_both_backends
from tests.fixtures.cnn_graphs import build_cnn, cnn_specs
from tests.fixtures.hostile_names import renamed

BATCH = 4
NAMES = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=24)  # protobuf needs valid UTF-8


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(spec=cnn_specs(max_units=3), name=NAMES)
def test_random_graphs_with_random_names_compile_verify_and_train(spec, name, tmp_path_factory, monkeypatch):
    work = tmp_path_factory.mktemp("fuzz")
    cwd = work / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    source = work / "model.onnx"
    onnx.save_model(renamed(build_cnn(spec), name), source)
    blocks = min(2, len(spec.expected_cut_points()) + 1)
    program_dir = llcompile.transform(canonicalize(onnx.load(source)), "dbl", blocks=blocks).save(work / "p")
    assert verify(program_dir, source).worst < 1e-4
    program = Program.load(program_dir)
    x = np.random.default_rng(spec.seed % 1000).standard_normal(
        (BATCH, spec.in_channels, spec.size, spec.size)).astype(np.float32)
    labels = np.arange(BATCH, dtype=np.int64) % program.num_classes
    losses = losses_on_both_backends(program, x, labels)
    assert all(np.isfinite(losses["torch"]))
    # the same program trains the same on both backends: each stage's loss at the first step and after
    # one SGD update
    np.testing.assert_allclose(losses["torch"], losses["ort"], rtol=1e-3, atol=1e-5)
    assert list(cwd.iterdir()) == []

