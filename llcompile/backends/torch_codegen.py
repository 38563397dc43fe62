"""ONNX stage graph -> ``torch.nn.Module`` whose ``forward`` is generated Python source.

``build_module(model, outputs)`` writes ``forward(x, labels)`` as straight-line Python, one
statement per ONNX node in graph order (Constant nodes are folded into their consumers), and
compiles it with ``exec``: eager mode runs at the speed of a hand-written module,
``torch.jit.script`` and ``torch.compile`` accept it, and ``module.code`` shows it.

Layers become real torch modules so that everything trains and updates as in torch: Conv ->
``nn.Conv1d/2d/3d``, Gemm (transB=1, alpha=beta=1) -> ``nn.Linear``, BatchNormalization ->
``nn.BatchNorm1d/2d/3d`` (batch statistics in ``train()``, running statistics in ``eval()``,
whatever the graph's ``training_mode`` says), Dropout -> ``nn.Dropout``. Other learnable
initializers (``llcompile.analysis.parameter_roles``) become ``nn.Parameter``s, other
constants Python literals or non-persistent buffers.

State is exchanged by ONNX initializer name and in ONNX layout (``onnx_parameters``,
``onnx_buffers``, ``onnx_state``, ``load_onnx_state``); module attribute names are sanitised
copies of the ONNX names and are not part of the contract.
"""

from __future__ import annotations

import functools
import hashlib
import keyword
import linecache
import re
from collections.abc import Callable
from decimal import Decimal
from typing import List, Tuple

import numpy as np
import onnx
import onnx_ir as ir
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llcompile.analysis import parameter_roles
from llcompile.backends.torch_hebbian import hebbian_update
from llcompile.errors import LLCompileError
from llcompile.passes import hebbian_function

# --------------------------------------------------------------------------------------------
# Run-time helpers called by generated code (TorchScript compiles them with the forward).


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


# Everything the generated source may refer to besides ``self``.
_GENERATED_GLOBALS = {
    "torch": torch, "F": F, "Tensor": Tensor, "Tuple": Tuple, "List": List,
    "onnx_gather": onnx_gather, "onnx_lrn": onnx_lrn, "pad_same": pad_same, "onnx_reshape": onnx_reshape,
    "hebbian_update": hebbian_update,
}
_RESERVED_NAMES = frozenset(_GENERATED_GLOBALS) | {"self", "float"}

# --------------------------------------------------------------------------------------------


class StageModule(nn.Module):
    """A stage graph as a torch module (see ``build_module``); state is exchanged by ONNX name."""

    code: str = ""  # the generated forward source; each built module's own class sets it
    __jit_ignored_attributes__ = ["_parameter_paths", "_buffer_paths"]  # Python-side bookkeeping

    def __init__(self) -> None:
        super().__init__()
        # ONNX initializer name -> dotted attribute path (resolved on use: .to() replaces buffers)
        self._parameter_paths = {}
        self._buffer_paths = {}

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


def build_module(model: onnx.ModelProto, outputs: list[str]) -> StageModule:
    """A module whose ``forward`` takes the graph's data inputs (in order) and returns the tensors
    named ``outputs`` as a tuple; only the nodes those outputs need are computed."""
    graph = ir.from_proto(onnx.shape_inference.infer_shapes(model)).graph
    module = StageModule()
    codegen = _Codegen(graph, module)
    source = codegen.forward_source(outputs)
    module.__class__ = type("StageModule", (StageModule,), {"forward": _compile_forward(source), "code": source})
    module.load_onnx_state(codegen.initial_state)
    return module


def _compile_forward(source: str) -> Callable:
    # TorchScript reads a method's source through linecache: register it under a name that
    # identifies the source, so identical graphs share one entry.
    filename = f"<llcompile-generated-{hashlib.sha1(source.encode()).hexdigest()[:16]}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
    namespace = dict(_GENERATED_GLOBALS)
    exec(compile(source, filename, "exec"), namespace)
    return namespace["forward"]


class _Names:
    """Unique Python identifiers made from ONNX names."""

    def __init__(self, taken: set[str]):
        self.taken = set(taken)

    def make(self, onnx_name: str, fallback: str) -> str:
        base = re.sub(r"[^0-9A-Za-z_]+", "_", onnx_name).strip("_") or fallback
        if base[0].isdigit():
            base = f"{fallback}_{base}"
        name, suffix = base, 1
        while name in self.taken or keyword.iskeyword(name):
            name, suffix = f"{base}_{suffix}", suffix + 1
        self.taken.add(name)
        return name


class _Codegen:
    """Walks the graph once: registers modules, parameters and buffers on ``module`` and writes
    one line of ``forward`` per node. Op emitters (``_EMITTERS``) return the expression that
    computes a node's first output from the operand helpers below."""

    def __init__(self, graph: ir.Graph, module: StageModule):
        self.graph = graph
        self.module = module
        self.roles = parameter_roles(graph)
        self.constants: dict[ir.Value, np.ndarray] = {
            v: v.const_value.numpy() for v in graph.initializers.values()}
        self.exprs: dict[ir.Value, str] = {}  # value -> Python expression of its tensor
        self.local_vars: set[str] = set()  # the variables forward assigns (inputs excluded)
        self.initial_state: dict[str, np.ndarray] = {}  # values for the modules' parameters/buffers
        self.var_names = _Names(set(_RESERVED_NAMES))
        self.attr_names = _Names(set(dir(module)) | {"code"})

    # ---- the forward source

    def forward_source(self, output_names: list[str]) -> str:
        values = {v.name: v for v in self._all_values()}
        missing = [name for name in output_names if name not in values]
        if missing:
            raise LLCompileError(f"graph {self.graph.name!r} has no tensor named {', '.join(missing)}")
        outputs = [values[name] for name in output_names]
        inputs = [v for v in self.graph.inputs if v.const_value is None]
        arguments = []
        for value in inputs:
            self.exprs[value] = self.var_names.make(value.name, "input")
            arguments.append(f"{self.exprs[value]}: Tensor")
        nodes = _needed_nodes(self.graph, outputs)
        dead_after = _dead_after(nodes, keep=set(outputs))
        body = [self._statement(node, dead) for node, dead in zip(nodes, dead_after)]
        returned = ", ".join(self.tensor(v) for v in outputs)
        return "\n".join([
            f"def forward(self, {', '.join(arguments)}) -> Tuple[{', '.join(['Tensor'] * len(outputs))}]:",
            *(f"    {line}" for line in body if line),
            f"    return ({returned},)",
            "",
        ])

    def _statement(self, node: ir.Node, dead: list[ir.Value]) -> str:
        """``node``'s line; it also deletes the variables of ``dead`` (values no later node reads),
        as a hand-written forward drops its intermediates, so that their memory is reused."""
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            # folded: consumers read its value like an initializer's
            self.constants[node.outputs[0]] = _constant_value(node)
            return ""
        if (node.domain, node.op_type) == (hebbian_function.DOMAIN, hebbian_function.OP_TYPE):
            expr = _hebbian_update(self, node)
        elif node.domain not in ("", "ai.onnx") or node.op_type not in _EMITTERS:
            raise LLCompileError(f"the torch backend cannot run op {node.op_type!r} (node {node.name!r})")
        else:
            expr = _EMITTERS[node.op_type](self, node)
        var = self.var_names.make(node.outputs[0].name.removesuffix("_output_0"), "t")
        self.exprs[node.outputs[0]] = var
        self.local_vars.add(var)
        dead_vars = [self.exprs[v] for v in dead if self.exprs.get(v) in self.local_vars]
        free = f"; del {', '.join(dead_vars)}" if dead_vars else ""
        return f"{var} = {expr}{free}  # {node.op_type} {node.name}"

    def _all_values(self):
        yield from self.graph.inputs
        yield from self.graph.initializers.values()
        for node in self.graph:
            yield from node.outputs

    # ---- operands

    def input(self, node: ir.Node, index: int) -> ir.Value | None:
        """Input ``index`` of ``node``, or None when absent (optional inputs may be empty)."""
        return node.inputs[index] if index < len(node.inputs) else None

    def array(self, value: ir.Value | None) -> np.ndarray | None:
        """The value of a constant operand, None for a computed one."""
        return self.constants.get(value) if value is not None else None

    def x(self, node: ir.Node, index: int = 0) -> str:
        """The tensor expression of input ``index``."""
        return self.tensor(self.input(node, index))

    def tensor(self, value: ir.Value) -> str:
        """A computed value's variable; a constant's parameter or buffer, registered on first use."""
        if value not in self.exprs:
            self.exprs[value] = f"self.{self._register_constant(value)}"
        return self.exprs[value]

    def operand(self, node: ir.Node, index: int) -> str:
        """Like ``x``, but a non-learnable scalar constant becomes a Python literal."""
        value = self.input(node, index)
        array = self.array(value)
        if array is not None and array.ndim == 0 and value.name not in self.roles:
            return _literal(array.item())
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

    def scalar(self, node: ir.Node, index: int, what: str) -> str | None:
        """A constant scalar input as a float literal; None when absent."""
        array = self.constant_input(node, index, what)
        return None if array is None else _literal(float(array[0]))

    def rank(self, value: ir.Value) -> int:
        if value.shape is None:
            raise LLCompileError(f"the rank of {value.name!r} is unknown (shape inference found none)")
        return value.shape.rank()

    def exclusive(self, node: ir.Node) -> bool:
        """Whether every constant input of ``node`` is used by it alone, so a module may own it."""
        constants = [v for v in node.inputs if self.array(v) is not None]
        return all(len(v.uses()) == 1 and not v.is_graph_output() for v in constants)

    # ---- registration

    def own(self, node: ir.Node, module: nn.Module, **onnx_values: ir.Value | None) -> str:
        """Add ``module`` for ``node``; its fields (``weight=``, ``running_mean=``...) hold the
        given initializers. Returns the expression that calls it."""
        weight = onnx_values.get("weight")
        # a torch export's "stages.layer1.0.conv1.conv.weight" names the module it came from
        owner = weight.name.removesuffix(".weight") if weight is not None else node.name
        attr = self.attr_names.make(owner, node.op_type.lower())
        self.module.add_module(attr, module)
        parameters = dict(module.named_parameters())
        for field, value in onnx_values.items():
            if value is None:
                continue
            paths = self.module._parameter_paths if field in parameters else self.module._buffer_paths
            paths[value.name] = f"{attr}.{field}"
            self.initial_state[value.name] = self.constants[value]
        return f"self.{attr}"

    def _register_constant(self, value: ir.Value) -> str:
        array = self.constants.get(value)
        if array is None:
            raise LLCompileError(f"internal error: {value.name!r} is used before it is computed")
        attr = self.attr_names.make(value.name, "const")
        tensor = torch.from_numpy(np.array(array))
        role = self.roles.get(value.name)
        if role == "param":
            self.module.register_parameter(attr, nn.Parameter(tensor))
            self.module._parameter_paths[value.name] = attr
        else:  # BN statistics are state; other constants only need to follow .to(device)
            self.module.register_buffer(attr, tensor, persistent=role == "buffer")
            if role == "buffer":
                self.module._buffer_paths[value.name] = attr
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
        if extra:
            raise LLCompileError(f"{node.op_type} {node.name!r}: output {', '.join(extra)} is not supported")
        needed.append(node)
        needed_values.update(v for v in node.inputs if v is not None)
    return needed[::-1]


def _constant_value(node: ir.Node) -> np.ndarray:
    attr = next(iter(node.attributes.values()))
    if attr.name == "value":
        return attr.as_tensor().numpy()
    dtypes = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64, "value_ints": np.int64}
    if attr.name not in dtypes:
        raise LLCompileError(f"Constant {node.name!r}: a {attr.name} constant is not supported")
    return np.array(attr.value, dtype=dtypes[attr.name])


def _dead_after(nodes: list[ir.Node], keep: set[ir.Value]) -> list[list[ir.Value]]:
    """For each node, the inputs it is the last of ``nodes`` to read (``keep`` excepted)."""
    last_reader = {v: i for i, node in enumerate(nodes) for v in node.inputs if v is not None and v not in keep}
    dead: list[list[ir.Value]] = [[] for _ in nodes]
    for value, i in last_reader.items():
        dead[i].append(value)
    return dead


def _literal(value: float | int | bool) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if np.isnan(value) or np.isinf(value):
        return f'float("{value}")'
    return repr(_decimal_float(value))


def _decimal_float(value: float) -> float:
    """A float32 value as the shortest decimal that rounds to it (0.9, not 0.8999999762)."""
    return float(str(np.float32(value)))


def _torch_dtype(array: np.ndarray) -> torch.dtype:
    return torch.from_numpy(np.empty(0, array.dtype)).dtype


def _ints_attr(node: ir.Node, name: str, default: list[int]) -> list[int]:
    return list(node.attributes.get_ints(name, default))


def _float_attr(node: ir.Node, name: str, default: float) -> str:
    return _literal(node.attributes.get_float(name, default))


# --------------------------------------------------------------------------------------------
# Element-wise ops


def _unary(template: str) -> Callable[[_Codegen, ir.Node], str]:
    return lambda g, node: template.format(x=g.x(node))


def _binary(op: str) -> Callable[[_Codegen, ir.Node], str]:
    return lambda g, node: f"{g.x(node, 0)} {op} {g.operand(node, 1)}"


def _div(g: _Codegen, node: ir.Node) -> str:
    if node.outputs[0].dtype in _INTEGER_TYPES:  # ONNX truncates; torch's / would give floats
        return f'torch.div({g.x(node, 0)}, {g.operand(node, 1)}, rounding_mode="trunc")'
    return _binary("/")(g, node)


def _sum(g: _Codegen, node: ir.Node) -> str:
    return " + ".join(g.x(node, i) for i in range(len(node.inputs)))


def _leaky_relu(g: _Codegen, node: ir.Node) -> str:
    return f"F.leaky_relu({g.x(node)}, {_float_attr(node, 'alpha', 0.01)})"


def _prelu(g: _Codegen, node: ir.Node) -> str:
    # The slope broadcasts like ONNX's ([C, 1, 1], [1], ...); F.prelu wants it 1-D along dim 1.
    x = g.x(node)
    return f"torch.where({x} < 0, {x} * {g.x(node, 1)}, {x})"


def _elu(g: _Codegen, node: ir.Node) -> str:
    return f"F.elu({g.x(node)}, {_float_attr(node, 'alpha', 1.0)})"


def _hard_sigmoid(g: _Codegen, node: ir.Node) -> str:
    # ONNX's default alpha is 0.2, torch's hardsigmoid fixes 1/6: write the formula.
    alpha, beta = _float_attr(node, "alpha", 0.2), _float_attr(node, "beta", 0.5)
    return f"torch.clamp({g.x(node)} * {alpha} + {beta}, 0.0, 1.0)"


def _clip(g: _Codegen, node: ir.Node) -> str:
    if "min" in node.attributes or "max" in node.attributes:  # opset < 11
        low, high = (_literal(node.attributes.get_float(name)) if name in node.attributes else "None"
                     for name in ("min", "max"))
    elif any(g.input(node, i) is not None and g.array(g.input(node, i)) is None for i in (1, 2)):
        # computed bounds: torch.clamp takes tensors only for both at once
        low, high = (g.x(node, i) if g.input(node, i) is not None else "None" for i in (1, 2))
    else:
        low, high = (g.scalar(node, i, "min/max") or "None" for i in (1, 2))
    return f"torch.clamp({g.x(node)}, {low}, {high})"


def _dropout(g: _Codegen, node: ir.Node) -> str:
    # Active in train() only, like torch; a training_mode input does not override the module's mode.
    ratio = g.scalar(node, 1, "ratio") or _float_attr(node, "ratio", 0.5)
    return f"{g.own(node, nn.Dropout(float(ratio)))}({g.x(node)})"


def _lrn(g: _Codegen, node: ir.Node) -> str:
    size = node.attributes.get_int("size")
    alpha, beta, bias = (_float_attr(node, name, default) for name, default in
                         (("alpha", 1e-4), ("beta", 0.75), ("bias", 1.0)))
    return f"onnx_lrn({g.x(node)}, {size}, {alpha}, {beta}, {bias})"


def _softmax(function: str) -> Callable[[_Codegen, ir.Node], str]:
    return lambda g, node: f"{function}({g.x(node)}, {node.attributes.get_int('axis', -1)})"


def _cast(g: _Codegen, node: ir.Node) -> str:
    to = ir.DataType(node.attributes.get_int("to"))
    if to not in _TORCH_DTYPES:
        raise LLCompileError(f"Cast {node.name!r}: no torch dtype for {to.name}")
    return f"{g.x(node)}.to({_TORCH_DTYPES[to]})"


_INTEGER_TYPES = frozenset({ir.DataType.INT8, ir.DataType.INT16, ir.DataType.INT32, ir.DataType.INT64,
                            ir.DataType.UINT8})
_TORCH_DTYPES = {
    ir.DataType.FLOAT: "torch.float32", ir.DataType.DOUBLE: "torch.float64", ir.DataType.FLOAT16: "torch.float16",
    ir.DataType.BFLOAT16: "torch.bfloat16", ir.DataType.INT8: "torch.int8", ir.DataType.INT16: "torch.int16",
    ir.DataType.INT32: "torch.int32", ir.DataType.INT64: "torch.int64", ir.DataType.UINT8: "torch.uint8",
    ir.DataType.BOOL: "torch.bool",
}

# --------------------------------------------------------------------------------------------
# Layers


def _torch_pads(begin: list[int], end: list[int]) -> list[int]:
    """ONNX [x1_begin, x2_begin.., x1_end, x2_end..] halves -> F.pad's [xn_begin, xn_end, ...]."""
    return [p for b, e in zip(reversed(begin), reversed(end)) for p in (b, e)]


def _spatial_padding(node: ir.Node, x: str, kernel: list[int], fill: str,
                     fits: Callable[[list[int]], bool]) -> tuple[str, list[int], bool]:
    """(padded input expression, torch ``padding``, whether padding was made explicit) for a
    Conv/pool reading ``x``.

    Symmetric ONNX pads that ``fits`` accepts become torch's ``padding``; asymmetric ones and
    ``auto_pad=SAME_*`` become an explicit pad with ``fill`` before the op.
    """
    dims = len(kernel)
    auto_pad = node.attributes.get_string("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        strides, dilations = _ints_attr(node, "strides", [1] * dims), _ints_attr(node, "dilations", [1] * dims)
        return (f"pad_same({x}, {kernel}, {strides}, {dilations}, {auto_pad == 'SAME_UPPER'}, {fill})",
                [0] * dims, True)
    if auto_pad == "VALID":
        return x, [0] * dims, False
    pads = _ints_attr(node, "pads", [0] * 2 * dims)
    begin, end = pads[:dims], pads[dims:]
    if begin == end and fits(begin):
        return x, begin, False
    return f"F.pad({x}, {_torch_pads(begin, end)}, value={fill})", [0] * dims, True


def _conv(g: _Codegen, node: ir.Node) -> str:
    weight, bias = g.input(node, 1), g.input(node, 2)
    dims = g.rank(weight) - 2
    if dims not in (1, 2, 3):
        raise LLCompileError(f"Conv {node.name!r}: {dims}-d convolution is not supported")
    kernel = list(weight.shape[2:])
    strides, dilations = _ints_attr(node, "strides", [1] * dims), _ints_attr(node, "dilations", [1] * dims)
    groups = node.attributes.get_int("group", 1)
    x, padding, _ = _spatial_padding(node, g.x(node), kernel, "0.0", fits=lambda pads: True)
    w = g.array(weight)
    if w is None or not g.exclusive(node):
        b = g.x(node, 2) if bias is not None else "None"
        return f"F.conv{dims}d({x}, {g.x(node, 1)}, {b}, {strides}, {padding}, {dilations}, {groups})"
    conv_class = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1]
    conv = conv_class(w.shape[1] * groups, w.shape[0], kernel, strides, padding, dilations, groups,
                      bias=bias is not None, dtype=_torch_dtype(w))
    return f"{g.own(node, conv, weight=weight, bias=bias)}({x})"


def _gemm(g: _Codegen, node: ir.Node) -> str:
    a = node.attributes
    alpha, beta = a.get_float("alpha", 1.0), a.get_float("beta", 1.0)
    trans_a, trans_b = a.get_int("transA", 0), a.get_int("transB", 0)
    weight, bias = g.input(node, 1), g.input(node, 2)
    w, b = g.array(weight), g.array(bias)
    is_linear = (w is not None and trans_b == 1 and trans_a == 0 and alpha == beta == 1.0
                 and (bias is None or (b is not None and b.shape == (w.shape[0],))) and g.exclusive(node))
    if is_linear:
        linear = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None, dtype=_torch_dtype(w))
        return f"{g.own(node, linear, weight=weight, bias=bias)}({g.x(node)})"
    lhs = g.x(node, 0) + (".t()" if trans_a else "")
    rhs = g.x(node, 1) + (".t()" if trans_b else "")
    if bias is None:
        product = f"torch.mm({lhs}, {rhs})"
        return product if alpha == 1.0 else f"{product} * {_literal(alpha)}"
    return f"torch.addmm({g.x(node, 2)}, {lhs}, {rhs}, beta={_literal(beta)}, alpha={_literal(alpha)})"


def _matmul(g: _Codegen, node: ir.Node) -> str:
    # A constant weight stays a [K, N] parameter in ONNX layout: state is exchanged in it.
    return f"torch.matmul({g.x(node, 0)}, {g.x(node, 1)})"


def _hebbian_update(g: _Codegen, node: ir.Node) -> str:
    a = node.attributes
    arguments = [g.x(node, i) for i in range(4)] + [
        str(list(a.get_ints(name))) for name in ("strides", "pads", "dilations")] + [
        str(a.get_int("group")), _literal(a.get_float("decay")), _literal(bool(a.get_int("renormalize"))),
        _literal(bool(a.get_int("triangular"))), _literal(a.get_float("temperature"))]
    return f"hebbian_update({', '.join(arguments)})"


def _batch_norm(g: _Codegen, node: ir.Node) -> str:
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
        return (f"F.batch_norm({x}, {g.tensor(mean)}, {g.tensor(var)}, {g.tensor(scale)}, {g.tensor(bias)}, "
                f"self.training, {momentum!r}, {eps!r})")
    rank = g.rank(node.inputs[0])
    if rank not in (2, 3, 4, 5):
        raise LLCompileError(f"BatchNormalization {node.name!r}: rank-{rank} input is not supported")
    bn_class = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}[rank]
    channels = g.array(scale).shape[0]
    bn = bn_class(channels, eps=eps, momentum=momentum, dtype=_torch_dtype(g.array(scale)))
    return f"{g.own(node, bn, weight=scale, bias=bias, running_mean=mean, running_var=var)}({x})"


# --------------------------------------------------------------------------------------------
# Pooling and reductions


def _max_pool(g: _Codegen, node: ir.Node) -> str:
    kernel = _ints_attr(node, "kernel_shape", [])
    dims = len(kernel)
    strides, dilations = _ints_attr(node, "strides", [1] * dims), _ints_attr(node, "dilations", [1] * dims)
    ceil_mode = bool(node.attributes.get_int("ceil_mode", 0))
    fits = functools.partial(_fits_torch_pool, kernel=kernel, dilations=dilations)
    x, padding, _ = _spatial_padding(node, g.x(node), kernel, 'float("-inf")', fits)
    return f"F.max_pool{dims}d({x}, {kernel}, {strides}, {padding}, {dilations}, {ceil_mode})"


def _average_pool(g: _Codegen, node: ir.Node) -> str:
    kernel = _ints_attr(node, "kernel_shape", [])
    dims = len(kernel)
    strides = _ints_attr(node, "strides", [1] * dims)
    if any(d != 1 for d in _ints_attr(node, "dilations", [1] * dims)):  # opset 19; torch has none
        raise LLCompileError(f"AveragePool {node.name!r}: dilations are not supported")
    ceil_mode = bool(node.attributes.get_int("ceil_mode", 0))
    count_include_pad = bool(node.attributes.get_int("count_include_pad", 0))
    fits = functools.partial(_fits_torch_pool, kernel=kernel, dilations=[1] * dims)
    x, padding, explicit = _spatial_padding(node, g.x(node), kernel, "0.0", fits)
    pool = f"F.avg_pool{dims}d({{}}, {kernel}, {strides}, {padding}, {ceil_mode}, {count_include_pad})"
    if not explicit or count_include_pad:
        return pool.format(x)
    # Explicit zero padding would count in torch's mean: divide by the mean of a padded ones-mask.
    ones, _, _ = _spatial_padding(node, f"torch.ones_like({g.x(node)}[:1, :1])", kernel, "0.0", fits)
    return f"{pool.format(x)} / {pool.format(ones)}"


def _fits_torch_pool(pads: list[int], kernel: list[int], dilations: list[int]) -> bool:
    """torch's pools take at most half the (dilated) kernel as implicit padding."""
    return all(2 * p <= (k - 1) * d + 1 for p, k, d in zip(pads, kernel, dilations))


def _global_pool(function: str) -> Callable[[_Codegen, ir.Node], str]:
    def emit(g: _Codegen, node: ir.Node) -> str:
        spatial = list(range(2, g.rank(node.inputs[0])))
        return f"{function}({g.x(node)}, {spatial}, keepdim=True)"
    return emit


def _reduce_mean(g: _Codegen, node: ir.Node) -> str:
    axes = g.ints(node, 1, "axes")  # opset >= 18
    if axes is None:
        axes = _ints_attr(node, "axes", [])
    keepdims = bool(node.attributes.get_int("keepdims", 1))
    if not axes:
        if node.attributes.get_int("noop_with_empty_axes", 0):
            return g.x(node)
        axes = list(range(g.rank(node.inputs[0])))
    return f"torch.mean({g.x(node)}, {axes}, keepdim={keepdims})"


# --------------------------------------------------------------------------------------------
# Shapes


def _flatten(g: _Codegen, node: ir.Node) -> str:
    axis = node.attributes.get_int("axis", 1)
    if axis < 0:
        axis += g.rank(node.inputs[0])
    x = g.x(node)
    if axis == 0:
        return f"{x}.reshape(1, -1)"
    if axis == 1:
        return f"torch.flatten({x}, 1)"
    return f"torch.flatten(torch.flatten({x}, {axis}), 0, {axis - 1})"


def _reshape(g: _Codegen, node: ir.Node) -> str:
    x = g.x(node)
    allowzero = bool(node.attributes.get_int("allowzero", 0))
    shape = g.array(node.inputs[1])
    if shape is None:
        return f"onnx_reshape({x}, {g.x(node, 1)}, {allowzero})"
    dims = [f"{x}.shape[{i}]" if d == 0 and not allowzero else str(int(d)) for i, d in enumerate(shape)]
    return f"{x}.reshape([{', '.join(dims)}])"


def _squeeze(g: _Codegen, node: ir.Node) -> str:
    axes = g.ints(node, 1, "axes")
    if axes is None:
        axes = _ints_attr(node, "axes", [])
    return f"torch.squeeze({g.x(node)}, {axes})" if axes else f"torch.squeeze({g.x(node)})"


def _unsqueeze(g: _Codegen, node: ir.Node) -> str:
    axes = g.ints(node, 1, "axes")
    if axes is None:
        axes = _ints_attr(node, "axes", [])
    out_rank = g.rank(node.inputs[0]) + len(axes)
    # ONNX axes index the output; inserting them in increasing order makes each one land there.
    return g.x(node) + "".join(f".unsqueeze({a})" for a in sorted(a % out_rank for a in axes))


def _transpose(g: _Codegen, node: ir.Node) -> str:
    perm = _ints_attr(node, "perm", list(reversed(range(g.rank(node.inputs[0])))))
    return f"{g.x(node)}.permute({perm})"


def _concat(g: _Codegen, node: ir.Node) -> str:
    parts = ", ".join(g.x(node, i) for i in range(len(node.inputs)))
    return f"torch.cat([{parts}], {node.attributes.get_int('axis')})"


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


def _pad(g: _Codegen, node: ir.Node) -> str:
    rank = g.rank(node.inputs[0])
    pads = g.ints(node, 1, "pads")
    if pads is None:  # opset < 11
        pads = _ints_attr(node, "pads", [0] * 2 * rank)
    axes = g.ints(node, 3, "axes") or list(range(rank))
    mode = node.attributes.get_string("mode", "constant")
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
    value = g.scalar(node, 2, "constant_value") or _float_attr(node, "value", 0.0)
    if mode == "constant":
        return f"F.pad({g.x(node)}, {torch_pads}, value={value})"
    return f'F.pad({g.x(node)}, {torch_pads}, mode="{_PAD_MODES[mode]}")'


def _slice(g: _Codegen, node: ir.Node) -> str:
    rank = g.rank(node.inputs[0])
    starts, ends = g.ints(node, 1, "starts"), g.ints(node, 2, "ends")
    axes = g.ints(node, 3, "axes") or list(range(len(starts)))
    steps = g.ints(node, 4, "steps") or [1] * len(starts)
    if any(step < 0 for step in steps):
        raise LLCompileError(f"Slice {node.name!r}: negative steps are not supported (torch has none)")
    index = [":"] * rank
    for start, end, axis, step in zip(starts, ends, axes, steps):
        stop = "" if end >= 2**62 else str(end)  # INT64_MAX-like ends mean "to the end"
        index[axis % rank] = f"{start}:{stop}" + (f":{step}" if step != 1 else "")
    while index and index[-1] == ":":
        index.pop()
    return f"{g.x(node)}[{', '.join(index) or ':'}]"


def _shape(g: _Codegen, node: ir.Node) -> str:
    x = g.x(node)
    start, end = node.attributes.get_int("start", 0), node.attributes.get_int("end", None)
    dims = f"{x}.shape" if start == 0 and end is None else f"{x}.shape[{start}:{'' if end is None else end}]"
    return f"torch.tensor({dims}, dtype=torch.int64, device={x}.device)"


def _gather(g: _Codegen, node: ir.Node) -> str:
    return f"onnx_gather({g.x(node, 0)}, {g.x(node, 1)}, {node.attributes.get_int('axis', 0)})"


# --------------------------------------------------------------------------------------------
# Loss


def _softmax_cross_entropy(g: _Codegen, node: ir.Node) -> str:
    args = [g.x(node, 0), g.x(node, 1)]
    if g.input(node, 2) is not None:
        args.append(f"weight={g.x(node, 2)}")
    if "ignore_index" in node.attributes:
        args.append(f"ignore_index={node.attributes.get_int('ignore_index')}")
    args.append(f'reduction="{node.attributes.get_string("reduction", "mean")}"')
    return f"F.cross_entropy({', '.join(args)})"


_EMITTERS: dict[str, Callable[[_Codegen, ir.Node], str]] = {
    "Relu": _unary("torch.relu({x})"),
    "LeakyRelu": _leaky_relu,
    "PRelu": _prelu,
    "Clip": _clip,
    "Sigmoid": _unary("torch.sigmoid({x})"),
    "Tanh": _unary("torch.tanh({x})"),
    "Elu": _elu,
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": _unary("F.hardswish({x})"),
    "Softplus": _unary("F.softplus({x})"),
    "Add": _binary("+"),
    "Sub": _binary("-"),
    "Mul": _binary("*"),
    "Div": _div,
    "Sum": _sum,
    "Dropout": _dropout,
    "Identity": _unary("{x}"),
    "LRN": _lrn,
    "Softmax": _softmax("torch.softmax"),
    "LogSoftmax": _softmax("torch.log_softmax"),
    "Cast": _cast,
    "Conv": _conv,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "BatchNormalization": _batch_norm,
    "MaxPool": _max_pool,
    "AveragePool": _average_pool,
    "GlobalAveragePool": _global_pool("torch.mean"),
    "GlobalMaxPool": _global_pool("torch.amax"),
    "ReduceMean": _reduce_mean,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Transpose": _transpose,
    "Concat": _concat,
    "Pad": _pad,
    "Slice": _slice,
    "Shape": _shape,
    "Gather": _gather,
    "SoftmaxCrossEntropyLoss": _softmax_cross_entropy,
}
