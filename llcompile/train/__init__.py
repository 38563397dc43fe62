"""The training runtime: runs a compiled program with a backend on a data set."""

from llcompile.train.config import TrainConfig
from llcompile.train.loop import RunResult, evaluate, train

__all__ = ["RunResult", "TrainConfig", "evaluate", "train"]
