"""ONNX stage graph -> ``torch.fx.GraphModule`` (``StageModule``) that trains like a hand-written module.

``build_module(model, outputs)`` walks the graph once, in order, and records one or a few torch
calls per ONNX node into a ``torch.fx.Graph`` (Constant nodes are folded into their consumers);
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

State is exchanged by ONNX initializer name and in ONNX layout (``onnx_parameters``,
``onnx_buffers``, ``onnx_state``, ``load_onnx_state``); module attribute names are generated
and are not part of the contract.
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Callable
from decimal import Decimal
from typing import Any, List

import numpy as np
import onnx
import onnx_ir as ir
import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from llcompile.analysis.structure import parameter_roles
from llcompile.backends.torch.hebbian import hebbian_update
from llcompile.errors import LLCompileError
from llcompile.passes import hebbian_function
from llcompile.util.terminal import printable

# --------------------------------------------------------------------------------------------
# Run-time helpers the graph calls as single nodes (TorchScript compiles them with the forward).


def onnx_gather(data: Tensor, indices: Tensor, axis: int) -> Tensor:
    """ONNX Gather: negative indices count from the end; the result has shape
    ``data.shape[:axis] + indices.shape + data.shape[axis + 1:]``."""
    axis = axis % data.dim()
    indices = torch.where(indices < 0, indices + data.shape[axis], indices)
    picked = torch.index_select(data, axis, indices.reshape(-1))
    return picked.reshape(data.shape[:axis] + indices.shape + data.shape[axis + 1:])


def onnx_lrn(x: Tensor, size: int, alpha: float, beta: float, bias: float) -> Tensor:
    """ONNX LRN: ``x / (bias + alpha / size * sum_sq) ** beta``, ``sum_sq`` over the channels
    ``[c - (size - 1) // 2, c + size // 2]``.

    ``F.local_response_norm`` computes the same for odd sizes, but centres an even-sized window
    one channel lower (``[c - size // 2, c + (size - 1) // 2]``), so the window is built here.
    """
    squares = (x * x).reshape(x.shape[0], 1, x.shape[1], -1)  # channels become a pooling axis
    squares = F.pad(squares, [0, 0, (size - 1) // 2, size // 2])
    mean_square = F.avg_pool2d(squares, [size, 1], stride=1).reshape(x.shape)
    return x / (bias + alpha * mean_square) ** beta


def pad_same(x: Tensor, kernel: List[int], strides: List[int], dilations: List[int], upper: bool,
             value: float) -> Tensor:
    """ONNX ``auto_pad=SAME_UPPER|SAME_LOWER``: pad the spatial dims so the output size is
    ``ceil(size / stride)``; an odd total puts the extra pixel at the end (upper) or the start."""
    pads: List[int] = []
    for i in range(len(kernel)):
        size = x.shape[2 + i]
        out = (size + strides[i] - 1) // strides[i]
        total = max((out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - size, 0)
        small = total // 2
        pair = [small, total - small] if upper else [total - small, small]
        pads = pair + pads  # F.pad lists the last dim first
    return F.pad(x, pads, value=value)


def onnx_reshape(x: Tensor, shape: Tensor, allowzero: bool) -> Tensor:
    """ONNX Reshape to a shape computed at run time (0 copies the input's dim unless allowzero)."""
    dims: List[int] = shape.tolist()
    if not allowzero:
        for i in range(len(dims)):
            if dims[i] == 0:
                dims[i] = x.shape[i]
    return x.reshape(dims)


def onnx_expand(x: Tensor, shape: Tensor) -> Tensor:
    """ONNX Expand: ``x`` and ``shape`` broadcast against each other (a 1 in ``shape`` keeps ``x``'s dim,
    unlike torch's ``expand``, where -1 does)."""
    dims: List[int] = shape.tolist()
    rank = max(x.dim(), len(dims))
    dims = [1] * (rank - len(dims)) + dims
    x = x.reshape([1] * (rank - x.dim()) + list(x.shape))
    return x.expand([max(d, s) for d, s in zip(dims, list(x.shape))])


def onnx_constant_of_shape(shape: Tensor, value: float, dtype: torch.dtype) -> Tensor:
    """ONNX ConstantOfShape for a shape computed at run time."""
    return torch.full(shape.tolist(), value, dtype=dtype, device=shape.device)


def onnx_shape(x: Tensor, start: int, end: int) -> Tensor:
    """ONNX Shape: dims ``start:end`` of ``x`` as an int64 tensor on ``x``'s device."""
    return torch.tensor(x.shape[start:end], dtype=torch.int64, device=x.device)


class SharedBatchNorm(nn.Module):
    """BatchNormalization over statistics and affine tensors that other nodes use too (the
    module passes them in): batch statistics in ``train()``, running statistics in ``eval()``."""

    def __init__(self, momentum: float, eps: float):
        super().__init__()
        self.momentum = momentum
        self.eps = eps

    def forward(self, x: Tensor, running_mean: Tensor, running_var: Tensor, weight: Tensor,
                bias: Tensor) -> Tensor:
        return F.batch_norm(x, running_mean, running_var, weight, bias, self.training, self.momentum, self.eps)


# --------------------------------------------------------------------------------------------


ONNX_NODE = "llcompile_onnx_node"  # fx node meta key: "OpType name" of the ONNX node it comes from


class StageModule(fx.GraphModule):
    """A stage graph as a torch module (see ``build_module``); state is exchanged by ONNX name."""

    # Python-side bookkeeping, not part of what TorchScript compiles
    __jit_ignored_attributes__ = ["_parameter_paths", "_buffer_paths"]

    def __init__(self, root: nn.Module, graph: fx.Graph, parameter_paths: dict[str, str],
                 buffer_paths: dict[str, str], constants: list[str]):
        super().__init__(root, graph, class_name="StageModule")
        # ONNX initializer name -> attribute path (resolved on use: .to() replaces buffers)
        self._parameter_paths = parameter_paths
        self._buffer_paths = buffer_paths
        self._keep_out_of_state(constants)

    def _keep_out_of_state(self, constants) -> None:
        """GraphModule copies every tensor attribute as a persistent buffer; constant buffers only
        need to follow ``.to()``, they are not state."""
        for name in constants:
            self.register_buffer(name, self.get_buffer(name), persistent=False)

    def __deepcopy__(self, memo: dict) -> StageModule:
        # GraphModule's copy rebuilds the module from its graph alone: bring the bookkeeping along
        copied = super().__deepcopy__(memo)
        copied._parameter_paths = dict(self._parameter_paths)
        copied._buffer_paths = dict(self._buffer_paths)
        copied._keep_out_of_state(self._non_persistent_buffers_set)
        return copied

    def onnx_parameters(self) -> dict[str, nn.Parameter]:
        return {name: self.get_parameter(path) for name, path in self._parameter_paths.items()}

    def onnx_buffers(self) -> dict[str, Tensor]:
        """BatchNormalization running statistics."""
        return {name: self.get_buffer(path) for name, path in self._buffer_paths.items()}

    def onnx_state(self) -> dict[str, np.ndarray]:
        tensors = {**self.onnx_parameters(), **self.onnx_buffers()}
        return {name: tensor.detach().cpu().numpy().copy() for name, tensor in tensors.items()}

    def load_onnx_state(self, state: dict[str, np.ndarray]) -> None:
        """Copy in every entry of ``state`` this module has (ONNX layout); ignore the others."""
        tensors = {**self.onnx_parameters(), **self.onnx_buffers()}
        with torch.no_grad():
            for name, array in state.items():
                target = tensors.get(name)
                if target is None:
                    continue
                if tuple(array.shape) != tuple(target.shape):
                    raise LLCompileError(
                        f"{name}: shape {list(array.shape)} does not match the graph's {list(target.shape)}")
                target.copy_(torch.from_numpy(np.array(array)))

    def annotated_code(self) -> str:
        """``code`` with the ONNX node (op type and name, control characters escaped) after each line
        that computes one: for reading only, never run."""
        origins = {node.name: node.meta[ONNX_NODE] for node in self.graph.nodes if ONNX_NODE in node.meta}
        lines = []
        for line in self.code.splitlines():
            assigned = line.strip().split(" ", 1)[0]
            origin = origins.get(assigned)
            lines.append(f"{line}  # {printable(origin)}" if origin else line)
        return "\n".join(lines)


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
    made here) and records each node's torch calls into ``fx_graph``. Op emitters (``_EMITTERS``)
    return the ``fx.Proxy`` of a node's first output; proxies record what is done with them, so an
    emitter reads like the torch code it stands for."""

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
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            # folded: consumers read its value like an initializer's
            self.constants[node.outputs[0]] = _constant_value(node)
            return
        if (node.domain, node.op_type) == (hebbian_function.DOMAIN, hebbian_function.OP_TYPE):
            emitter = _hebbian_update
        elif node.domain not in ("", "ai.onnx") or node.op_type not in _EMITTERS:
            raise LLCompileError(f"the torch backend cannot run op {node.op_type!r} (node {node.name!r})")
        else:
            emitter = _EMITTERS[node.op_type]
        before = len(self.fx_graph.nodes)
        self.proxies[node.outputs[0]] = emitter(self, node)
        added = itertools.islice(reversed(self.fx_graph.nodes), len(self.fx_graph.nodes) - before)
        for fx_node in added:
            fx_node.meta[ONNX_NODE] = f"{node.op_type} {node.name}"

    def _all_values(self):
        yield from self.graph.inputs
        yield from self.graph.initializers.values()
        for node in self.graph:
            yield from node.outputs

    def call(self, function: Callable, *args: Any) -> fx.Proxy:
        """``function(*args)`` as one node (a helper above, or a torch op not to be traced into)."""
        return self.tracer.create_proxy("call_function", function, args, {})

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
            return _number(array.item())
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
        return None if array is None else _number(float(array[0]))

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


# ops whose every output the torch backend computes (others: the first only)
_MULTI_OUTPUT_OPS = frozenset({"Split"})


def _needed_nodes(graph: ir.Graph, outputs: list[ir.Value]) -> list[ir.Node]:
    """The nodes ``outputs`` depend on, in graph order; refuses a needed secondary output (BN's
    running statistics, Dropout's mask, MaxPool's indices, the loss's log-probabilities)."""
    needed_values = set(outputs)
    needed = []
    for node in reversed(list(graph)):
        if not any(v in needed_values for v in node.outputs):
            continue
        extra = [v.name for v in node.outputs[1:] if v in needed_values]
        if extra and node.op_type not in _MULTI_OUTPUT_OPS:
            raise LLCompileError(f"{node.op_type} {node.name!r}: output {', '.join(map(repr, extra))} "
                                 "is not supported")
        needed.append(node)
        needed_values.update(v for v in node.inputs if v is not None)
    return needed[::-1]


def _constant_value(node: ir.Node) -> np.ndarray:
    attr = next(iter(node.attributes.values()))
    if attr.name == "value":
        return attr.as_tensor().numpy()
    dtypes = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64, "value_ints": np.int64}
    if attr.name not in dtypes:
        raise LLCompileError(f"Constant {node.name!r}: a {attr.name!r} constant is not supported")
    return np.array(attr.value, dtype=dtypes[attr.name])


def _number(value: float | int | bool) -> float | int | bool:
    """A Python number for a numpy scalar; a float32 value as its shortest decimal."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    return _decimal_float(value)


def _decimal_float(value: float) -> float:
    """A float32 value as the shortest decimal that rounds to it (0.9, not 0.8999999762)."""
    return float(str(np.float32(value)))


def _torch_dtype(array: np.ndarray) -> torch.dtype:
    return torch.from_numpy(np.empty(0, array.dtype)).dtype


def _ints_attr(node: ir.Node, name: str, default: list[int]) -> list[int]:
    return [int(v) for v in node.attributes.get_ints(name, default)]


def _float_attr(node: ir.Node, name: str, default: float) -> float:
    return _number(node.attributes.get_float(name, default))


def _choice(node: ir.Node, name: str, default: str, choices: dict[str, Any]) -> Any:
    """What string attribute ``name`` selects in ``choices``; the model's string itself goes no further."""
    value = node.attributes.get_string(name, default)
    if value not in choices:
        raise LLCompileError(f"{node.op_type} {node.name!r}: {name}={value!r} is not supported "
                             f"(expected one of: {', '.join(choices)})")
    return choices[value]


# --------------------------------------------------------------------------------------------
# Element-wise ops


def _unary(function: Callable) -> Callable[[_Builder, ir.Node], fx.Proxy]:
    return lambda g, node: function(g.x(node))


def _binary(op: Callable) -> Callable[[_Builder, ir.Node], fx.Proxy]:
    return lambda g, node: op(g.x(node, 0), g.operand(node, 1))


def _identity(g: _Builder, node: ir.Node) -> fx.Proxy:
    return g.x(node)


def _div(g: _Builder, node: ir.Node) -> fx.Proxy:
    if node.outputs[0].dtype in _INTEGER_TYPES:  # ONNX truncates; torch's / would give floats
        return torch.div(g.x(node, 0), g.operand(node, 1), rounding_mode="trunc")
    return g.x(node, 0) / g.operand(node, 1)


def _sum(g: _Builder, node: ir.Node) -> fx.Proxy:
    return functools.reduce(operator.add, (g.x(node, i) for i in range(len(node.inputs))))


def _leaky_relu(g: _Builder, node: ir.Node) -> fx.Proxy:
    return F.leaky_relu(g.x(node), _float_attr(node, "alpha", 0.01))


def _prelu(g: _Builder, node: ir.Node) -> fx.Proxy:
    # The slope broadcasts like ONNX's ([C, 1, 1], [1], ...); F.prelu wants it 1-D along dim 1.
    x = g.x(node)
    return torch.where(x < 0, x * g.x(node, 1), x)


def _elu(g: _Builder, node: ir.Node) -> fx.Proxy:
    return F.elu(g.x(node), _float_attr(node, "alpha", 1.0))


def _hard_sigmoid(g: _Builder, node: ir.Node) -> fx.Proxy:
    # ONNX's default alpha is 0.2, torch's hardsigmoid fixes 1/6: write the formula.
    alpha, beta = _float_attr(node, "alpha", 0.2), _float_attr(node, "beta", 0.5)
    return torch.clamp(g.x(node) * alpha + beta, 0.0, 1.0)


def _clip(g: _Builder, node: ir.Node) -> fx.Proxy:
    if "min" in node.attributes or "max" in node.attributes:  # opset < 11
        low, high = (_number(node.attributes.get_float(name)) if name in node.attributes else None
                     for name in ("min", "max"))
    elif any(g.input(node, i) is not None and g.array(g.input(node, i)) is None for i in (1, 2)):
        # computed bounds: torch.clamp takes tensors only for both at once
        low, high = (g.x(node, i) if g.input(node, i) is not None else None for i in (1, 2))
    else:
        low, high = (g.scalar(node, i, "min/max") for i in (1, 2))
    return torch.clamp(g.x(node), low, high)


def _dropout(g: _Builder, node: ir.Node) -> fx.Proxy:
    # Active in train() only, like torch; a training_mode input does not override the module's mode.
    ratio = g.scalar(node, 1, "ratio")
    ratio = _float_attr(node, "ratio", 0.5) if ratio is None else ratio
    return g.own(nn.Dropout(float(ratio)))(g.x(node))


def _lrn(g: _Builder, node: ir.Node) -> fx.Proxy:
    size = node.attributes.get_int("size")
    alpha, beta, bias = (_float_attr(node, name, default) for name, default in
                         (("alpha", 1e-4), ("beta", 0.75), ("bias", 1.0)))
    return g.call(onnx_lrn, g.x(node), int(size), alpha, beta, bias)


def _softmax(function: Callable) -> Callable[[_Builder, ir.Node], fx.Proxy]:
    return lambda g, node: function(g.x(node), int(node.attributes.get_int("axis", -1)))


_GELU_APPROXIMATIONS = {"none": "none", "tanh": "tanh"}


def _gelu(g: _Builder, node: ir.Node) -> fx.Proxy:
    return F.gelu(g.x(node), approximate=_choice(node, "approximate", "none", _GELU_APPROXIMATIONS))


def _pow(g: _Builder, node: ir.Node) -> fx.Proxy:
    return torch.pow(g.x(node), g.operand(node, 1))


def _where(g: _Builder, node: ir.Node) -> fx.Proxy:
    return torch.where(g.x(node, 0), g.x(node, 1), g.x(node, 2))


def _equal(g: _Builder, node: ir.Node) -> fx.Proxy:
    return torch.eq(g.x(node, 0), g.operand(node, 1))


def _layer_norm(g: _Builder, node: ir.Node) -> fx.Proxy:
    x_value, scale, bias = node.inputs[0], g.input(node, 1), g.input(node, 2)
    rank = g.rank(x_value)
    axis = int(node.attributes.get_int("axis", -1)) % rank
    normalized = list(x_value.shape)[axis:]
    if not all(isinstance(d, int) for d in normalized):
        raise LLCompileError(f"LayerNormalization {node.name!r}: the normalized dims {normalized} must be static")
    eps = _decimal_float(node.attributes.get_float("epsilon", 1e-5))
    w, b = g.array(scale), g.array(bias)
    fits_module = w is not None and list(w.shape) == normalized and (
        bias is None or (b is not None and list(b.shape) == normalized))
    if fits_module and g.exclusive(node):
        layer_norm = nn.LayerNorm(normalized, eps=eps, bias=bias is not None, dtype=_torch_dtype(w))
        return g.own(layer_norm, weight=scale, bias=bias)(g.x(node))
    # a scale or bias shared with other nodes, or computed
    return F.layer_norm(g.x(node), normalized, g.x(node, 1), g.x(node, 2) if bias is not None else None, eps)


def _cast(g: _Builder, node: ir.Node) -> fx.Proxy:
    to = ir.DataType(node.attributes.get_int("to"))
    if to not in _TORCH_DTYPES:
        raise LLCompileError(f"Cast {node.name!r}: no torch dtype for {to.name}")
    return g.x(node).to(_TORCH_DTYPES[to])


_INTEGER_TYPES = frozenset({ir.DataType.INT8, ir.DataType.INT16, ir.DataType.INT32, ir.DataType.INT64,
                            ir.DataType.UINT8})
_TORCH_DTYPES = {
    ir.DataType.FLOAT: torch.float32, ir.DataType.DOUBLE: torch.float64, ir.DataType.FLOAT16: torch.float16,
    ir.DataType.BFLOAT16: torch.bfloat16, ir.DataType.INT8: torch.int8, ir.DataType.INT16: torch.int16,
    ir.DataType.INT32: torch.int32, ir.DataType.INT64: torch.int64, ir.DataType.UINT8: torch.uint8,
    ir.DataType.BOOL: torch.bool,
}

# --------------------------------------------------------------------------------------------
# Layers


def _torch_pads(begin: list[int], end: list[int]) -> list[int]:
    """ONNX [x1_begin, x2_begin.., x1_end, x2_end..] halves -> F.pad's [xn_begin, xn_end, ...]."""
    return [p for b, e in zip(reversed(begin), reversed(end)) for p in (b, e)]


_AUTO_PADS = {"NOTSET": "NOTSET", "VALID": "VALID", "SAME_UPPER": "SAME_UPPER", "SAME_LOWER": "SAME_LOWER"}


def _spatial_padding(g: _Builder, node: ir.Node, x: fx.Proxy, kernel: list[int], fill: float,
                     fits: Callable[[list[int]], bool]) -> tuple[fx.Proxy, list[int], bool]:
    """(padded input, torch ``padding``, whether padding was made explicit) for a Conv/pool reading ``x``.

    Symmetric ONNX pads that ``fits`` accepts become torch's ``padding``; asymmetric ones and
    ``auto_pad=SAME_*`` become an explicit pad with ``fill`` before the op.
    """
    dims = len(kernel)
    auto_pad = _choice(node, "auto_pad", "NOTSET", _AUTO_PADS)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        strides, dilations = _ints_attr(node, "strides", [1] * dims), _ints_attr(node, "dilations", [1] * dims)
        return g.call(pad_same, x, kernel, strides, dilations, auto_pad == "SAME_UPPER", fill), [0] * dims, True
    if auto_pad == "VALID":
        return x, [0] * dims, False
    pads = _ints_attr(node, "pads", [0] * 2 * dims)
    begin, end = pads[:dims], pads[dims:]
    if begin == end and fits(begin):
        return x, begin, False
    return F.pad(x, _torch_pads(begin, end), value=fill), [0] * dims, True


def _conv(g: _Builder, node: ir.Node) -> fx.Proxy:
    weight, bias = g.input(node, 1), g.input(node, 2)
    dims = g.rank(weight) - 2
    if dims not in (1, 2, 3):
        raise LLCompileError(f"Conv {node.name!r}: {dims}-d convolution is not supported")
    kernel = [int(k) for k in weight.shape[2:]]
    strides, dilations = _ints_attr(node, "strides", [1] * dims), _ints_attr(node, "dilations", [1] * dims)
    groups = int(node.attributes.get_int("group", 1))
    x, padding, _ = _spatial_padding(g, node, g.x(node), kernel, 0.0, fits=lambda pads: True)
    w = g.array(weight)
    if w is None or not g.exclusive(node):
        b = g.x(node, 2) if bias is not None else None
        conv = (F.conv1d, F.conv2d, F.conv3d)[dims - 1]
        return conv(x, g.x(node, 1), b, strides, padding, dilations, groups)
    conv_class = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1]
    conv = conv_class(w.shape[1] * groups, w.shape[0], kernel, strides, padding, dilations, groups,
                      bias=bias is not None, dtype=_torch_dtype(w))
    return g.own(conv, weight=weight, bias=bias)(x)


def _gemm(g: _Builder, node: ir.Node) -> fx.Proxy:
    a = node.attributes
    alpha, beta = _number(a.get_float("alpha", 1.0)), _number(a.get_float("beta", 1.0))
    trans_a, trans_b = a.get_int("transA", 0), a.get_int("transB", 0)
    weight, bias = g.input(node, 1), g.input(node, 2)
    w, b = g.array(weight), g.array(bias)
    is_linear = (w is not None and trans_b == 1 and trans_a == 0 and alpha == beta == 1.0
                 and (bias is None or (b is not None and b.shape == (w.shape[0],))) and g.exclusive(node))
    if is_linear:
        linear = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None, dtype=_torch_dtype(w))
        return g.own(linear, weight=weight, bias=bias)(g.x(node))
    lhs = g.x(node, 0).t() if trans_a else g.x(node, 0)
    rhs = g.x(node, 1).t() if trans_b else g.x(node, 1)
    if bias is None:
        product = torch.mm(lhs, rhs)
        return product if alpha == 1.0 else product * alpha
    return torch.addmm(g.x(node, 2), lhs, rhs, beta=beta, alpha=alpha)


def _matmul(g: _Builder, node: ir.Node) -> fx.Proxy:
    # A constant weight stays a [K, N] parameter in ONNX layout: state is exchanged in it.
    return torch.matmul(g.x(node, 0), g.x(node, 1))


def _hebbian_update(g: _Builder, node: ir.Node) -> fx.Proxy:
    a = node.attributes
    return g.call(hebbian_update, *(g.x(node, i) for i in range(4)),
                  *(_ints_attr(node, name, []) for name in ("strides", "pads", "dilations")),
                  int(a.get_int("group")), _number(a.get_float("decay")), bool(a.get_int("renormalize")),
                  bool(a.get_int("triangular")), _number(a.get_float("temperature")))


def _batch_norm(g: _Builder, node: ir.Node) -> fx.Proxy:
    scale, bias, mean, var = node.inputs[1:5]
    if any(g.array(v) is None for v in (scale, bias, mean, var)):
        raise LLCompileError(
            f"BatchNormalization {node.name!r}: scale, bias, mean and variance must be initializers")
    eps = _decimal_float(node.attributes.get_float("epsilon", 1e-5))
    # ONNX keeps `momentum` of the running value, torch mixes in `momentum` of the batch's:
    # 0.9 there is 0.1 here, subtracted in decimal so that it is exactly torch's 0.1.
    onnx_momentum = Decimal(str(np.float32(node.attributes.get_float("momentum", 0.9))))
    momentum = float(Decimal(1) - onnx_momentum)
    x = g.x(node)
    if not g.exclusive(node):  # shared statistics: the functional form updates them in place
        return g.own(SharedBatchNorm(momentum, eps))(x, *(g.tensor(v) for v in (mean, var, scale, bias)))
    rank = g.rank(node.inputs[0])
    if rank not in (2, 3, 4, 5):
        raise LLCompileError(f"BatchNormalization {node.name!r}: rank-{rank} input is not supported")
    bn_class = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}[rank]
    channels = g.array(scale).shape[0]
    bn = bn_class(channels, eps=eps, momentum=momentum, dtype=_torch_dtype(g.array(scale)))
    return g.own(bn, weight=scale, bias=bias, running_mean=mean, running_var=var)(x)


# --------------------------------------------------------------------------------------------
# Pooling and reductions


def _max_pool(g: _Builder, node: ir.Node) -> fx.Proxy:
    kernel = _ints_attr(node, "kernel_shape", [])
    dims = len(kernel)
    strides, dilations = _ints_attr(node, "strides", [1] * dims), _ints_attr(node, "dilations", [1] * dims)
    ceil_mode = bool(node.attributes.get_int("ceil_mode", 0))
    fits = functools.partial(_fits_torch_pool, kernel=kernel, dilations=dilations)
    x, padding, _ = _spatial_padding(g, node, g.x(node), kernel, float("-inf"), fits)
    pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[dims - 1]
    return pool(x, kernel, strides, padding, dilations, ceil_mode)


def _average_pool(g: _Builder, node: ir.Node) -> fx.Proxy:
    kernel = _ints_attr(node, "kernel_shape", [])
    dims = len(kernel)
    strides = _ints_attr(node, "strides", [1] * dims)
    if any(d != 1 for d in _ints_attr(node, "dilations", [1] * dims)):  # opset 19; torch has none
        raise LLCompileError(f"AveragePool {node.name!r}: dilations are not supported")
    ceil_mode = bool(node.attributes.get_int("ceil_mode", 0))
    count_include_pad = bool(node.attributes.get_int("count_include_pad", 0))
    fits = functools.partial(_fits_torch_pool, kernel=kernel, dilations=[1] * dims)
    x, padding, explicit = _spatial_padding(g, node, g.x(node), kernel, 0.0, fits)
    pool = functools.partial((F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[dims - 1], kernel_size=kernel,
                             stride=strides, padding=padding, ceil_mode=ceil_mode,
                             count_include_pad=count_include_pad)
    if not explicit or count_include_pad:
        return pool(x)
    # Explicit zero padding would count in torch's mean: divide by the mean of a padded ones-mask.
    ones = torch.ones_like(g.x(node).narrow(0, 0, 1).narrow(1, 0, 1))
    padded_ones, _, _ = _spatial_padding(g, node, ones, kernel, 0.0, fits)
    return pool(x) / pool(padded_ones)


def _fits_torch_pool(pads: list[int], kernel: list[int], dilations: list[int]) -> bool:
    """torch's pools take at most half the (dilated) kernel as implicit padding."""
    return all(2 * p <= (k - 1) * d + 1 for p, k, d in zip(pads, kernel, dilations))


def _global_pool(function: Callable) -> Callable[[_Builder, ir.Node], fx.Proxy]:
    def emit(g: _Builder, node: ir.Node) -> fx.Proxy:
        spatial = list(range(2, g.rank(node.inputs[0])))
        return function(g.x(node), spatial, keepdim=True)
    return emit


def _reduce(function: Callable) -> Callable[[_Builder, ir.Node], fx.Proxy]:
    def emit(g: _Builder, node: ir.Node) -> fx.Proxy:
        axes = g.ints(node, 1, "axes")  # opset >= 18
        if axes is None:
            axes = _ints_attr(node, "axes", [])
        keepdims = bool(node.attributes.get_int("keepdims", 1))
        if not axes:
            if node.attributes.get_int("noop_with_empty_axes", 0):
                return g.x(node)
            axes = list(range(g.rank(node.inputs[0])))
        return function(g.x(node), axes, keepdim=keepdims)
    return emit


# --------------------------------------------------------------------------------------------
# Shapes


def _flatten(g: _Builder, node: ir.Node) -> fx.Proxy:
    axis = int(node.attributes.get_int("axis", 1))
    if axis < 0:
        axis += g.rank(node.inputs[0])
    x = g.x(node)
    if axis == 0:
        return x.reshape(1, -1)
    if axis == 1:
        return torch.flatten(x, 1)
    return torch.flatten(torch.flatten(x, axis), 0, axis - 1)


def _reshape(g: _Builder, node: ir.Node) -> fx.Proxy:
    x = g.x(node)
    allowzero = bool(node.attributes.get_int("allowzero", 0))
    shape = g.array(node.inputs[1])
    if shape is None:
        return g.call(onnx_reshape, x, g.x(node, 1), allowzero)
    return x.reshape([x.size(i) if d == 0 and not allowzero else int(d) for i, d in enumerate(shape)])


def _squeeze(g: _Builder, node: ir.Node) -> fx.Proxy:
    axes = g.ints(node, 1, "axes")
    if axes is None:
        axes = _ints_attr(node, "axes", [])
    return torch.squeeze(g.x(node), axes) if axes else torch.squeeze(g.x(node))


def _unsqueeze(g: _Builder, node: ir.Node) -> fx.Proxy:
    axes = g.ints(node, 1, "axes")
    if axes is None:
        axes = _ints_attr(node, "axes", [])
    out_rank = g.rank(node.inputs[0]) + len(axes)
    # ONNX axes index the output; inserting them in increasing order makes each one land there.
    x = g.x(node)
    for axis in sorted(a % out_rank for a in axes):
        x = x.unsqueeze(axis)
    return x


def _transpose(g: _Builder, node: ir.Node) -> fx.Proxy:
    perm = _ints_attr(node, "perm", list(reversed(range(g.rank(node.inputs[0])))))
    return g.x(node).permute(perm)


def _concat(g: _Builder, node: ir.Node) -> fx.Proxy:
    return torch.cat([g.x(node, i) for i in range(len(node.inputs))], int(node.attributes.get_int("axis")))


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


def _pad(g: _Builder, node: ir.Node) -> fx.Proxy:
    rank = g.rank(node.inputs[0])
    pads = g.ints(node, 1, "pads")
    if pads is None:  # opset < 11
        pads = _ints_attr(node, "pads", [0] * 2 * rank)
    axes = g.ints(node, 3, "axes") or list(range(rank))
    mode = _choice(node, "mode", "constant", _PAD_MODES)
    begin, end = [0] * rank, [0] * rank
    for i, axis in enumerate(axes):
        begin[axis % rank], end[axis % rank] = pads[i], pads[i + len(axes)]
    if mode == "constant":  # F.pad lists the padded dims from the last one back
        first = next((d for d in range(rank) if begin[d] or end[d]), rank)
    else:  # torch pads (N, C, spatial...) tensors in these modes, all spatial dims at once
        first = 2
        if not 3 <= rank <= 5 or any(begin[:2]) or any(end[:2]):
            raise LLCompileError(f"Pad {node.name!r}: torch pads in {mode!r} mode only the spatial dims "
                                 "of a 3-5-d tensor")
    torch_pads = _torch_pads(begin[first:], end[first:])
    if mode != "constant":
        return F.pad(g.x(node), torch_pads, mode=mode)
    value = g.scalar(node, 2, "constant_value")
    return F.pad(g.x(node), torch_pads, value=_float_attr(node, "value", 0.0) if value is None else value)


def _slice(g: _Builder, node: ir.Node) -> fx.Proxy:
    rank = g.rank(node.inputs[0])
    starts, ends = g.ints(node, 1, "starts"), g.ints(node, 2, "ends")
    axes = g.ints(node, 3, "axes") or list(range(len(starts)))
    steps = g.ints(node, 4, "steps") or [1] * len(starts)
    if any(step < 0 for step in steps):
        raise LLCompileError(f"Slice {node.name!r}: negative steps are not supported (torch has none)")
    x = g.x(node)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        # aten's slice clamps the bounds and counts negative ones from the end, as ONNX does
        x = g.call(torch.ops.aten.slice.Tensor, x, axis % rank, start, end, step)
    return x


def _split(g: _Builder, node: ir.Node) -> fx.Proxy:
    x_value = node.inputs[0]
    axis = int(node.attributes.get_int("axis", 0)) % g.rank(x_value)
    sizes = g.ints(node, 1, "split")
    if sizes is None:
        sizes = _ints_attr(node, "split", [])  # opset < 13
    if not sizes:  # equal parts; with num_outputs (opset 18) the last may be smaller, as in torch
        size = x_value.shape[axis]
        if not isinstance(size, int):
            raise LLCompileError(f"Split {node.name!r}: the split dimension must be static")
        sizes = -(-size // len(node.outputs))
    parts = torch.split(g.x(node), sizes, axis)
    for i, value in enumerate(node.outputs[1:], start=1):
        g.proxies[value] = parts[i]
    return parts[0]


def _expand(g: _Builder, node: ir.Node) -> fx.Proxy:
    return g.call(onnx_expand, g.x(node, 0), g.x(node, 1))


def _constant_of_shape(g: _Builder, node: ir.Node) -> fx.Proxy:
    attr = node.attributes.get("value")
    value = attr.as_tensor().numpy().reshape(-1) if attr is not None else np.zeros(1, np.float32)
    dtype = _torch_dtype(value)
    return g.call(onnx_constant_of_shape, g.x(node, 0), _number(value[0].item()), dtype)


def _shape(g: _Builder, node: ir.Node) -> fx.Proxy:
    rank = g.rank(node.inputs[0])
    start, end = node.attributes.get_int("start", 0), node.attributes.get_int("end", rank)
    return g.call(onnx_shape, g.x(node), int(start), int(end))


def _gather(g: _Builder, node: ir.Node) -> fx.Proxy:
    return g.call(onnx_gather, g.x(node, 0), g.x(node, 1), int(node.attributes.get_int("axis", 0)))


# --------------------------------------------------------------------------------------------
# Loss

_REDUCTIONS = {"mean": "mean", "sum": "sum", "none": "none"}


def _softmax_cross_entropy(g: _Builder, node: ir.Node) -> fx.Proxy:
    kwargs: dict[str, Any] = {}
    if g.input(node, 2) is not None:
        kwargs["weight"] = g.x(node, 2)
    if "ignore_index" in node.attributes:
        kwargs["ignore_index"] = int(node.attributes.get_int("ignore_index"))
    kwargs["reduction"] = _choice(node, "reduction", "mean", _REDUCTIONS)
    return F.cross_entropy(g.x(node, 0), g.x(node, 1), **kwargs)


_EMITTERS: dict[str, Callable[[_Builder, ir.Node], fx.Proxy]] = {
    "Relu": _unary(torch.relu),
    "LeakyRelu": _leaky_relu,
    "PRelu": _prelu,
    "Clip": _clip,
    "Sigmoid": _unary(torch.sigmoid),
    "Tanh": _unary(torch.tanh),
    "Elu": _elu,
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": _unary(F.hardswish),
    "Softplus": _unary(F.softplus),
    "Add": _binary(operator.add),
    "Sub": _binary(operator.sub),
    "Mul": _binary(operator.mul),
    "Div": _div,
    "Sum": _sum,
    "Dropout": _dropout,
    "Identity": _identity,
    "LRN": _lrn,
    "Softmax": _softmax(torch.softmax),
    "LogSoftmax": _softmax(torch.log_softmax),
    "Cast": _cast,
    "Gelu": _gelu,
    "Erf": _unary(torch.erf),
    "Sqrt": _unary(torch.sqrt),
    "Pow": _pow,
    "LayerNormalization": _layer_norm,
    "Where": _where,
    "Equal": _equal,
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "BatchNormalization": _batch_norm,
    "MaxPool": _max_pool,
    "AveragePool": _average_pool,
    "GlobalAveragePool": _global_pool(torch.mean),
    "GlobalMaxPool": _global_pool(torch.amax),
    "ReduceMean": _reduce(torch.mean),
    "ReduceMax": _reduce(torch.amax),
    "ReduceMin": _reduce(torch.amin),
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Transpose": _transpose,
    "Concat": _concat,
    "Pad": _pad,
    "Slice": _slice,
    "Split": _split,
    "Expand": _expand,
    "ConstantOfShape": _constant_of_shape,
    "Shape": _shape,
    "Gather": _gather,
    "SoftmaxCrossEntropyLoss": _softmax_cross_entropy,
}
