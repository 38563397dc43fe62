"""The options of a parallel run, checked against the program before any process starts."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch

from llcompile.backends import make_backend
from llcompile.errors import LLCompileError
from llcompile.program.program import Program
from llcompile.train.config import TrainConfig

MODES = ("stages", "data")


@dataclass(frozen=True)
class ParallelOptions:
    nproc: int = 1  # local worker processes (--nproc); under torchrun, WORLD_SIZE decides
    mode: str | None = None  # stages | data; None: stages for a program of several stages, else data
    placement: tuple[int, ...] | None = None  # consecutive stages per rank; None: balanced by measured time
    max_in_flight: int = 2  # batches sent on but not yet received, per pair of ranks
    timeout_s: float = 300.0  # a peer silent this long ends the run

    def checked(self, program: Program, config: TrainConfig, world_size: int) -> ParallelOptions:
        """These options with the mode decided; a one-line LLCompileError for a combination that cannot run."""
        stages = len(program.stages)
        mode = self.mode or ("stages" if stages > 1 else "data")
        if mode not in MODES:
            raise LLCompileError(f"unknown --parallel {mode!r}; choose one of: {', '.join(MODES)}")
        if mode == "stages":
            if world_size > stages:
                raise LLCompileError(f"--parallel stages needs a stage per rank: the program has {stages} stage(s) "
                                     f"for {world_size} ranks (use fewer processes or --parallel data)")
            if self.placement is not None:
                check_counts(self.placement, stages, world_size)
            if any(stage.head is not None and stage.head.ema for stage in program.stages):
                raise LLCompileError("an ema aux head follows the next block's weights after every step, which "
                                     "--parallel stages keeps on another rank: use --parallel data or one process")
        else:
            if self.placement is not None:
                raise LLCompileError("--placement applies to --parallel stages only")
            if config.batch_size < 2 * world_size:
                raise LLCompileError(f"--parallel data splits each batch over the ranks: --batch-size "
                                     f"{config.batch_size} leaves fewer than 2 samples per rank of {world_size}")
        if config.device.startswith("cuda"):
            make_backend(config.backend, config.device, config.torch_mode)  # refuses a device it lacks
            local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
            if torch.cuda.device_count() < local_ranks:
                raise LLCompileError(f"--device cuda gives each rank a GPU of its own: {local_ranks} ranks on this "
                                     f"machine need {local_ranks} CUDA devices, it has {torch.cuda.device_count()}")
        return replace(self, mode=mode)


def check_counts(counts: tuple[int, ...], stages: int, ranks: int) -> None:
    if len(counts) != ranks or min(counts) < 1 or sum(counts) != stages:
        raise LLCompileError(f"--placement {','.join(map(str, counts))} does not fit: give {ranks} positive "
                             f"counts of consecutive stages, one per rank, summing to the program's {stages} stages")
