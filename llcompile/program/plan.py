"""The training plan that strategy passes write into a model and ``emit`` reads.

It lives in the model's ``metadata_props`` (key ``llcompile.program.plan``, JSON) so that a plan-carrying
model is still one ordinary ONNX file that can be saved and inspected between passes. The stage kind
and the aux head are typed here (``StageKind``, ``HeadPlan``); JSON is read and written in
``to_json`` / ``from_json`` only.
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field, fields

import onnx_ir as ir

PLAN_KEY = "llcompile.program.plan"
LABELS = "labels"


class StageKind(enum.StrEnum):
    """How a stage learns; its value is the string in the plan and in ``program.json``."""

    BLOCK = "block"  # trained by its aux head's loss
    FINAL = "final"  # trained by the model's own loss
    HEBBIAN = "hebbian"  # forward-only, its layers' weights updated by HebbianUpdate (no loss)


@dataclass(frozen=True)
class HeadPlan:
    """A block's aux head (``AuxHeadsPass``): what it is and which initializers it added."""

    kind: str  # fc | conv | dgl | augmented | ema
    logits: str  # the tensor whose argmax is the block's prediction
    params: list[str]
    buffers: list[str]
    pool: int | None = None  # pooled to pool x pool (a feature map only); None: globally
    width: float | None = None  # conv, dgl: hidden channels as a fraction of the block's
    subsample: int | None = None  # trains on every k-th sample of the batch; None: on all of it
    segments: list[int] | None = None  # augmented, ema: the later segments it copies
    copied_from: dict[str, str] | None = None  # augmented, ema: copied initializer -> the model's original
    # ema: the averaged weights (buffers, no gradient) -> the trained weight each follows, and the momentum
    ema: dict[str, str] | None = None
    momentum: float | None = None
    recon: float | None = None  # ce+recon: the reconstruction term's weight; None: cross-entropy alone
    ce: float | None = None  # the cross-entropy term's weight when it is not 1
    contrast: float | None = None  # ce+contrast: the contrastive term's weight; None: no such term

    @property
    def every(self) -> int:
        """k when the head trains on every k-th sample of the batch, else 1."""
        return self.subsample or 1

    def to_json(self) -> dict:
        """The head's JSON object: the fields that are set (an absent key means None)."""
        return {key: value for key, value in asdict(self).items() if value is not None}

    @classmethod
    def from_json(cls, data: dict) -> HeadPlan:
        return cls(**data)


@dataclass
class StagePlan:
    name: str
    kind: StageKind
    input: str
    output: str
    loss: str | None = None
    head: HeadPlan | None = None  # a block's aux head
    updates: dict | None = None  # hebbian: weight initializer -> the tensor holding its new value
    lr_input: str | None = None  # hebbian: the scalar input that carries the localized learning rate

    def to_json(self) -> dict:
        """Every JSON field of the stage, in field order, the kind and head as JSON values."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("json", True)}
        data["kind"] = self.kind.value
        data["head"] = self.head.to_json() if self.head is not None else None
        return data

    @classmethod
    def from_json(cls, data: dict) -> StagePlan:
        data = dict(data)
        head = data.get("head")
        return cls(**{**data, "kind": StageKind(data["kind"]),
                      "head": HeadPlan.from_json(head) if head is not None else None})


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
        data["stages"] = [StagePlan.from_json(s) for s in data["stages"]]
        return cls(**data)

    def write(self, model: ir.Model) -> None:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["stages"] = [stage.to_json() for stage in self.stages]
        model.metadata_props[PLAN_KEY] = json.dumps(data)


def require_plan(model: ir.Model, pass_name: str) -> Plan:
    plan = Plan.read(model)
    if plan is None:
        raise ir.passes.PreconditionError(f"{pass_name} needs a partitioned model: run PartitionPass first")
    return plan
