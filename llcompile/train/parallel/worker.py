"""What every rank of a parallel run runs: join the process group, then the ordinary loop.

Started by ``launch.py`` (``--nproc``) or by ``torchrun`` (``python -m llcompile train ...``),
with the rendezvous environment torch's launcher sets (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT). On CUDA each rank uses device LOCAL_RANK and NCCL; on the CPU gloo.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import ErrorHandler

from llcompile.errors import LLCompileError
from llcompile.program.program import Program
from llcompile.train.config import TrainConfig
from llcompile.train.loop import train
from llcompile.train.parallel.data_parallel import DataParallel
from llcompile.train.parallel.options import ParallelOptions
from llcompile.train.parallel.pipeline import StagePipeline

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    return all(name in os.environ for name in TORCHRUN_ENV)


def run_worker(program_dir: Path, config: TrainConfig, run_dir: Path, resume: bool, force: bool, show_progress: bool,
               options: ParallelOptions) -> dict:
    """Train as this process's rank; rank 0 returns ``{"history": [...]}``, a rank stopped by bad
    input ``{"error": message, "exit_code": code}``. Any other failure ends the process with exit
    code 1 and its message in torch elastic's error file (the launcher reports it in one line)."""
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    # Ctrl-C (or the agent stopping the ranks) ends a rank at once, without a traceback
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    world_size = int(os.environ["WORLD_SIZE"])
    try:
        options = options.checked(Program.load(program_dir), config, world_size)
        if config.device.startswith("cuda"):
            config = replace(config, device=f"cuda:{local_rank}")
            torch.cuda.set_device(local_rank)
            device = torch.device(config.device)
        else:
            device = torch.device("cpu")
        if not config.threads:  # the ranks of a machine share its cores (loop.train applies --threads)
            local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
            config = replace(config, threads=max(1, (os.cpu_count() or 1) // local_ranks))
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=timedelta(seconds=options.timeout_s))
        try:
            team = (StagePipeline if options.mode == "stages" else DataParallel)(options, device)
            result = train(program_dir, config, run_dir, resume=resume, force=force,
                           show_progress=show_progress and rank == 0, team=team)
        finally:
            dist.destroy_process_group()
        return {"history": result.history} if rank == 0 else {}
    except LLCompileError as exc:
        return {"error": str(exc), "exit_code": exc.exit_code}
    except Exception as exc:
        if os.environ.get("LLCOMPILE_DEBUG"):
            raise
        if _peer_timed_out(exc):
            exc = TimeoutError(f"no answer from another rank within --timeout {options.timeout_s:g} s "
                               f"(a rank hung, was stopped or lost its link)")
        ErrorHandler().record_exception(exc)
        sys.exit(1)


def _peer_timed_out(exc: Exception) -> bool:
    """A send, receive or collective that waited out the process group's timeout (gloo raises a
    RuntimeError that says so; NCCL's watchdog ends the process itself)."""
    return isinstance(exc, (RuntimeError, dist.DistError)) and "timed out" in str(exc).lower()
