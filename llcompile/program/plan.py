"""The training plan that strategy passes write into a model and ``emit`` reads.

It lives in the model's ``metadata_props`` (key ``llcompile.program.plan``, JSON) so that a plan-carrying
model is still one ordinary ONNX file that can be saved and inspected between passes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import onnx_ir as ir

PLAN_KEY = "llcompile.program.plan"
LABELS = "labels"


@dataclass
class StagePlan:
    name: str
    # "block": trained by its aux head's loss; "final": by the model's own loss;
    # "hebbian": forward-only, its layers' weights updated by HebbianUpdate (no loss)
    kind: str
    input: str
    output: str
    loss: str | None = None
    head: dict | None = None  # aux head: kind, logits tensor, parameter names
    updates: dict | None = None  # hebbian: weight initializer -> the tensor holding its new value
    lr_input: str | None = None  # hebbian: the scalar input that carries the localized learning rate


@dataclass
class Plan:
    input: str
    output: str
    logits: str
    num_classes: int
    cuts: list[str]
    stages: list[StagePlan]
    labels: str = LABELS
    options: dict = field(default_factory=dict)

    @classmethod
    def read(cls, model: ir.Model) -> Plan | None:
        text = model.metadata_props.get(PLAN_KEY)
        if text is None:
            return None
        data = json.loads(text)
        data["stages"] = [StagePlan(**s) for s in data["stages"]]
        return cls(**data)

    def write(self, model: ir.Model) -> None:
        model.metadata_props[PLAN_KEY] = json.dumps(asdict(self))


HEBBIAN_STAGE = "hebbian"


def require_plan(model: ir.Model, pass_name: str) -> Plan:
    plan = Plan.read(model)
    if plan is None:
        raise ir.passes.PreconditionError(f"{pass_name} needs a partitioned model: run PartitionPass first")
    return plan
