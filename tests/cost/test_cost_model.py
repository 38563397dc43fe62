"""Backward, Hebbian and aux-head MACs, element ops and kept activations, counted by hand on a tiny CNN.

    input 3x8x8 -> u0.conv 3x3 (3->4) + BN + ReLU -> u1.pool MaxPool 2x2 -> u2.conv 3x3 (4->8) + ReLU
                -> GAP -> Flatten -> head.fc (8->10)

Forward MACs per sample: u0.conv 8*8*4*(3*9) = 6912, u2.conv 4*4*8*(4*9) = 4608, head.fc 8*10 = 80.
"""

import dataclasses

import pytest

import llcompile
from llcompile.cost import cost_program
from llcompile.program.plan import StageKind
from llcompile.report.saved_tensors import measure_saved_bytes

CONV0, CONV2, FC = 6912, 4608, 80
B = 2  # batch of the byte counts


def costs(path, strategy, **options):
    program = llcompile.transform(llcompile.load(path), strategy, **options)
    return program, cost_program(program, batch_size=B)


def by_name(cost):
    return {layer.name: layer for layer in cost.layers}


def test_bp_by_hand(tiny_model):
    _, cost = costs(tiny_model, "bp")
    layers = by_name(cost)
    assert [layers[n].macs_forward for n in ("u0.conv", "u2.conv", "head.fc")] == [CONV0, CONV2, FC]
    # the first layer of the network has no dX; every weight gets its dW
    assert [layers[n].macs_backward_dx for n in ("u0.conv", "u2.conv", "head.fc")] == [0, CONV2, FC]
    assert [layers[n].macs_backward_dw for n in ("u0.conv", "u2.conv", "head.fc")] == [CONV0, CONV2, FC]
    macs = cost.macs()
    assert macs == {"forward": 11600, "backward": 4688 + 11600, "backward_dx": 4688, "backward_dw": 11600,
                    "hebbian": 0, "aux": 0, "aux_forward": 0, "aux_backward": 0, "total": 27888}
    # element ops per sample: BN 4*8*8, ReLU 4*8*8, MaxPool 4*4*4 outputs x 2*2 window, ReLU 8*4*4,
    # GAP its 8*4*4 inputs, the loss its 10 logits; each backward the same
    assert layers["u0.conv"].element_ops_forward == 256 + 256 + 64 * 4
    assert layers["u2.conv"].element_ops_forward == 128 + 128
    assert cost.element_ops() == {"forward": 1034, "backward": 1034, "aux": 0, "total": 2068}


def test_bp_kept_activations_by_hand(tiny_model):
    program, cost = costs(tiny_model, "bp")
    layers = by_name(cost)
    f = 4  # float32
    # u0.conv keeps its input x; BN its input + per-channel mean and inverse std; ReLU its output;
    # MaxPool its input (= the ReLU output, counted once) + int64 indices of its output
    assert layers["u0.conv"].activation_bytes == B * (3 * 64 * f + 256 * f + 2 * 4 * f / B + 256 * f + 64 * 8)
    # u2.conv keeps its input (the pool output), ReLU its output; GAP and Flatten keep nothing
    assert layers["u2.conv"].activation_bytes == B * (64 * f + 128 * f)
    assert layers["head.fc"].activation_bytes == B * 8 * f  # the flattened GAP output (a view: one storage)
    loss = B * 10 * f + B * 8 + f  # log-probabilities, int64 labels, the scalar total weight
    assert cost.stages[0].activation_bytes == sum(layer.activation_bytes for layer in cost.layers) + loss == 8388
    assert measure_saved_bytes(program, B) == [8388]  # what torch's autograd actually saves


def test_dbl_aux_head_and_block_first_layer(tiny_model):
    _, cost = costs(tiny_model, "dbl", cuts=["u1.out"])
    layers = by_name(cost)
    block1, block2 = cost.stages
    assert block1.layers == ["u0.conv"] and block2.layers == ["u2.conv", "head.fc"]
    # u2.conv starts block 2: its input is a constant of the block, so no dX
    assert layers["u2.conv"].macs_backward_dx == 0 and layers["head.fc"].macs_backward_dx == FC
    # the aux head GAP -> Gemm(4 -> 10): forward 40, dX 40 (the error flows into the block), dW 40
    head = block1.head
    assert (head.macs_forward, head.macs_backward_dx, head.macs_backward_dw) == (40, 40, 40)
    assert head.element_ops_forward == 4 * 8 * 8 // 4 + 10  # GAP over the pooled 4x4x4, the aux loss
    assert block2.head is None
    macs = cost.macs()
    assert (macs["backward_dx"], macs["aux"], macs["total"]) == (FC, 120, 11600 + FC + 11600 + 120)


def test_hebbian_prefix_by_hand(tiny_model):
    program, cost = costs(tiny_model, "local-sgd", prefix=1, hebbian_every=1)  # an update at every step
    hebbian, sgd = cost.stages
    assert hebbian.kind == "hebbian" and hebbian.layers == ["u0.conv"]
    layers = by_name(cost)
    # a localized layer: forward + one GEMM of dW's size; no dX, no dW; nothing kept
    assert (layers["u0.conv"].macs_hebbian, layers["u0.conv"].macs_backward_dx, layers["u0.conv"].macs_backward_dw,
            layers["u0.conv"].activation_bytes, layers["u0.conv"].mode) == (CONV0, 0, 0, 0, "hebbian")
    assert layers["u0.conv"].element_ops_backward == 0 and hebbian.activation_bytes == 0
    # the first SGD layer after the prefix has no dX
    assert layers["u2.conv"].macs_backward_dx == 0 and layers["u2.conv"].macs_backward_dw == CONV2
    assert cost.macs()["total"] == 11600 + CONV0 + FC + CONV2 + FC
    # its weight needs no gradient or optimizer slot, but a buffer of its new value
    assert cost.hebbian_update_bytes == 4 * 3 * 9 * 4
    conv2_and_fc = (8 * 4 * 9 + 10 * 8 + 10) * 4  # trained: u2.conv's weight, the fc weight and bias
    assert cost.grads_bytes == cost.optimizer_bytes == conv2_and_fc
    assert measure_saved_bytes(program, B) == [s.activation_bytes for s in cost.stages]


def test_cheaper_hebbian_updates_divide_the_hebbian_gemm(tiny_model):
    """From every 2nd sample at every 3rd step: a sixth of the Hebbian GEMM per step on average."""
    _, cost = costs(tiny_model, "local-sgd", prefix=1, hebbian_subsample=2, hebbian_every=3)
    layer = by_name(cost)["u0.conv"]
    assert (layer.macs_forward, layer.macs_hebbian) == (CONV0, CONV0 // 6)
    assert cost.macs()["total"] == 11600 + CONV0 // 6 + FC + CONV2 + FC


def test_hand_made_hebbian_stage_matches_the_strategy(tiny_model):
    """A stage's kind alone decides: a dbl block relabelled `hebbian` costs as local-sgd's prefix."""
    program = llcompile.transform(llcompile.load(tiny_model), "dbl", cuts=["u1.out"])
    program.stages[0] = dataclasses.replace(program.stages[0], kind=StageKind.HEBBIAN, head=None)
    hand = cost_program(program, batch_size=B)
    _, real = costs(tiny_model, "local-sgd", prefix=1, hebbian_every=1)  # the hand-made stage has no option
    def without_stage(cost):
        return [{k: v for k, v in layer.to_json().items() if k != "stage"} for layer in cost.layers]

    assert without_stage(hand) == without_stage(real)
    assert hand.macs() == real.macs()


def test_optimizer_slots(tiny_model):
    program = llcompile.transform(llcompile.load(tiny_model), "bp")
    sgd, adamw = cost_program(program, B, "sgd"), cost_program(program, B, "adamw")
    assert adamw.optimizer_bytes == 2 * sgd.optimizer_bytes == 2 * sgd.grads_bytes
    with pytest.raises(llcompile.LLCompileError, match="unknown optimizer"):
        cost_program(program, B, "lion")


def test_first_layer_of_every_block_has_no_dx(zoo_file):
    """ResNet-20 cut before the first downsampling residual block: exactly the layers fed by a
    block's input skip dX (the stem; that block's first conv and its projection shortcut); every
    other layer's dX equals its forward MACs; the bp total is 3x forward minus the stem's dX."""
    model = llcompile.load(zoo_file("resnet20"))
    program = llcompile.transform(model, "dbl", cuts=["/stages/layer1/layer1.2/relu/Relu_output_0"])
    cost = cost_program(program)
    layers = by_name(cost)
    analysis = llcompile.analyze(model)
    inputs = {layer.name: None for layer in analysis.layers}
    import onnx_ir as ir

    graph = ir.from_proto(program.eval_model).graph
    for node in graph:
        if node.name in inputs:
            inputs[node.name] = node.inputs[0].name
    for stage in program.stages:
        for name in stage.layers:
            first = inputs[name] == stage.input
            assert layers[name].macs_backward_dx == (0 if first else layers[name].macs_forward), name
    assert sum(inputs[n] in {s.input for s in program.stages} for n in inputs) == 3
    bp = cost_program(llcompile.transform(model, "bp"))
    assert bp.macs()["total"] == 3 * analysis.macs - analysis.layers[0].macs


def test_cheap_heads_by_hand(tiny_model):
    # fc on the 4x8x8 cut pooled to 2x2: Gemm(4*2*2 -> 10) = 160 MACs, forward, dX and dW each
    _, cost = costs(tiny_model, "dbl", cuts=["u1.out"], aux_pool=2)
    head = cost.stages[0].head
    assert (head.macs_forward, head.macs_backward_dx, head.macs_backward_dw) == (160, 160, 160)
    # the u1.out activation is 4x4x4 (after the 2x2 max pool): AveragePool 2x2 windows over 4 * 2 * 2 outputs
    assert head.element_ops_forward == 4 * 2 * 2 * 4 + 10
    # conv head at width 0.5 on 4 channels: conv 1x1 4->2 over 4x4 (2*4*16 = 128), fc1 2->2 (4), fc2 2->10 (20)
    _, cost = costs(tiny_model, "dbl", cuts=["u1.out"], aux_head="conv", aux_width=0.5)
    head = cost.stages[0].head
    assert head.macs_forward == 128 + 4 + 20
    assert cost.stages[0].head.params == 2 * 4 + 2 * 2 + 2 * 2 + 2 + 10 * 2 + 10  # conv, bn, fc1, fc2


def test_dgl_head_and_reconstruction_decoder_by_hand(tiny_model):
    # dgl on the 4x4x4 cut: conv 3x3 stride 2 4->4 to 2x2 (4*4*9*2*2 = 576), fc1 4->128 (512), fc2 128->10 (1280)
    _, cost = costs(tiny_model, "dbl", cuts=["u1.out"], aux_head="dgl")
    head = cost.stages[0].head
    assert head.macs_forward == 576 + 512 + 1280
    assert head.params == 4 * 4 * 9 + 2 * 4 + 4 * 128 + 128 + 128 * 10 + 10  # conv, bn, fc1, fc2
    # + the decoder back to the 3x8x8 image: upsampled x2 to 4x8x8, conv 3x3 4->16 (16*4*9*64 = 36864),
    # BN, ReLU, conv 3x3 16->3 with bias (3*16*9*64 = 27648)
    _, cost = costs(tiny_model, "dbl", cuts=["u1.out"], aux_head="dgl", aux_loss="ce+recon")
    recon = cost.stages[0].head
    assert recon.macs_forward == head.macs_forward + 36864 + 27648
    assert recon.params == head.params + 4 * 16 * 9 + 2 * 16 + 16 * 3 * 9 + 3
    # every decoder layer passes a gradient back (its first reads the block's output) and has weights
    assert recon.macs_backward_dx - head.macs_backward_dx == 36864 + 27648
    assert recon.macs_backward_dw - head.macs_backward_dw == 36864 + 27648


def test_a_head_on_every_kth_sample_costs_a_kth_of_it_by_hand(tiny_model):
    # the pooled fc head above (160 MACs forward, dX and dW) on every 4th sample: 40 each per sample of
    # the batch; its element ops per node: AveragePool 64 / 4, the Gemm's bias 10 / 4 (rounded down)
    _, whole = costs(tiny_model, "dbl", cuts=["u1.out"], aux_pool=2)
    _, subset = costs(tiny_model, "dbl", cuts=["u1.out"], aux_pool=2, aux_subsample=4)
    head, whole_head = subset.stages[0].head, whole.stages[0].head
    assert (head.macs_forward, head.macs_backward_dx, head.macs_backward_dw) == (40, 40, 40)
    assert head.element_ops_forward == 64 // 4 + 10 // 4
    assert head.params == whole_head.params
    # kept for backward: ceil(B / 4) = 1 of the B = 2 samples; the block's own layers cost the same
    assert head.activation_bytes == whole_head.activation_bytes // 2
    assert subset.stages[0].activation_bytes == (whole.stages[0].activation_bytes - whole_head.activation_bytes
                                                 + head.activation_bytes)
    assert [dataclasses.asdict(layer) for layer in subset.layers] == [dataclasses.asdict(layer)
                                                                    for layer in whole.layers]


def test_report_spec_takes_the_cheap_head_options():
    from llcompile.report.programs import parse_spec

    spec = parse_spec("dbl:blocks=8,aux_pool=2,aux_width=0.25,aux_subsample=4")
    assert spec.options == {"blocks": 8, "aux_pool": 2, "aux_width": 0.25, "aux_subsample": 4}
    for option in ("aux_pool", "aux_subsample"):
        with pytest.raises(llcompile.LLCompileError, match=f"{option} must be >= 1"):
            parse_spec(f"dbl:{option}=0")
