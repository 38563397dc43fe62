"""Off-chip traffic (docs/cost-model.md, "Off-chip traffic") counted by hand for a small CNN, term by
term, for bp, dbl with one boundary and a Hebbian prefix; the activations kept are torch's own
(``saved_tensors_hooks``), not the cost model's.

The model: input 3x8x8 -> u0: Conv 3->4 3x3, BN, Relu -> u1: Conv 4->8 3x3 stride 2, BN, Relu ->
GlobalAveragePool -> Gemm 8->5. Floats per part:

- u0: conv weight 4*3*3*3 = 108, BN scale + bias 8, BN running mean + var 8;
- u1: conv weight 8*4*3*3 = 288, BN scale + bias 16, running mean + var 16;
- the model's head: 8*5 + 5 = 45; an ``fc`` aux head on u0.out (4 channels): 4*5 + 5 = 25.

At batch 4, SGD (one momentum slot per parameter), 4 bytes a float:

- bp: params 108 + 8 + 288 + 16 + 45 = 465, buffers 24. weights = (465 + 2 * 24) * 4 = 2052 (read all,
  write the buffers back); updates = (3 + 2) * 465 * 4 = 9300 (3 x grads + 2 x optimizer state);
  hand-off = the batch in (4*3*8*8*4 = 3072) + the logits out (4*5*4 = 80) = 3152.
- dbl, cut at u0.out: params 465 + 25 = 490. weights = (490 + 48) * 4 = 2152; updates = 5 * 490 * 4 =
  9800; hand-off = 3072 + u0.out out (4*4*8*8*4 = 4096) + u0.out in (4096) + 80 = 11344.
- local-sgd, prefix 1 (u0 Hebbian): trained by gradient 288 + 16 + 45 = 349; u0's conv weight gets a
  new value (108). weights = 2052; updates = 5 * 349 * 4 + 108 * 4 = 7412; hand-off = 11344.
- activations = 2 x max(0, kept - on-chip) per stage (spilled in the forward pass, read back in the
  backward pass); a Hebbian stage keeps nothing.
"""

from __future__ import annotations

import pytest

import llcompile
from llcompile.cost import cost_program, offchip_traffic
from llcompile.frontend.importer import canonicalize
from llcompile.report.saved_tensors import measure_saved_bytes
from tests.fixtures.cnn_graphs import CnnSpec, UnitSpec, build_cnn

BATCH = 4
SPEC = CnnSpec(seed=0, in_channels=3, size=8, classes=5,
               units=(UnitSpec("conv", 4, bn=True, relu=True), UnitSpec("conv", 8, stride=2, bn=True, relu=True)))
PROGRAMS = {
    "bp": ({}, {"weights": 2052, "updates": 9300, "handoff": 3152}),
    "dbl": ({"cuts": ["u0.out"], "boundary_policy": "fixed"}, {"weights": 2152, "updates": 9800, "handoff": 11344}),
    "local-sgd": ({"prefix": 1}, {"weights": 2052, "updates": 7412, "handoff": 11344}),
}


@pytest.fixture(scope="module")
def model():
    return canonicalize(build_cnn(SPEC))


@pytest.mark.parametrize("strategy", PROGRAMS)
def test_weights_updates_and_handoffs_by_hand(model, strategy):
    options, expected = PROGRAMS[strategy]
    traffic = offchip_traffic(cost_program(llcompile.transform(model, strategy, **options), batch_size=BATCH),
                              onchip_bytes=1 << 30)
    assert {k: traffic[k] for k in expected} == expected
    assert traffic["activations"] == 0  # everything fits on chip
    assert traffic["total"] == sum(expected.values())


@pytest.mark.parametrize("strategy", PROGRAMS)
def test_spilled_activations_are_written_and_read_back(model, strategy):
    options, expected = PROGRAMS[strategy]
    program = llcompile.transform(model, strategy, **options)
    kept = measure_saved_bytes(program, BATCH)  # what torch's autograd keeps, per stage
    if strategy == "local-sgd":
        assert kept[0] == 0
    cost = cost_program(program, batch_size=BATCH)
    for onchip in (0, min(kept[-1], max(kept)) // 2, max(kept) - 1):
        traffic = offchip_traffic(cost, onchip_bytes=onchip)
        spills = [2 * max(0, k - onchip) for k in kept]
        assert [s["activations"] for s in traffic["stages"]] == spills
        assert traffic["total"] == sum(expected.values()) + sum(spills)
