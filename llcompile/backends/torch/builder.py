"""ONNX stage graph -> ``torch.fx.GraphModule`` (``StageModule``) that trains like a hand-written module.

``build_module(model, outputs)`` walks the graph once, in order, and records one or a few torch
calls per ONNX node into a ``torch.fx.Graph`` by calling the op's emitter from the op registry
(``llcompile/ops/``; Constant nodes are folded into their consumers);
fx writes the module's ``forward`` from that graph. Eager mode runs at the speed of a
hand-written module, ``torch.jit.script`` and ``torch.compile`` accept it, and ``module.code``
shows it (``annotated_code()`` adds the ONNX node of each line, for people).

No string from the model reaches the code fx writes: placeholders, fx nodes and attributes get
names made here (``input_0``, ``conv2d_0``, ``const_3``, fx's own ``relu_1``...), every argument is a
number, a list of numbers, a torch dtype or a string chosen here from a fixed set, and the ONNX
names live in Python data (the ``_parameter_paths``/``_buffer_paths`` maps, ``node.meta``).

Layers become real torch modules so that everything trains and updates as in torch: Conv ->
``nn.Conv1d/2d/3d``, Gemm (transB=1, alpha=beta=1) -> ``nn.Linear``, BatchNormalization ->
``nn.BatchNorm1d/2d/3d`` (batch statistics in ``train()``, running statistics in ``eval()``,
whatever the graph's ``training_mode`` says), Dropout -> ``nn.Dropout``. Other learnable
initializers (``llcompile.analysis.structure.parameter_roles``) become ``nn.Parameter``s, other
constants Python numbers or non-persistent buffers.

State is exchanged by ONNX initializer name (``module.py``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
import torch
from torch import Tensor, fx, nn

from llcompile.analysis.structure import parameter_roles
from llcompile.backends.torch.module import ONNX_NODE, StageModule
from llcompile.errors import LLCompileError
from llcompile.ops.attributes import number
from llcompile.ops.registry import op_facts
from llcompile.util.terminal import printable


def build_module(model: onnx.ModelProto, outputs: list[str]) -> StageModule:
    """A module whose ``forward`` takes the graph's data inputs (in order) and returns the tensors
    named ``outputs`` as a tuple; only the nodes those outputs need are computed."""
    graph = ir.from_proto(onnx.shape_inference.infer_shapes(model)).graph
    builder = _Builder(graph)
    builder.build(outputs)
    module = StageModule(builder.root, builder.fx_graph, builder.parameter_paths, builder.buffer_paths,
                         builder.constant_buffers)
    module.load_onnx_state(builder.initial_state)
    return module


class _Builder:
    """Walks the graph once: registers modules, parameters and buffers on ``root`` (under names
    made here) and records each node's torch calls into ``fx_graph``: what an op's emitter may ask
    of it is ``llcompile.ops.torch_builder.TorchBuilder``."""

    def __init__(self, graph: ir.Graph):
        self.graph = graph
        self.fx_graph = fx.Graph()
        self.tracer = fx.proxy.GraphAppendingTracer(self.fx_graph)
        self.root = nn.Module()
        self.roles = parameter_roles(graph)
        self.constants: dict[ir.Value, np.ndarray] = {
            v: v.const_value.numpy() for v in graph.initializers.values()}
        self.proxies: dict[ir.Value, fx.Proxy] = {}
        self.parameter_paths: dict[str, str] = {}  # ONNX name -> attribute of root
        self.buffer_paths: dict[str, str] = {}
        self.constant_buffers: list[str] = []  # attributes of constants that are neither parameters nor state
        self.initial_state: dict[str, np.ndarray] = {}  # values for the modules' parameters/buffers
        self.attributes = 0  # attributes made so far: conv2d_0, batchnorm2d_1, param_2...

    # ---- the graph

    def build(self, output_names: list[str]) -> None:
        values = {v.name: v for v in self._all_values()}
        missing = [name for name in output_names if name not in values]
        if missing:
            raise LLCompileError(f"graph {printable(self.graph.name)!r} has no tensor named "
                                 f"{', '.join(printable(name) for name in missing)}")
        outputs = [values[name] for name in output_names]
        inputs = [v for v in self.graph.inputs if v.const_value is None]
        for i, value in enumerate(inputs):
            self.proxies[value] = fx.Proxy(self.fx_graph.placeholder(f"input_{i}", type_expr=Tensor), self.tracer)
        for node in _needed_nodes(self.graph, outputs):
            self._emit(node)
        self.fx_graph.output(tuple(self.tensor(v).node for v in outputs))

    def _emit(self, node: ir.Node) -> None:
        facts = op_facts(node.op_type, node.domain)
        if facts is None:
            raise LLCompileError(f"the torch backend cannot run op {node.op_type!r} (node {node.name!r})")
        before = len(self.fx_graph.nodes)
        first_output = facts.torch_emitter(self, node)
        if first_output is None:  # folded into its consumers
            return
        self.proxies[node.outputs[0]] = first_output
        added = itertools.islice(reversed(self.fx_graph.nodes), len(self.fx_graph.nodes) - before)
        for fx_node in added:
            fx_node.meta[ONNX_NODE] = f"{node.op_type} {node.name}"

    def _all_values(self):
        yield from self.graph.inputs
        yield from self.graph.initializers.values()
        for node in self.graph:
            yield from node.outputs

    def call(self, function: Callable, *args: Any) -> fx.Proxy:
        """``function(*args)`` as one node (a run-time helper, or a torch op not to be traced into)."""
        return self.tracer.create_proxy("call_function", function, args, {})

    def bind(self, value: ir.Value, proxy: fx.Proxy) -> None:
        """Make ``proxy`` the tensor of ``value`` (a node's outputs after its first)."""
        self.proxies[value] = proxy

    def fold(self, value: ir.Value, array: np.ndarray) -> None:
        """Make ``value`` a constant: consumers read it like an initializer."""
        self.constants[value] = array

    # ---- operands

    def input(self, node: ir.Node, index: int) -> ir.Value | None:
        """Input ``index`` of ``node``, or None when absent (optional inputs may be empty)."""
        return node.inputs[index] if index < len(node.inputs) else None

    def array(self, value: ir.Value | None) -> np.ndarray | None:
        """The value of a constant operand, None for a computed one."""
        return self.constants.get(value) if value is not None else None

    def x(self, node: ir.Node, index: int = 0) -> fx.Proxy:
        """The tensor of input ``index``."""
        return self.tensor(self.input(node, index))

    def tensor(self, value: ir.Value) -> fx.Proxy:
        """A computed value's proxy; a constant's parameter or buffer, registered on first use."""
        if value not in self.proxies:
            self.proxies[value] = self.tracer.create_proxy("get_attr", self._register_constant(value), (), {})
        return self.proxies[value]

    def operand(self, node: ir.Node, index: int) -> fx.Proxy | float | int | bool:
        """Like ``x``, but a non-learnable scalar constant becomes a Python number."""
        value = self.input(node, index)
        array = self.array(value)
        if array is not None and array.ndim == 0 and value.name not in self.roles:
            return number(array.item())
        return self.x(node, index)

    def constant_input(self, node: ir.Node, index: int, what: str) -> np.ndarray | None:
        """A constant input as an array; None when the input is absent; an error when not constant."""
        value = self.input(node, index)
        if value is None:
            return None
        array = self.array(value)
        if array is None:
            raise LLCompileError(f"{node.op_type} {node.name!r}: {what} must be a constant")
        return array.reshape(-1)

    def ints(self, node: ir.Node, index: int, what: str) -> list[int] | None:
        """A constant int-vector input (axes, pads, shapes) as a list; None when the input is absent."""
        array = self.constant_input(node, index, what)
        return None if array is None else [int(v) for v in array]

    def scalar(self, node: ir.Node, index: int, what: str) -> float | None:
        """A constant scalar input as a float; None when absent."""
        array = self.constant_input(node, index, what)
        return None if array is None else number(float(array[0]))

    def rank(self, value: ir.Value) -> int:
        if value.shape is None:
            raise LLCompileError(f"the rank of {value.name!r} is unknown (shape inference found none)")
        return value.shape.rank()

    def exclusive(self, node: ir.Node) -> bool:
        """Whether every constant input of ``node`` is used by it alone, so a module may own it."""
        constants = [v for v in node.inputs if self.array(v) is not None]
        return all(len(v.uses()) == 1 and not v.is_graph_output() for v in constants)

    # ---- registration

    def _attribute(self, kind: str) -> str:
        """A fresh attribute name: ``kind`` (a word of this module's, never the model's) and a number."""
        self.attributes += 1
        return f"{kind}_{self.attributes - 1}"

    def own(self, module: nn.Module, **onnx_values: ir.Value | None) -> Callable[..., fx.Proxy]:
        """Add ``module``; its fields (``weight=``, ``running_mean=``...) hold the given
        initializers. Returns the function that records a call of it."""
        attr = self._attribute(type(module).__name__.lower())
        self.root.add_module(attr, module)
        parameters = dict(module.named_parameters())
        for field, value in onnx_values.items():
            if value is None:
                continue
            paths = self.parameter_paths if field in parameters else self.buffer_paths
            paths[value.name] = f"{attr}.{field}"
            self.initial_state[value.name] = self.constants[value]
        return lambda *args: self.tracer.create_proxy("call_module", attr, args, {})

    def _register_constant(self, value: ir.Value) -> str:
        array = self.constants.get(value)
        if array is None:
            raise LLCompileError(f"internal error: {value.name!r} is used before it is computed")
        role = self.roles.get(value.name)
        attr = self._attribute(role or "const")
        tensor = torch.from_numpy(np.array(array))
        if role == "param":
            self.root.register_parameter(attr, nn.Parameter(tensor))
            self.parameter_paths[value.name] = attr
        else:  # BN statistics are state; other constants only need to follow .to(device)
            self.root.register_buffer(attr, tensor)
            if role == "buffer":
                self.buffer_paths[value.name] = attr
            else:
                self.constant_buffers.append(attr)
        return attr


def _needed_nodes(graph: ir.Graph, outputs: list[ir.Value]) -> list[ir.Node]:
    """The nodes ``outputs`` depend on, in graph order; refuses a needed secondary output (BN's
    running statistics, Dropout's mask, MaxPool's indices, the loss's log-probabilities)."""
    needed_values = set(outputs)
    needed = []
    for node in reversed(list(graph)):
        if not any(v in needed_values for v in node.outputs):
            continue
        extra = [v.name for v in node.outputs[1:] if v in needed_values]
        facts = op_facts(node.op_type, node.domain)
        if extra and not (facts is not None and facts.torch_all_outputs):
            raise LLCompileError(f"{node.op_type} {node.name!r}: output {', '.join(map(repr, extra))} "
                                 "is not supported")
        needed.append(node)
        needed_values.update(v for v in node.inputs if v is not None)
    return needed[::-1]
