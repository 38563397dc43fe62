"""Real ONNX Model Zoo graphs (opset 9, IR 3, batch 1, Softmax outputs, LRN, Sum, Dropout, 1x1-conv
classifiers), as shipped with the onnx package in its "light" form: every weight is a
ConstantOfShape. The test gives them random weights, then compiles them with every strategy and
compares the stage chain and the eval model with onnxruntime on the untouched graph."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import llcompile
from llcompile.compiler.verify import verify

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
FAST = ["squeezenet", "shufflenet", "inception_v1", "inception_v2"]
# hundreds of MB of weights, or (ResNet-50, DenseNet-121) a minute of onnxruntime at 224x224 for ops
# the fast ones have too (BatchNormalization and Sum in ShuffleNet, Add/Mul/Unsqueeze/Concat in
# Inception v2); their cut points are checked below
SLOW = ["bvlc_alexnet", "zfnet512", "vgg19", "resnet50", "densenet121"]


def with_random_weights(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """Replace each weight-making ConstantOfShape by a random initializer (He-scaled for weights,
    around 1 for vectors so BatchNorm variances stay positive), also listed as a graph input."""
    rng = np.random.default_rng(seed)
    shapes = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    kept = []
    for node in model.graph.node:
        if node.op_type != "ConstantOfShape":
            kept.append(node)
            continue
        shape = tuple(int(d) for d in shapes[node.input[0]])
        if len(shape) > 1:
            array = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
        else:
            array = rng.uniform(0.5, 1.5, shape)
        tensor = numpy_helper.from_array(array.astype(np.float32), node.output[0])
        model.graph.initializer.append(tensor)
        model.graph.input.append(onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, shape))
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return model


def check_zoo_graph(name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.onnx"
    onnx.save_model(with_random_weights(onnx.load(LIGHT / f"light_{name}.onnx")), path)
    analysis = llcompile.analyze(llcompile.load(path))
    assert analysis.num_classes == 1000 and analysis.cut_points
    # bp's one stage is the eval model, which every program's verify compares with the source too
    for strategy, options in [("dbl", {"blocks": 3}), ("dbl", {"blocks": 2, "aux_head": "conv"})]:
        out = tmp_path / f"{strategy}{options.get('blocks', 1)}"
        llcompile.transform(path, strategy, **options).save(out)
        errors = verify(out).errors
        assert max(errors.values()) < 1e-4, errors


@pytest.mark.parametrize("name", FAST)
def test_model_zoo_graph(name, tmp_path):
    check_zoo_graph(name, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_large_model_zoo_graph(name, tmp_path):
    check_zoo_graph(name, tmp_path)


def test_cut_points_of_known_architectures(tmp_path):
    expected = {"resnet50": 17, "squeezenet": 17, "densenet121": 62}  # see the comments below
    for name, count in expected.items():
        path = tmp_path / f"{name}.onnx"
        onnx.save_model(with_random_weights(onnx.load(LIGHT / f"light_{name}.onnx")), path)
        # ResNet-50: stem + 15 of 16 bottleneck outputs (the last feeds pooling) + the head input;
        # SqueezeNet: the input and the squeeze output of each of the 8 fire modules + conv10's input;
        # DenseNet-121 (pre-activation: BN-ReLU-Conv, so a block's input reaches its Conv through BN):
        # each dense block's input and the Concat after each of its layers but the last (6 + 12 + 24 + 16,
        # the Concat carries everything onward), the three transitions' ReLUs and the head input.
        assert len(llcompile.analyze(llcompile.load(path)).cut_points) == count, name
