"""Fixtures of the training tests, built once per run (``build_once``)."""

import pytest


@pytest.fixture(scope="session")
def resnet_digits_model(zoo_file):
    """ResNet-20 for 1x8x8 digits: slow enough (about 2 s an epoch) to be interrupted mid-epoch,
    with 11 segments for prefixes and boundaries to move over."""
    return zoo_file("resnet20", input_shape=(1, 8, 8))


@pytest.fixture(scope="session")
def digits_programs(zoo_file, build_once):
    """small_cnn for 1x8x8 digits, compiled with bp and dbl (3 fixed blocks)."""
    import llcompile

    model = zoo_file("small_cnn", input_shape=(1, 8, 8))
    options = {"bp": {}, "dbl": {"blocks": 3, "boundary_policy": "fixed"}}
    return {strategy: build_once(f"digits-{strategy}", lambda path, s=strategy: llcompile.transform(
        model, s, **options[s]).save(path)) for strategy in options}


@pytest.fixture(scope="module")
def resnet_dbl_program(resnet_digits_model, tmp_path_factory):
    """ResNet-20 for digits, compiled with dbl in 4 blocks (adaptive boundaries)."""
    import llcompile

    return llcompile.transform(resnet_digits_model, "dbl", blocks=4).save(tmp_path_factory.mktemp("resnet") / "dbl")
