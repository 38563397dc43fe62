"""``--nproc N``: start N local ranks with torch's elastic agent and wait for them.

No restarts: a rank that dies (killed, out of memory, a bug) ends the whole run with one line
naming it and the last complete checkpoint, and so does a Ctrl-C (exit 130); ``--resume``
continues from there.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from llcompile.errors import LLCompileError
from llcompile.program.program import Program
from llcompile.train.checkpoint import load_checkpoint
from llcompile.train.config import TrainConfig
from llcompile.train.loop import CHECKPOINT, TRAINED_MODEL, RunResult, TrainingInterrupted
from llcompile.train.parallel.options import ParallelOptions
from llcompile.train.parallel.worker import run_worker


def launch(program_dir: Path, config: TrainConfig, run_dir: Path, resume: bool, force: bool, show_progress: bool,
           options: ParallelOptions) -> RunResult:
    options.checked(Program.load(program_dir), config, options.nproc)  # bad options: before any process starts
    launch_config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=options.nproc,
                                 run_id=f"llcompile-{uuid.uuid4().hex}", rdzv_backend="c10d",
                                 rdzv_endpoint="127.0.0.1:0", max_restarts=0, monitor_interval=0.2,
                                 start_method="spawn")
    for name in list(logging.root.manager.loggerDict):  # failures are reported below, in one line
        if name.startswith(("torch.distributed.elastic", "torch.multiprocessing")):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    # a killed worker leaves its result queue's semaphores to multiprocessing's resource tracker
    # (a process started from this environment), which cleans them up with a warning
    os.environ.setdefault("PYTHONWARNINGS", "ignore:resource_tracker:UserWarning")
    try:
        outcomes = elastic_launch(launch_config, run_worker)(program_dir, config, run_dir, resume, force,
                                                             show_progress, options)
    except ChildFailedError as exc:
        raise LLCompileError(f"{_failed_rank(exc.failures)}; {_last_checkpoint(run_dir)}") from None
    except SignalException as exc:  # Ctrl-C or a kill of this process: the agent has stopped the ranks
        raise TrainingInterrupted(f"stopped by {exc.sigval.name}; {_last_checkpoint(run_dir)}") from None
    for rank in sorted(outcomes):
        if "error" in outcomes[rank]:
            error = LLCompileError(outcomes[rank]["error"])
            error.exit_code = outcomes[rank]["exit_code"]
            raise error
    return RunResult(run_dir=run_dir, history=outcomes[0]["history"], trained_model=run_dir / TRAINED_MODEL)


def _failed_rank(failures: dict[int, ProcessFailure]) -> str:
    """The rank that failed first: one killed by a signal, else the earliest error."""
    rank, failure = min(failures.items(), key=lambda item: (item[1].exitcode >= 0, item[1].timestamp, item[0]))
    if failure.exitcode < 0:
        return f"rank {rank} failed (killed by {failure.signal_name()})"
    message = failure.message["message"] if isinstance(failure.message, dict) else failure.message
    return f"rank {rank} failed (exit code {failure.exitcode}: {str(message).splitlines()[0] if message else '?'})"


def _last_checkpoint(run_dir: Path) -> str:
    try:
        _, progress = load_checkpoint(run_dir / CHECKPOINT)
    except LLCompileError:
        return "no checkpoint was written"
    return f"the last complete checkpoint is epoch {progress['epoch']} in {run_dir} (continue with --resume)"
