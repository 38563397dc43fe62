"""Run a list of passes, reporting a user error from inside a pass as itself."""

from __future__ import annotations

import onnx_ir as ir

from llcompile.errors import LLCompileError


def run_passes(passes: list[ir.passes.PassBase], model: ir.Model) -> ir.passes.PassResult:
    """``PassManager(passes)(model)``; an LLCompileError raised by a pass is re-raised unwrapped
    (the pass manager wraps every error in PassErrors naming the step)."""
    try:
        return ir.passes.PassManager(passes)(model)
    except ir.passes.PassError as exc:
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, LLCompileError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause.with_traceback(None) from None
