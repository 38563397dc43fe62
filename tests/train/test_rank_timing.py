"""A rank's busy and idle time, as the epoch records them, against time actually spent: each stage
step of the pipeline is stubbed to sleep a known time (busy), and the batches arrive after a known
sleep each (idle: the rank waits outside its steps). One rank, in this process, over gloo."""

from __future__ import annotations

import time

import pytest
import torch
import torch.distributed as dist

import llcompile.train.parallel.pipeline as pipeline
from llcompile.train import train
from llcompile.train.parallel.options import ParallelOptions
from llcompile.train.parallel.pipeline import StagePipeline
from tests.train.test_training import _config

STEP_S, WAIT_S, STAGES = 0.02, 0.01, 3


@pytest.fixture
def one_rank():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_busy_is_the_steps_and_idle_the_waits(digits_programs, tmp_path, monkeypatch, one_rank):
    loader = pipeline.train_loader

    def slow_batches(*args, **kwargs):
        for batch in loader(*args, **kwargs):
            time.sleep(WAIT_S)
            yield batch

    def sleeping_step(work, stage, index, activation, labels, lr, step):
        time.sleep(STEP_S)
        return activation, 0.0, 0

    monkeypatch.setattr(pipeline, "train_loader", slow_batches)
    monkeypatch.setattr(pipeline, "train_stage", sleeping_step)
    team = StagePipeline(ParallelOptions(mode="stages", placement=(STAGES,)), torch.device("cpu"))
    history = train(digits_programs["dbl"], _config(epochs=1, data_limit=256), tmp_path / "run",
                    show_progress=False, team=team).history
    (rank,) = history[0]["parallel"]["ranks"]
    steps = rank["steps"]
    assert steps == 4  # 256 samples in batches of 64
    assert rank["busy_s"] >= steps * STAGES * STEP_S  # every stub step counted
    assert rank["idle_s"] >= steps * WAIT_S  # every wait outside the steps counted, none inside them
    wall = rank["busy_s"] + rank["idle_s"]
    assert rank["busy_share"] == pytest.approx(rank["busy_s"] / wall, rel=1e-9)
    assert wall <= history[0]["epoch_time_s"] + 1e-6
