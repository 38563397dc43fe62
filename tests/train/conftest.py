"""Fixtures of the training tests."""

import pytest


@pytest.fixture(scope="session")
def resnet_digits_model(tmp_path_factory):
    """ResNet-20 for 1x8x8 digits: slow enough (about 2 s an epoch) to be interrupted mid-epoch,
    with 11 segments for prefixes and boundaries to move over."""
    import torch

    from llcompile.models import export

    torch.manual_seed(0)
    return export("resnet20", tmp_path_factory.mktemp("resnet") / "resnet20.onnx", input_shape=(1, 8, 8))


@pytest.fixture(scope="session")
def digits_programs(tmp_path_factory):
    """small_cnn for 1x8x8 digits, compiled with bp and dbl (3 fixed blocks)."""
    import torch

    import llcompile
    from llcompile.models import export

    root = tmp_path_factory.mktemp("digits")
    torch.manual_seed(0)
    model = export("small_cnn", root / "small_cnn.onnx", input_shape=(1, 8, 8))
    programs = {}
    for strategy, options in [("bp", {}), ("dbl", {"blocks": 3, "boundary_policy": "fixed"})]:
        programs[strategy] = llcompile.transform(model, strategy, **options).save(root / strategy)
    return programs
