"""The cost of one training step of a compiled Program: MACs, element operations and memory,
per layer, per stage and in total. Pure: reads the program, never changes it.

Conventions (docs/cost-model.md has every formula):

- MACs and element operations are per sample (they scale linearly with the batch); one MAC is one
  multiply-accumulate, FLOPs = 2 x MACs. Bytes are per training step at ``batch_size``, float32.
- SGD stages (``block``, ``final``): forward MACs; dX = forward MACs where the gradient flows into
  the layer's input (never for the first layer of the network or of a block); dW = forward MACs.
- ``hebbian`` stages: forward MACs + one Hebbian GEMM of dW's size (= forward MACs, divided by
  ``hebbian_subsample`` x ``hebbian_every``: the update reads every k-th sample, or runs every k-th
  step, so per step it costs that much less on average); no dX, no dW,
  nothing kept for a backward pass; the localized weights need no gradient buffer but a buffer of
  their new values, written back after the stage.
- aux heads: their own forward, dX of every head layer (the error flows on into the block), dW; a
  head on every k-th sample (``aux_subsample``) costs 1/k of that per sample of the batch, and keeps
  ceil(batch / k) samples' activations.
- a MatMul between two activations (attention's Q·Kᵀ and attention·V) has no weight: it belongs to
  a layer as a trailing op and adds its forward MACs there, and one GEMM of the same MACs to dX per
  operand that needs a gradient (both, inside a block).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import onnx
import onnx_ir as ir

from llcompile.analysis.structure import Layer, analyze, data_dependent_nodes, parameter_roles, weight_input
from llcompile.errors import LLCompileError
from llcompile.analysis.macs import element_ops, forward_macs
from llcompile.ops.elements import per_sample_elements
from llcompile.program.plan import StageKind
from llcompile.program.program import Program, Stage
from llcompile.cost.autograd import NodeBackward, backward_facts
from llcompile.ops.registry import FLOAT_BYTES

OPTIMIZER_SLOTS = {"sgd": 1, "adamw": 2}  # state tensors per parameter: momentum; first and second moment


@dataclass
class LayerCost:
    name: str
    op: str
    stage: str
    mode: str  # sgd | hebbian
    output_shape: list
    params: int
    macs_forward: int
    macs_backward_dx: int
    macs_backward_dw: int
    macs_hebbian: int
    element_ops_forward: int
    element_ops_backward: int
    activation_bytes: int
    trailing_ops: list[str]

    @property
    def macs_backward(self) -> int:
        return self.macs_backward_dx + self.macs_backward_dw

    @property
    def macs_total(self) -> int:
        return self.macs_forward + self.macs_backward + self.macs_hebbian

    def to_json(self) -> dict:
        return {**asdict(self), "macs_backward": self.macs_backward, "macs_total": self.macs_total}


@dataclass
class HeadCost:
    kind: str
    params: int
    macs_forward: int
    macs_backward_dx: int
    macs_backward_dw: int
    element_ops_forward: int
    element_ops_backward: int
    activation_bytes: int

    @property
    def macs_backward(self) -> int:
        return self.macs_backward_dx + self.macs_backward_dw

    def to_json(self) -> dict:
        return {**asdict(self), "macs_backward": self.macs_backward}


@dataclass
class StageCost:
    name: str
    kind: StageKind
    layers: list[str]
    input: str
    output: str
    input_bytes: int
    output_bytes: int
    macs_forward: int = 0
    macs_backward_dx: int = 0
    macs_backward_dw: int = 0
    macs_hebbian: int = 0
    element_ops_forward: int = 0  # model ops of the stage, its loss included; the aux head's are in head
    element_ops_backward: int = 0
    activation_bytes: int = 0  # kept for the backward pass: layers + aux head + loss
    hebbian_update_bytes: int = 0
    head: HeadCost | None = None

    @property
    def macs_aux_forward(self) -> int:
        return self.head.macs_forward if self.head else 0

    @property
    def macs_aux_backward(self) -> int:
        return self.head.macs_backward if self.head else 0

    def macs(self) -> dict:
        backward = self.macs_backward_dx + self.macs_backward_dw
        aux = self.macs_aux_forward + self.macs_aux_backward
        return {"forward": self.macs_forward, "backward": backward, "backward_dx": self.macs_backward_dx,
                "backward_dw": self.macs_backward_dw, "hebbian": self.macs_hebbian, "aux": aux,
                "aux_forward": self.macs_aux_forward, "aux_backward": self.macs_aux_backward,
                "total": self.macs_forward + backward + self.macs_hebbian + aux}

    def to_json(self) -> dict:
        return {"name": self.name, "kind": self.kind.value, "layers": self.layers, "input": self.input,
                "output": self.output, "input_bytes": self.input_bytes, "output_bytes": self.output_bytes,
                "macs": self.macs(),
                "element_ops": {"forward": self.element_ops_forward, "backward": self.element_ops_backward},
                "activation_bytes": self.activation_bytes, "hebbian_update_bytes": self.hebbian_update_bytes,
                "head": self.head.to_json() if self.head else None}


@dataclass
class ProgramCost:
    strategy: str
    options: dict
    batch_size: int
    optimizer: str
    layers: list[LayerCost]
    stages: list[StageCost]
    params_bytes: int  # every learnable parameter, aux heads included
    buffers_bytes: int  # BatchNormalization running statistics
    grads_bytes: int  # parameters trained by gradient
    optimizer_bytes: int
    hebbian_update_bytes: int  # new values of the Hebbian-trained weights
    notes: list[str] = field(default_factory=list)

    def macs(self) -> dict:
        totals: dict[str, int] = {}
        for stage in self.stages:
            for key, value in stage.macs().items():
                totals[key] = totals.get(key, 0) + value
        return totals

    def element_ops(self) -> dict:
        forward = sum(s.element_ops_forward for s in self.stages)
        backward = sum(s.element_ops_backward for s in self.stages)
        aux = sum(s.head.element_ops_forward + s.head.element_ops_backward for s in self.stages if s.head)
        return {"forward": forward, "backward": backward, "aux": aux, "total": forward + backward + aux}

    @property
    def activation_peak_bytes(self) -> int:
        """Stages run one after another and a stage's activations are freed after its backward."""
        return max((s.activation_bytes for s in self.stages), default=0)

    @property
    def peak_bytes(self) -> int:
        """Persistent state (parameters, buffers, gradients, optimizer state) + the largest stage's
        transient memory (kept activations of an SGD stage, new weights of a Hebbian stage)."""
        transient = max((max(s.activation_bytes, s.hebbian_update_bytes) for s in self.stages), default=0)
        return self.params_bytes + self.buffers_bytes + self.grads_bytes + self.optimizer_bytes + transient


def cost_program(program: Program, batch_size: int = 128, optimizer: str = "sgd") -> ProgramCost:
    """Cost one training step of ``program`` at ``batch_size`` with ``optimizer`` (sgd | adamw)."""
    if optimizer not in OPTIMIZER_SLOTS:
        raise LLCompileError(f"unknown optimizer {optimizer!r}; choose one of: {', '.join(OPTIMIZER_SLOTS)}")
    if program.eval_model is None or any(s.model is None for s in program.stages):
        raise LLCompileError("the program was loaded without its graphs; load it with with_graphs=True")
    coster = _Coster(program, batch_size)
    stages = [coster.cost_stage(index, stage) for index, stage in enumerate(program.stages)]
    roles = parameter_roles(coster.eval_graph)
    model_params = _initializer_bytes(coster.eval_graph, {n for n, r in roles.items() if r == "param"})
    model_buffers = _initializer_bytes(coster.eval_graph, {n for n, r in roles.items() if r == "buffer"})
    grads = sum(coster.trained.values())
    return ProgramCost(
        strategy=program.strategy, options=dict(program.options), batch_size=batch_size, optimizer=optimizer,
        layers=[coster.layers[layer.name] for layer in coster.analysis.layers], stages=stages,
        params_bytes=sum({**model_params, **coster.head_params}.values()),
        buffers_bytes=sum({**model_buffers, **coster.head_buffers}.values()),
        grads_bytes=grads, optimizer_bytes=OPTIMIZER_SLOTS[optimizer] * grads,
        hebbian_update_bytes=sum(coster.hebbian_weights.values()))


class _Coster:
    """Costs a program's stages one by one; collects the layers and the parameter sizes it meets."""

    def __init__(self, program: Program, batch_size: int):
        self.batch_size = batch_size
        eval_model = ir.from_proto(program.eval_model)
        self.eval_graph = eval_model.graph
        try:
            self.analysis = analyze(eval_model)
        except ValueError as exc:
            raise LLCompileError(f"cannot cost the program: {exc}") from None
        self.layer_facts = {layer.name: layer for layer in self.analysis.layers}
        self.owner: dict[str, str] = {}  # eval-model node name -> the layer it belongs to
        for layer in self.analysis.layers:
            self.owner[layer.name] = layer.name
            self.owner.update({name: layer.name for name in layer.trailing_nodes})
        self.eval_data_nodes = data_dependent_nodes(self.eval_graph)
        self.eval_node_names = {node.name for node in self.eval_graph}
        self.eval_values = _values(self.eval_graph)
        self.stage_of_layer = {name: stage.name for stage in program.stages for name in stage.layers}
        # the Hebbian GEMM's share per step: from every k-th sample, at every k-th step
        self.hebbian_divisor = program.options.get("hebbian_subsample", 1) * program.options.get("hebbian_every", 1)
        missing = [name for name in self.layer_facts if name not in self.stage_of_layer]
        if missing:
            raise LLCompileError(f"layer {missing[0]!r} is in no stage of the program")
        self.layers: dict[str, LayerCost] = {}
        self.trained: dict[str, int] = {}  # parameter trained by gradient -> bytes
        self.head_params: dict[str, int] = {}
        self.head_buffers: dict[str, int] = {}
        self.hebbian_weights: dict[str, int] = {}

    def cost_stage(self, index: int, stage: Stage) -> StageCost:
        if stage.kind == StageKind.HEBBIAN:  # forward-only: its layers' nodes in the eval model, nothing trained
            graph = self.eval_graph
            nodes = [n for n in self.eval_data_nodes
                     if self.owner.get(n.name) in stage.layers or (index == 0 and n.name not in self.owner)]
            trained: set[str] = set()
        else:
            graph = _stage_graph(stage)
            nodes = list(graph)
            trained = set(stage.params)
            self.trained.update(_initializer_bytes(graph, trained))
        try:
            facts = backward_facts(nodes, trained, self.batch_size)
        except ValueError as exc:
            raise LLCompileError(f"stage {stage.name}: cannot cost: {exc}") from None
        values = _values(graph)
        cost = StageCost(
            name=stage.name, kind=stage.kind, layers=list(stage.layers), input=stage.input, output=stage.output,
            input_bytes=_value_bytes(values.get(stage.input) or self.eval_values.get(stage.input), self.batch_size),
            output_bytes=_value_bytes(values.get(stage.output) or self.eval_values.get(stage.output),
                                      self.batch_size))
        if stage.head and stage.kind != StageKind.HEBBIAN:  # a Hebbian stage trains no head
            params, buffers = set(stage.head.params), set(stage.head.buffers)
            cost.head = HeadCost(kind=stage.head.kind, params=_initializer_elements(graph, params),
                                 macs_forward=0, macs_backward_dx=0, macs_backward_dw=0, element_ops_forward=0,
                                 element_ops_backward=0, activation_bytes=0)
            self.head_params.update(_initializer_bytes(graph, params))
            self.head_buffers.update(_initializer_bytes(graph, buffers))
        for node in nodes:
            self._cost_node(node, facts[node.name], stage, cost)
        for name in stage.layers:
            layer = self.layers.get(name)
            if layer is None:
                raise LLCompileError(f"stage {stage.name}: layer {name!r} is not in its graph")
            cost.macs_forward += layer.macs_forward
            cost.macs_backward_dx += layer.macs_backward_dx
            cost.macs_backward_dw += layer.macs_backward_dw
            cost.macs_hebbian += layer.macs_hebbian
            cost.element_ops_forward += layer.element_ops_forward
            cost.element_ops_backward += layer.element_ops_backward
        if stage.kind == StageKind.HEBBIAN:
            # the weights it updates (``updates``: weight -> output with its new value), else its layers' weights
            updated = set(stage.updates or {}) or {self.layer_facts[n].weight for n in stage.layers}
            sizes = _initializer_bytes(self.eval_graph, updated)
            self.hebbian_weights.update(sizes)
            cost.hebbian_update_bytes = sum(sizes.values())
        return cost

    def _cost_node(self, node: ir.Node, fact: NodeBackward, stage: Stage, cost: StageCost) -> None:
        """Charge one node to its layer, to the stage's aux head, or to the stage itself."""
        try:
            elements = element_ops(node)
        except ValueError as exc:
            raise LLCompileError(f"node {node.name!r}: cannot count element operations: {exc}") from None
        elements_backward = elements if fact.recorded else 0
        try:
            product_macs = forward_macs(node) if node.op_type == "MatMul" and weight_input(node) is None else 0
        except ValueError as exc:
            raise LLCompileError(f"node {node.name!r}: cannot count MACs: {exc}") from None
        product_backward = product_macs * fact.grad_inputs
        layer_name = self.owner.get(node.name)
        if layer_name is not None and self.stage_of_layer[layer_name] == stage.name:
            layer = self.layers.get(layer_name)
            if layer is None:
                layer = self.layers[layer_name] = _new_layer_cost(self.layer_facts[layer_name], stage)
            if node.name == layer_name:
                if stage.kind == StageKind.HEBBIAN:
                    # one GEMM of the weight gradient's size
                    layer.macs_hebbian = layer.macs_forward // self.hebbian_divisor
                else:
                    layer.macs_backward_dx = layer.macs_forward if fact.dx else 0
                    layer.macs_backward_dw = layer.macs_forward if fact.dw else 0
            layer.macs_forward += product_macs
            layer.macs_backward_dx += product_backward
            layer.element_ops_forward += elements
            layer.element_ops_backward += elements_backward
            layer.activation_bytes += fact.kept_bytes
            cost.activation_bytes += fact.kept_bytes
        elif node.name not in self.eval_node_names and cost.head is not None:  # added by the strategy: the head
            head = cost.head
            try:
                macs = forward_macs(node) if weight_input(node) is not None else 0
            except ValueError as exc:
                raise LLCompileError(f"aux head node {node.name!r}: cannot count MACs: {exc}") from None
            # a head on every k-th sample: per sample of the batch, 1/k of its work; ceil(batch / k) samples kept
            every = stage.head.every
            head.macs_forward += (macs + product_macs) // every
            head.macs_backward_dx += ((macs if fact.dx else 0) + product_backward) // every
            head.macs_backward_dw += (macs if fact.dw else 0) // every
            head.element_ops_forward += elements // every
            head.element_ops_backward += elements_backward // every
            kept = fact.kept_bytes * -(-self.batch_size // every) // self.batch_size
            head.activation_bytes += kept
            cost.activation_bytes += kept
        else:  # the model's loss, ops before the first layer
            cost.macs_forward += product_macs
            cost.macs_backward_dx += product_backward
            cost.element_ops_forward += elements
            cost.element_ops_backward += elements_backward
            cost.activation_bytes += fact.kept_bytes


def _stage_graph(stage: Stage) -> ir.Graph:
    try:
        inferred = onnx.shape_inference.infer_shapes(stage.model, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
        raise LLCompileError(f"stage {stage.name}: shape inference failed: {str(exc).splitlines()[0]}") from None
    return ir.from_proto(inferred).graph


def _new_layer_cost(layer: Layer, stage: Stage) -> LayerCost:
    return LayerCost(name=layer.name, op=layer.op, stage=stage.name,
                     mode="hebbian" if stage.kind == StageKind.HEBBIAN else "sgd", output_shape=layer.output_shape,
                     params=layer.params, macs_forward=layer.macs, macs_backward_dx=0, macs_backward_dw=0,
                     macs_hebbian=0, element_ops_forward=0, element_ops_backward=0, activation_bytes=0,
                     trailing_ops=list(layer.trailing_ops))


def _initializer_bytes(graph: ir.Graph, names: set[str]) -> dict[str, int]:
    return {name: int(v.const_value.nbytes) for name, v in graph.initializers.items()
            if name in names and v.const_value is not None}


def _initializer_elements(graph: ir.Graph, names: set[str]) -> int:
    return sum(int(v.const_value.size) for name, v in graph.initializers.items()
               if name in names and v.const_value is not None)


def _values(graph: ir.Graph) -> dict[str, ir.Value]:
    return {v.name: v for node in graph for v in node.outputs} | {v.name: v for v in graph.inputs}


def _value_bytes(value: ir.Value | None, batch_size: int) -> int:
    if value is None or value.shape is None:
        return 0
    size = int(value.dtype.itemsize) if value.dtype is not None else FLOAT_BYTES
    return per_sample_elements(value) * batch_size * size
