"""Model zoo: builds, parameter counts, and ONNX exports checked against torch via onnxruntime."""

import copy
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import onnxruntime
import pytest
import torch
from torch import nn

from llcompile.models import build, export, list_models

SEED = 0
BATCH = 4
TOLERANCE = dict(rtol=1e-4, atol=1e-4)
ZOO = [
    "resnet20", "resnet32", "resnet56", "resnet18",
    "vgg11_bn", "vgg16_bn", "mobilenetv2", "small_cnn", "mlp", "vit", "mixer", "convnext",
]


def seeded_model(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(SEED)
    return build(name, **kwargs)


def sample_input(shape=(3, 32, 32), batch=BATCH) -> torch.Tensor:
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(SEED + 1))


def randomize_batchnorm(model: nn.Module) -> None:
    """Non-trivial BN statistics and affine terms, so eval-mode BN and its folding matter."""
    generator = torch.Generator().manual_seed(SEED + 2)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                size = module.num_features
                module.running_mean.copy_(torch.randn(size, generator=generator) * 0.2)
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
                module.weight.copy_(torch.rand(size, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(size, generator=generator) * 0.1)


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in model.state_dict().items()}


def assert_same_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    current = model.state_dict()
    assert current.keys() == state.keys()
    changed = [key for key in state if not torch.equal(current[key], state[key])]
    assert not changed, f"export changed {changed}"


def torch_output(model: nn.Module, x: torch.Tensor, training: bool) -> np.ndarray:
    """Output of a copy of ``model`` in the given mode (a train-mode forward updates BN stats)."""
    reference = copy.deepcopy(model).train(training)
    with torch.no_grad():
        return reference(x).numpy()


def ort_output(path: Path, x: torch.Tensor) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": x.numpy()})[0]


def dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


def training_form_modes(proto: onnx.ModelProto) -> list[int]:
    return [
        onnx.helper.get_attribute_value(attribute)
        for node in proto.graph.node
        if node.op_type == "BatchNormalization"
        for attribute in node.attribute
        if attribute.name == "training_mode"
    ]


def assert_initializers_hold_state(proto: onnx.ModelProto, state: dict[str, torch.Tensor]) -> None:
    """Every parameter and BN running stat is an initializer of the same name and value."""
    initializers = {init.name: onnx.numpy_helper.to_array(init) for init in proto.graph.initializer}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):  # the exporter drops this counter
            continue
        assert key in initializers, f"{key} is not an initializer"
        np.testing.assert_array_equal(initializers[key], value.numpy(), err_msg=key)


def test_registry_lists_the_zoo():
    models = list_models()
    assert list(models) == ZOO
    assert all(description and "\n" not in description for description in models.values())


def test_unknown_names_and_modes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'resnet7'"):
        build("resnet7")
    with pytest.raises(ValueError, match="unknown model"):
        export("resnet7", tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="unknown export mode"):
        export("small_cnn", tmp_path / "m.onnx", mode="inference")
    assert not list(tmp_path.iterdir())


def test_build_is_deterministic_given_the_seed():
    first, second = seeded_model("resnet20"), seeded_model("resnet20")
    assert_same_state(first, snapshot(second))


# Option-A CIFAR ResNets have 269,722 / 464,154 / 853,018 parameters (the paper's 0.27M /
# 0.46M / 0.85M). Option B adds two 1x1 projections + BN: 16*32 + 2*32 + 32*64 + 2*64 = 2,752.
# ResNet-18 (CIFAR) and MobileNetV2 with 10 classes match pytorch-cifar / torchvision.
EXPECTED_PARAMETERS = {
    "resnet20": 269_722 + 2_752,
    "resnet32": 464_154 + 2_752,
    "resnet56": 853_018 + 2_752,
    "resnet18": 11_173_962,
    "mobilenetv2": 2_236_682,
}
PUBLISHED_PARAMETERS = {"resnet20": 0.27e6, "resnet56": 0.85e6, "resnet18": 11.2e6}


@pytest.mark.parametrize("name", EXPECTED_PARAMETERS)
def test_parameter_counts(name):
    count = sum(p.numel() for p in build(name).parameters())
    assert count == EXPECTED_PARAMETERS[name]
    if name in PUBLISHED_PARAMETERS:
        assert count == pytest.approx(PUBLISHED_PARAMETERS[name], rel=0.03)


@pytest.mark.parametrize("name", ZOO)
def test_training_export_matches_torch_train_mode(name, tmp_path):
    model = seeded_model(name)
    state = snapshot(model)
    x = sample_input()
    expected = torch_output(model, x, training=True)

    path = export(name_or_module=model, path=tmp_path / f"{name}.onnx", mode="training")

    assert_same_state(model, state)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["input"]
    assert dims(proto.graph.input[0]) == ["N", 3, 32, 32]
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert dims(proto.graph.output[0]) == ["N", 10]
    has_batchnorm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert set(training_form_modes(proto)) == ({1} if has_batchnorm else set())
    assert_initializers_hold_state(proto, state)  # running stats as before the export's trace
    np.testing.assert_allclose(ort_output(path, x), expected, **TOLERANCE)


@pytest.mark.parametrize("mode", ["eval", "eval-unfolded", "dynamo"])
@pytest.mark.parametrize("name", ["small_cnn", "resnet20"])
def test_eval_exports_match_torch_eval_mode(name, mode, tmp_path):
    model = seeded_model(name)
    randomize_batchnorm(model)
    state = snapshot(model)
    x = sample_input()

    path = export(model, tmp_path / f"{name}.onnx", mode=mode)

    assert_same_state(model, state)
    assert model.training, "export must restore the module's train/eval flags"
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert dims(proto.graph.input[0]) == ["N", 3, 32, 32]
    assert dims(proto.graph.output[0]) == ["N", 10]
    if mode == "eval-unfolded":
        assert set(training_form_modes(proto)) == {0}
        assert_initializers_hold_state(proto, state)
    else:
        assert training_form_modes(proto) == []  # BN folded into the convs
    if mode == "dynamo":
        assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 18
    expected = torch_output(model, x, training=False)
    np.testing.assert_allclose(ort_output(path, x), expected, **TOLERANCE)


def test_eval_unfolded_keeps_equal_valued_initializers_separate(tmp_path):
    # In a fresh model BN weight == running_var (ones) and bias == running_mean (zeros);
    # the exporter would alias them through Identity nodes.
    model = seeded_model("small_cnn")
    path = export(model, tmp_path / "m.onnx", mode="eval-unfolded")
    proto = onnx.load(str(path))
    assert "Identity" not in {node.op_type for node in proto.graph.node}
    assert_initializers_hold_state(proto, snapshot(model))


def test_num_classes_and_static_batch(tmp_path):
    path = export("small_cnn", tmp_path / "m.onnx", num_classes=7, batch_size=3)
    proto = onnx.load(str(path))
    assert dims(proto.graph.input[0]) == [3, 3, 32, 32]
    assert dims(proto.graph.output[0]) == [3, 7]
    assert ort_output(path, sample_input(batch=3)).shape == (3, 7)


def test_dynamo_static_batch(tmp_path):
    path = export("mlp", tmp_path / "m.onnx", mode="dynamo", batch_size=2, opset=17)
    proto = onnx.load(str(path))
    assert dims(proto.graph.input[0]) == [2, 3, 32, 32]
    assert dims(proto.graph.output[0]) == [2, 10]


def test_export_writes_only_the_target_and_overwrites_it(tmp_path):
    target = tmp_path / "nested" / "m.onnx"
    export("small_cnn", target, num_classes=3)
    export("small_cnn", target, num_classes=5)
    assert list(tmp_path.rglob("*")) == [target.parent, target]
    assert dims(onnx.load(str(target)).graph.output[0]) == ["N", 5]


@pytest.mark.parametrize("name", ["small_cnn", "resnet20", "mlp", "vit", "mixer", "convnext"])
def test_small_single_channel_input(name, tmp_path):
    shape = (1, 8, 8)  # sklearn digits
    model = seeded_model(name, num_classes=10, input_shape=shape)
    x = sample_input(shape)
    expected = torch_output(model, x, training=True)
    path = export(model, tmp_path / "m.onnx", input_shape=shape)
    assert dims(onnx.load(str(path)).graph.input[0]) == ["N", 1, 8, 8]
    np.testing.assert_allclose(ort_output(path, x), expected, **TOLERANCE)
