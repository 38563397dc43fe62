"""The training runtime: runs a compiled program with a backend on a data set."""

from llcompile.train.config import TrainConfig
from llcompile.train.fit import FitResult, fit
from llcompile.train.loop import RunResult, evaluate, train

__all__ = ["FitResult", "RunResult", "TrainConfig", "evaluate", "fit", "train"]
