"""Training one program on several processes over torch.distributed.

``launch.py`` starts the local ranks (``--nproc``) with torch's elastic agent; ``worker.py`` is
what every rank runs (also under ``torchrun``); ``options.py`` checks the options against the
program; ``team.py`` is what the ranks share (the run directory's inputs, evaluation, epoch
sums, every stage's state); ``placement.py`` groups consecutive stages onto ranks;
``transport.py`` sends activations and labels to the next rank; ``pipeline.py`` trains the
stages as a pipeline (``--parallel stages``), ``data_parallel.py`` on shares of each batch
(``--parallel data``: DistributedDataParallel on torch, an all-reduce of the gradients on ort).
"""

from llcompile.train.parallel.launch import launch
from llcompile.train.parallel.options import ParallelOptions
from llcompile.train.parallel.worker import launched_by_torchrun, run_worker

__all__ = ["ParallelOptions", "launch", "launched_by_torchrun", "run_worker"]
