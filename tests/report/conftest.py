import pytest

from tests.fixtures.cnn_graphs import CnnSpec, UnitSpec, build_cnn

# input 3x8x8 -> conv 3x3 (3->4) + BN + ReLU -> MaxPool 2x2 -> conv 3x3 (4->8) + ReLU -> GAP -> Gemm (8->10)
TINY = CnnSpec(seed=0, in_channels=3, size=8, classes=10, units=(
    UnitSpec("conv", out_channels=4, kernel=3, bn=True, relu=True),
    UnitSpec("pool", pool="max"),
    UnitSpec("conv", out_channels=8, kernel=3, relu=True),
))


@pytest.fixture
def tiny_model(save_model):
    return save_model(build_cnn(TINY), "tiny.onnx")
