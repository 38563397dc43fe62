"""MACs, element ops and kept activations of a tiny ViT (tests/fixtures/attention_graphs.py), by hand
and against torch.

Dims: 3x8x8 input, 4x4 patches -> 4 tokens of D=8 + the class token: T=5; 2 heads of d=4; 2 blocks;
MLP 8 -> 16 -> 8; head 8 -> 10. Forward MACs per sample:
  patch conv  2*2*8 * (3*4*4)            = 1536
  per block   qkv T*D*3D = 5*8*24        = 960   (MatMul of [N,T,D] tokens by a [D,E] weight)
              proj 5*8*8 = 320, mlp 5*8*16 + 5*16*8 = 1280
              Q·Kᵀ heads*T*T*d = 2*5*5*4 = 200, attention·V 200   (between activations)
  head        8*10                       = 80
"""

import math

import pytest
import torch
from torch import nn

import llcompile
from llcompile.analysis.macs import element_ops
from llcompile.cost import cost_program
from llcompile.report.saved_tensors import measure_saved_bytes
from tests.fixtures.attention_graphs import EXPORTS, INPUT_SHAPE

CONV, QKV, PROJ, MLP, ATTENTION, HEAD = 1536, 960, 320, 1280, 400, 80
WEIGHTS = CONV + 2 * (QKV + PROJ + MLP) + HEAD
BATCH = 4


def test_bp_macs_by_hand(tiny_vit_file):
    path, _ = tiny_vit_file("torchscript-17")
    cost = cost_program(llcompile.transform(path, strategy="bp"), batch_size=BATCH)
    macs = cost.macs()
    assert macs["forward"] == WEIGHTS + 2 * ATTENTION == 7536
    assert macs["backward_dw"] == WEIGHTS  # every weight, the activation products have none
    # dX: every weight layer but the first; both operands of both products in each block
    assert macs["backward_dx"] == (WEIGHTS - CONV) + 2 * 2 * ATTENTION
    qkv_layers = [layer for layer in cost.layers if layer.macs_forward == QKV + ATTENTION]
    assert len(qkv_layers) == 2  # the products are charged to the layer whose output they read (qkv)


def test_dbl_blocks_first_layer_after_a_trained_layernorm_needs_dx(tiny_vit_file):
    """Pre-norm blocks: a block's input goes through a LayerNorm with trained scale and bias before
    its first layer, so unlike a CNN block's first conv, that layer computes dX (the LayerNorm's
    gradients need it); no gradient crosses the boundary itself."""
    path, _ = tiny_vit_file("torchscript-17")
    program = llcompile.transform(path, strategy="dbl", blocks=2, balance_by="macs")  # the cut this count is made for
    cost = cost_program(program, batch_size=BATCH)
    first, second = cost.stages
    assert first.macs_forward + second.macs_forward == WEIGHTS + 2 * ATTENTION
    first_layer = next(layer for layer in cost.layers if layer.stage == second.name)
    assert first_layer.macs_backward_dx == first_layer.macs_forward > 0
    assert cost.layers[0].macs_backward_dx == 0  # the patch conv reads the input
    assert second.head is None and first.head is not None


def test_weight_layer_macs_match_a_torch_side_count(tiny_vit_file):
    """Each nn.Linear on tokens and the patch Conv, hooked: out.numel() * fan-in."""
    path, module = tiny_vit_file("dynamo-18")
    counts = []

    def hook(mod, _inputs, out):
        fan_in = mod.in_features if isinstance(mod, nn.Linear) else math.prod(mod.weight.shape[1:])
        counts.append(out.numel() * fan_in)

    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            m.register_forward_hook(hook)
    with torch.no_grad():
        module(torch.zeros(1, *INPUT_SHAPE))
    analysis = llcompile.analyze(llcompile.load(path))
    assert sorted(layer.macs for layer in analysis.layers) == sorted(counts)
    assert sum(counts) == WEIGHTS


def test_element_ops_of_layernorm_softmax_and_gelu_by_hand(tiny_vit_file):
    path, _ = tiny_vit_file("torchscript-20-gelu-tanh")  # the Gelu op: one node per GELU
    cost = cost_program(llcompile.transform(path, strategy="bp"), batch_size=BATCH)
    ops = {}
    for node in llcompile.load(path).graph:
        ops.setdefault(node.op_type, []).append(node)
    # one per output element: 5 LayerNorms of T*D, 2 Softmaxes of heads*T*T, 2 GELUs of T*2D
    assert sum(element_ops(n) for n in ops["LayerNormalization"]) == 5 * 5 * 8
    assert sum(element_ops(n) for n in ops["Softmax"]) == 2 * 2 * 5 * 5
    assert sum(element_ops(n) for n in ops["Gelu"]) == 2 * 5 * 16
    assert cost.element_ops()["forward"] > 5 * 5 * 8 + 2 * 2 * 5 * 5 + 2 * 5 * 16


@pytest.mark.parametrize("strategy", [dict(strategy="bp"), dict(strategy="dbl", blocks=2)], ids=["bp", "dbl"])
@pytest.mark.parametrize("kind", EXPORTS)
def test_kept_activations_match_torch(tiny_vit_file, kind, strategy):
    """Attention maps (Softmax outputs, [N,heads,T,T]), both product operands, LayerNorm statistics...:
    the rule's bytes per stage equal what torch's autograd saves when the torch backend trains."""
    path, _ = tiny_vit_file(kind)
    program = llcompile.transform(path, **strategy)
    predicted = [stage.activation_bytes for stage in cost_program(program, batch_size=BATCH).stages]
    assert predicted == measure_saved_bytes(program, BATCH)
