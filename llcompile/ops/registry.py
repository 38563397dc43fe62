"""The op registry: every fact llcompile needs about one ONNX op, registered once, in the file of
its family (``llcompile/ops/<family>.py``) next to its torch emitter and its ORT decomposition.

The importer accepts the registered ops of the standard domain; the cost model reads their MAC
rule, element-op kind and backward facts; the torch builder calls their emitter; the ORT backend
applies their decomposition. Look facts up with ``op_facts``; ``llcompile.ops`` holds the sets by
role, made once every family has registered.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import onnx_ir as ir

from llcompile.ops.torch_builder import Emitter

STANDARD_DOMAIN = ""
# The standard opsets the importer brings models into, and so the ones every op is read at.
# BatchNormalization's training_mode attribute needs opset 14.
MIN_OPSET = 14
# The newest opset onnxruntime(-training) 1.19 runs.
MAX_OPSET = 21

FLOAT_BYTES = 4
INDEX_BYTES = 8  # int64: MaxPool indices, labels
MASK_BYTES = 1  # bool: Dropout mask, PRelu's sign

MacRule = Callable[[ir.Node], int]
Rewrite = Callable[[ir.Node], list[ir.Node]]


class Role(enum.Enum):
    """What an op is to llcompile (docs/ops.md lists the ops by role)."""

    PARAMETRIC = "parametric"  # has a weight: the layers that learn, whose work is counted in MACs
    ELEMENTWISE = "element-wise"  # element-wise and normalisation ops
    STRUCTURAL = "structural"  # pooling, reshaping and joining ops
    LOSS = "loss"  # losses llcompile inserts into the training program
    WEIGHT_UPDATE = "weight update"  # llcompile's own update of a Hebbian stage; never in a model


class ElementOps(enum.Enum):
    """How many element operations one sample through the op costs (``analysis/macs.py``)."""

    NONE = "none"  # weight GEMMs and data movement
    PER_OUTPUT = "per output element"  # element-wise and normalisation ops
    PER_WINDOW = "per window element"  # pools: every output element reads a window
    PER_INPUT = "per input element"  # global pooling, reductions, the loss


class Keeps(enum.Enum):
    """What torch's autograd saves of a recorded op for its backward (``cost/autograd.py``). A weight
    layer keeps its data input when its weight is trained, whatever its op's entry says."""

    NOTHING = "nothing"
    INPUT = "input"
    OUTPUT = "output"
    INPUT_AND_OUTPUT = "input and output"
    PRODUCT_OPERANDS = "product operands"  # each computed operand, when the other one needs a gradient
    VIEW = "view"  # nothing: the output shares the input's storage


class SavedTensors(Protocol):
    """What an op's ``extra_saved`` function may ask of the backward model (``cost/autograd.py``)."""

    batch_size: int

    def save(self, value: ir.Value, itemsize: int | None = None) -> None:
        """Keep ``value`` (an activation, counted once however many nodes keep it)."""

    def keep(self, tag: str, nbytes: int) -> None:
        """Keep a tensor of the node's own (statistics, a mask, indices) of ``nbytes`` bytes."""

    def value_bytes(self, value: ir.Value, itemsize: int | None = None) -> int:
        """Bytes of ``value`` for the whole batch (``itemsize`` bytes per element, else its dtype's)."""


ExtraSaved = Callable[[ir.Node, SavedTensors], None]


@dataclass(frozen=True)
class Backward:
    """What an op keeps for its backward: ``keeps``, then whatever ``extra_saved`` adds."""

    keeps: Keeps
    extra_saved: ExtraSaved | None = None


@dataclass(frozen=True)
class OpsetRange:
    """The opset versions of the op's domain at which llcompile reads the op (both ends included)."""

    first: int
    last: int


STANDARD_OPSETS = OpsetRange(MIN_OPSET, MAX_OPSET)


def no_macs(node: ir.Node) -> int:
    """The MAC rule of the ops that are not weight or activation products."""
    return 0


@dataclass(frozen=True)
class OpFacts:
    """Everything llcompile knows about one op."""

    op_type: str
    role: Role
    torch_emitter: Emitter  # records the op's torch calls (returns its first output, or None when folded)
    macs: MacRule  # MACs of one sample through a node; ``no_macs`` for most ops
    element_ops: ElementOps
    backward: Backward
    opsets: OpsetRange = STANDARD_OPSETS
    domain: str = STANDARD_DOMAIN
    ort_rewrite: Rewrite | None = None  # the nodes onnxruntime-training differentiates in its place
    probabilities: bool = False  # the output is a model's class probabilities, not its logits
    torch_all_outputs: bool = False  # the torch emitter computes every output (others: the first only)


_REGISTRY: dict[tuple[str, str], OpFacts] = {}


def _domain_key(domain: str) -> str:
    return STANDARD_DOMAIN if domain == "ai.onnx" else domain


def register(facts: OpFacts) -> OpFacts:
    """Add ``facts``; an op is registered once."""
    key = (_domain_key(facts.domain), facts.op_type)
    if key in _REGISTRY:
        raise ValueError(f"op {facts.domain}::{facts.op_type} is registered twice")
    _REGISTRY[key] = facts
    return facts


def op_facts(op_type: str, domain: str = STANDARD_DOMAIN) -> OpFacts | None:
    """The facts of ``op_type`` in ``domain`` ("ai.onnx" is the standard domain), None when unregistered."""
    return _REGISTRY.get((_domain_key(domain), op_type))


def registered_ops() -> list[OpFacts]:
    """Every registered op, in registration order."""
    return list(_REGISTRY.values())
