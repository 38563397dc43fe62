"""Name -> model factory registry for the zoo."""

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from .convnext import ConvNeXt
from .mixer import MLPMixer
from .mobilenetv2 import MobileNetV2
from .resnet_cifar import cifar_resnet, resnet18_cifar
from .small import MLP, SmallCNN
from .vgg import vgg_bn
from .vit import VisionTransformer

InputShape = tuple[int, int, int]
DEFAULT_INPUT_SHAPE: InputShape = (3, 32, 32)


@dataclass(frozen=True)
class ModelSpec:
    description: str
    # (num_classes, input_shape as (C, H, W)) -> freshly initialised module
    factory: Callable[[int, InputShape], nn.Module]


MODELS: dict[str, ModelSpec] = {
    "resnet20": ModelSpec(
        "CIFAR ResNet-20 (He et al. 2016), 16/32/64 channels, 1x1-conv shortcuts, ~0.27M params",
        lambda classes, shape: cifar_resnet(20, classes, shape[0]),
    ),
    "resnet32": ModelSpec(
        "CIFAR ResNet-32 (He et al. 2016), 16/32/64 channels, 1x1-conv shortcuts, ~0.47M params",
        lambda classes, shape: cifar_resnet(32, classes, shape[0]),
    ),
    "resnet56": ModelSpec(
        "CIFAR ResNet-56 (He et al. 2016), 16/32/64 channels, 1x1-conv shortcuts, ~0.86M params",
        lambda classes, shape: cifar_resnet(56, classes, shape[0]),
    ),
    "resnet18": ModelSpec(
        "ResNet-18, CIFAR variant (3x3 stem, no max-pool), 64-512 channels, ~11.2M params",
        lambda classes, shape: resnet18_cifar(classes, shape[0]),
    ),
    "vgg11_bn": ModelSpec(
        "VGG-11 with BatchNorm, CIFAR variant (GAP + one Linear classifier), ~9.2M params",
        lambda classes, shape: vgg_bn("vgg11", classes, shape[0]),
    ),
    "vgg16_bn": ModelSpec(
        "VGG-16 with BatchNorm, CIFAR variant (GAP + one Linear classifier), ~14.7M params",
        lambda classes, shape: vgg_bn("vgg16", classes, shape[0]),
    ),
    "mobilenetv2": ModelSpec(
        "MobileNetV2, CIFAR variant (stride-1 stem and second stage), ReLU6, ~2.2M params",
        lambda classes, shape: MobileNetV2(classes, shape[0]),
    ),
    "small_cnn": ModelSpec(
        "Small CNN: 3 conv+BN+ReLU layers (16/32/64), 2 max-pools, GAP, Linear; for tests/demos",
        lambda classes, shape: SmallCNN(classes, shape[0]),
    ),
    "mlp": ModelSpec(
        "MLP: Flatten -> 2 x (Linear + BatchNorm1d + ReLU) with 256/128 units -> Linear",
        lambda classes, shape: MLP(shape, classes),
    ),
    "vit": ModelSpec(
        "ViT, CIFAR size: 4x4 patches, class token, 6 pre-norm blocks, dim 192, 3 heads, MLP x2, ~1.8M params",
        lambda classes, shape: VisionTransformer(classes, shape),
    ),
    "mixer": ModelSpec(
        "MLP-Mixer, CIFAR size: 4x4 patches, 4 blocks, dim 128, token/channel MLPs 64/256, ~0.3M params",
        lambda classes, shape: MLPMixer(classes, shape),
    ),
    "convnext": ModelSpec(
        "ConvNeXt, CIFAR size: 2x2 stem, stages 32/64/128 of 1/1/2 blocks (dw 7x7, LayerNorm, GELU MLP x4, "
        "layer scale)",
        lambda classes, shape: ConvNeXt(classes, shape[0]),
    ),
}


def list_models() -> dict[str, str]:
    """Registered model names mapped to one-line descriptions."""
    return {name: spec.description for name, spec in MODELS.items()}


def build(
    name: str, num_classes: int = 10, input_shape: InputShape = DEFAULT_INPUT_SHAPE
) -> nn.Module:
    """A fresh model; its initial weights follow the torch RNG (``torch.manual_seed``)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(MODELS)}")
    if not (isinstance(num_classes, int) and num_classes > 0):
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or not all(isinstance(d, int) and d > 0 for d in input_shape):
        raise ValueError(f"input_shape must be three positive ints (C, H, W), got {input_shape!r}")
    return MODELS[name].factory(num_classes, input_shape)
