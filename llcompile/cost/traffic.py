"""Off-chip memory traffic of one training step, with an on-chip buffer of a given size.

Assumptions (docs/cost-model.md, "Off-chip traffic"):

- weights and buffers are read from off-chip once per step; buffers (BN running statistics) are
  written back once;
- every parameter trained by gradient has its gradient written and read once, its optimizer state
  read and written once, its new value written once: ``3 x grads + 2 x optimizer state``; a
  Hebbian-trained weight has its new value written once;
- the activations a stage keeps for its backward pass stay on chip as far as they fit: what fits
  stays, the rest is written in the forward pass and read back in the backward pass (2 x the excess);
  stages run one at a time, so each has the whole buffer;
- a stage reads its input from off-chip once and writes its output once (the data batch in, the
  logits out, and each block boundary once each way);
- tensors that are produced and consumed without being kept (the gradients flowing backwards,
  an activation a Hebbian stage passes on) stream through on-chip memory and are not counted.
"""

from __future__ import annotations

from llcompile.cost.cost_model import ProgramCost


def offchip_traffic(cost: ProgramCost, onchip_bytes: int) -> dict:
    """Bytes moved between the chip and off-chip memory in one step, by kind, and per stage."""
    weights = cost.params_bytes + cost.buffers_bytes + cost.buffers_bytes  # read all, write buffers back
    updates = 3 * cost.grads_bytes + 2 * cost.optimizer_bytes + cost.hebbian_update_bytes
    stages = []
    for stage in cost.stages:
        spilled = max(0, stage.activation_bytes - onchip_bytes)
        stages.append({"name": stage.name, "activation_bytes": stage.activation_bytes, "spilled_bytes": spilled,
                       "activations": 2 * spilled, "handoff": stage.input_bytes + stage.output_bytes})
    activations = sum(s["activations"] for s in stages)
    handoff = sum(s["handoff"] for s in stages)
    return {"onchip_bytes": onchip_bytes, "weights": weights, "updates": updates, "activations": activations,
            "handoff": handoff, "total": weights + updates + activations + handoff, "stages": stages}
