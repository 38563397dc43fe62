"""llcompile: compile an ONNX model into a block-local / Hebbian training program.

    program = llcompile.transform("resnet20.onnx", strategy="dbl", blocks=4)
    program.save("out/")
"""

from llcompile.analysis import analyze
from llcompile.compiler import transform
from llcompile.errors import LLCompileError
from llcompile.importer import load
from llcompile.program import Program
from llcompile.strategies import STRATEGIES
from llcompile.version import __version__

__all__ = ["LLCompileError", "Program", "STRATEGIES", "__version__", "analyze", "load", "transform"]
