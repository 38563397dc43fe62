"""llcompile's passes: their common base (a readable repr), and running a list of them so that a
user error from inside a pass is reported as itself."""

from __future__ import annotations

import onnx_ir as ir

from llcompile.errors import LLCompileError


class LLCompilePass(ir.passes.InPlacePass):
    """An in-place onnx_ir pass that prints as its class and options: ``AuxHeadsPass(kind='dgl', seed=0, ...)``."""

    def __repr__(self) -> str:
        options = ", ".join(f"{name}={value!r}" for name, value in vars(self).items() if not name.startswith("_"))
        return f"{type(self).__name__}({options})"


def run_passes(passes: list[ir.passes.PassBase], model: ir.Model) -> ir.passes.PassResult:
    """``PassManager(passes)(model)``; an LLCompileError raised by a pass is re-raised unwrapped
    (the pass manager wraps every error in PassErrors naming the step): ``llcompile.passes.run_passes``
    for a pipeline of one's own."""
    try:
        return ir.passes.PassManager(passes)(model)
    except ir.passes.PassError as exc:
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, LLCompileError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause.with_traceback(None) from None
