"""llcompile: compile an ONNX model into a block-local / Hebbian training program.

    program = llcompile.transform("resnet20.onnx", strategy="dbl", blocks=4)
    program.save("out/")
"""

__version__ = "0.1.0"

from llcompile.analysis import analyze  # noqa: E402
from llcompile.compiler import transform  # noqa: E402
from llcompile.errors import LLCompileError  # noqa: E402
from llcompile.importer import load  # noqa: E402
from llcompile.program import Program  # noqa: E402
from llcompile.strategies import STRATEGIES  # noqa: E402

__all__ = ["LLCompileError", "Program", "STRATEGIES", "__version__", "analyze", "load", "transform"]
