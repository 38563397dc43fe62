"""``StageModule``: a stage graph as a ``torch.fx.GraphModule`` (made by ``builder.build_module``)
whose state is exchanged by ONNX initializer name and in ONNX layout (``onnx_parameters``,
``onnx_buffers``, ``onnx_state``, ``load_onnx_state``); module attribute names are generated
and are not part of the contract.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, fx, nn

from llcompile.errors import LLCompileError
from llcompile.util.terminal import printable

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

    def freeze(self, names) -> None:
        """Parameters (by ONNX name) that no gradient trains: the weights of a module the program
        lists as buffers (an ema aux head's averaged copy), still state, never the optimizer's."""
        for name, param in self.onnx_parameters().items():
            if name in names:
                param.requires_grad_(False)

    def onnx_buffers(self) -> dict[str, Tensor]:
        """BatchNormalization running statistics."""
        return {name: self.get_buffer(path) for name, path in self._buffer_paths.items()}

    def onnx_state(self, names=None) -> dict[str, np.ndarray]:
        """Copies of the parameters and buffers by ONNX name: all, or those in ``names``."""
        tensors = {**self.onnx_parameters(), **self.onnx_buffers()}
        return {name: tensors[name].detach().cpu().numpy().copy() for name in (tensors if names is None else names)}

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
