"""Measure what autograd actually keeps for the backward pass when the torch backend trains a program.

This is the check of the activation-memory rule (``activations.py``): every tensor that autograd
saves during a stage's forward pass goes through ``torch.autograd.graph.saved_tensors_hooks``; the
bytes of the distinct storages behind them, parameters and buffers excluded, are the stage's
activations kept for its backward pass. torch is imported only when this is called.
"""

from __future__ import annotations

from llcompile.program.plan import StageKind
from llcompile.program.program import Program


def measure_saved_bytes(program: Program, batch_size: int, seed: int = 0) -> list[int]:
    """Bytes of the distinct non-parameter storages autograd saves in each stage of one training step."""
    import torch

    from llcompile.backends.base import OptimizerConfig
    from llcompile.backends.torch.backend import TorchBackend, TorchStage

    torch.manual_seed(seed)
    stages = TorchBackend("cpu").build(program, OptimizerConfig())
    x = torch.randn(batch_size, *program.input["shape"][1:])
    labels = torch.randint(0, program.num_classes, (batch_size,))
    measured = []
    for spec, stage in zip(program.stages, stages):
        if spec.kind == StageKind.HEBBIAN and type(stage) is TorchStage:
            # a backend that does not know Hebbian stages would train this one by gradient; a Hebbian
            # stage runs forward-only, which is what is measured here
            with torch.no_grad():
                _, x, _ = stage.runner(x, labels)
            measured.append(0)
            continue
        module = getattr(stage, "module", None)
        state = [*module.parameters(), *module.buffers()] if module is not None else []
        state_storages = {t.untyped_storage().data_ptr() for t in state}
        saved: dict[int, int] = {}

        def pack(tensor):
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in state_storages:
                saved[storage.data_ptr()] = storage.nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            result = stage.train_step(x, labels, lr=0.0)
        measured.append(sum(saved.values()))
        x = result.output
    return measured
