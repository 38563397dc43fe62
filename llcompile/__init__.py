"""llcompile: compile an ONNX model into a block-local / Hebbian training program.

    program = llcompile.transform("resnet20.onnx", strategy="dbl", blocks=4)
    program.save("out/")

The packages are the compiler's stages, each importing only the ones before it
(docs/architecture.md): util, ops, data, models, frontend, analysis, program, passes, cost, policies,
compiler, backends, train, report, cli.
"""

from llcompile.analysis.structure import analyze_model as analyze  # any model form, canonicalised first
from llcompile.backends import make_backend
from llcompile.compiler.strategies import STRATEGIES
from llcompile.compiler.transform import transform
from llcompile.errors import LLCompileError
from llcompile.frontend.importer import load
from llcompile.program.program import Program
from llcompile.version import __version__

__all__ = ["LLCompileError", "Program", "STRATEGIES", "__version__", "analyze", "load", "make_backend", "transform"]
