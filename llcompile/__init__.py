"""llcompile: compile an ONNX model into a block-local / Hebbian training program.

    program = llcompile.transform("resnet20.onnx", strategy="dbl", blocks=4)
    assert llcompile.verify(program).ok
    result = llcompile.fit(program, ((train_x, train_y), (test_x, test_y)), epochs=5)
    result.history[-1]["test_acc"], result.model  # metrics per epoch; the trained onnx.ModelProto

or, with llcompile's passes in a pipeline of one's own:

    model = llcompile.load("resnet20.onnx")
    planned = ...  # a copy of model after PartitionPass, AuxHeadsPass, ModelLossPass (llcompile.passes)
    program = llcompile.emit(planned, model)

The packages are the compiler's stages, each importing only the ones before it
(docs/architecture.md): util, ops, data, models, frontend, analysis, program, passes, cost, policies,
compiler, backends, train, report, cli.
"""

from llcompile.analysis.structure import analyze_model as analyze  # any model form, canonicalised first
from llcompile.backends import make_backend
from llcompile.compiler.strategies import STRATEGIES
from llcompile.compiler.transform import emit_planned as emit
from llcompile.compiler.transform import transform
from llcompile.compiler.verify import Verification, verify
from llcompile.errors import DataError, LLCompileError, ModelError, OptionError, ProgramError, TrainingDiverged
from llcompile.frontend.importer import load
from llcompile.program.program import Program
from llcompile.train.fit import FitResult, fit
from llcompile.version import __version__

__all__ = ["DataError", "FitResult", "LLCompileError", "ModelError", "OptionError", "Program", "ProgramError",
           "STRATEGIES", "TrainingDiverged", "Verification", "__version__", "analyze", "emit", "fit", "load",
           "make_backend", "transform", "verify"]
