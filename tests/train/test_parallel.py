"""Parallel training (--nproc): every run is compared with the sequential run of the same program."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

import llcompile
from llcompile.errors import LLCompileError
from llcompile.cli.inspection import describe, render_text
from llcompile.train import TrainConfig, train
from llcompile.train.checkpoint import load_checkpoint
from llcompile.train.parallel import ParallelOptions, launch
from llcompile.train.parallel.data_parallel import ring_allreduce_bytes
from llcompile.train.parallel.placement import balance, groups

TIMING = ("epoch_time_s", "images_per_s", "peak_memory_mb", "parallel")


@pytest.fixture(scope="module")
def small_dbl(tmp_path_factory):
    """small_cnn for 1x8x8 digits in 3 fixed blocks."""
    import torch

    from llcompile.models import export

    root = tmp_path_factory.mktemp("parallel")
    torch.manual_seed(0)
    model = export("small_cnn", root / "small_cnn.onnx", input_shape=(1, 8, 8))
    return llcompile.transform(model, "dbl", blocks=3, boundary_policy="fixed").save(root / "dbl")


def _config(**overrides) -> TrainConfig:
    return TrainConfig(**{**dict(data="digits", epochs=2, batch_size=64, lr=0.05, seed=0, threads=1,
                                 data_limit=400), **overrides})


def _assert_same_run(sequential: Path, parallel: Path) -> None:
    """The same weights, optimizer state and metrics, bit for bit (one thread per process)."""
    arrays_a, progress_a = load_checkpoint(sequential / "checkpoint.npz")
    arrays_b, progress_b = load_checkpoint(parallel / "checkpoint.npz")
    assert set(arrays_a) == set(arrays_b)
    for name in arrays_a:
        np.testing.assert_array_equal(arrays_a[name], arrays_b[name], err_msg=name)
    strip = [[{k: v for k, v in r.items() if k not in TIMING} for r in p["history"]] for p in (progress_a, progress_b)]
    assert strip[0] == strip[1]


def test_balance_groups_consecutive_stages_by_cost():
    assert balance([1.0, 1.0, 1.0, 1.0], 2) == [2, 2]
    assert balance([3.0, 1.0, 1.0, 1.0], 2) == [1, 3]
    assert balance([1.0, 1.0, 5.0], 3) == [1, 1, 1]
    assert balance([1.0, 2.0], 3) == [1, 1, 0]  # fewer stages than ranks (after a merge): the last passes on
    assert groups([2, 1, 0]) == [[0, 1], [2], []]


def test_placement_falls_back_to_macs_when_measuring_runs_out_of_memory(small_dbl, monkeypatch):
    import torch

    from llcompile.program.program import Program
    from llcompile.train.epoch import EpochSums, EpochWork
    from llcompile.train.parallel import placement

    def out_of_memory(work):
        raise torch.OutOfMemoryError("no room for a second copy of the stages")

    monkeypatch.setattr(placement, "measure_stage_seconds", out_of_memory)
    program = Program.load(small_dbl)
    work = EpochWork(program, [], None, None, _config(), None, 0, 0, 7, EpochSums())
    costs = placement.stage_costs(work)
    assert len(costs) == 3 and min(costs) > 0
    assert balance(costs, 2) == [2, 1]  # the first block is the cheapest (fewest channels)


@pytest.mark.parametrize("backend", [pytest.param("torch", marks=pytest.mark.slow), "ort"])  # ResNet-20 below: torch
def test_stage_pipeline_equals_the_sequential_run(small_dbl, tmp_path, backend):
    config = _config(backend=backend)
    train(small_dbl, config, tmp_path / "sequential", show_progress=False)
    # ort: as given (rank 0 holds one stage); torch: balanced by measured step times
    options = ParallelOptions(nproc=2, placement=(1, 2) if backend == "ort" else None)
    result = launch(small_dbl, config, tmp_path / "parallel", False, False, False, options)
    _assert_same_run(tmp_path / "sequential", tmp_path / "parallel")
    assert result.trained_model.exists()
    records = [json.loads(line) for line in (tmp_path / "parallel" / "metrics.jsonl").read_text().splitlines()]
    parallel = records[-1]["parallel"]
    assert parallel["mode"] == "stages" and parallel["world_size"] == 2
    assert sum(parallel["placement"], []) == ["block1", "block2", "block3"]
    if backend == "ort":
        assert parallel["placement"] == [["block1"], ["block2", "block3"]]
        assert "block2, block3" in render_text(describe(tmp_path / "parallel"))  # inspect RUN_DIR: the ranks
    ranks = parallel["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and [r["stages"] for r in ranks] == parallel["placement"]
    assert ranks[0]["bytes_sent"] > 0 and ranks[1]["bytes_sent"] == 0
    assert all(r["steps"] == 7 and 0 < r["busy_share"] <= 1 for r in ranks)  # 400 samples in batches of 64


def test_a_head_warming_up_on_another_rank_trains_as_in_the_sequential_run(tmp_path):
    import torch

    from llcompile.models import export

    torch.manual_seed(0)
    model = export("small_cnn", tmp_path / "small_cnn.onnx", input_shape=(1, 8, 8))
    # end to end, then 3 blocks whose 2 new heads train alone for 4 of epoch 2's 7 steps (on both ranks)
    program = llcompile.transform(model, "dbl", boundary_policy="schedule", boundary_schedule="1:1,2:3",
                                  head_warmup=0.5).save(tmp_path / "program")
    config = _config(backend="ort")
    train(program, config, tmp_path / "sequential", show_progress=False)
    launch(program, config, tmp_path / "parallel", False, False, False, ParallelOptions(nproc=2))
    _assert_same_run(tmp_path / "sequential", tmp_path / "parallel")


def test_an_inner_cut_hands_skip_and_branch_to_the_next_rank(resnet_digits_model, tmp_path):
    """ResNet-20 cut inside layer2.0 (--inner-cuts): the joined tensor goes over the wire."""
    cut = "inner_cut./stages/layer2/layer2.0/conv2/conv/Conv"
    program = llcompile.transform(resnet_digits_model, "dbl", cuts=[cut], boundary_policy="fixed",
                                  inner_cuts=True).save(tmp_path / "program")
    config = _config(data_limit=192, epochs=1)
    train(program, config, tmp_path / "sequential", show_progress=False)
    launch(program, config, tmp_path / "parallel", False, False, False, ParallelOptions(nproc=2))
    _assert_same_run(tmp_path / "sequential", tmp_path / "parallel")
    ranks = json.loads((tmp_path / "parallel" / "metrics.jsonl").read_text().splitlines()[-1])["parallel"]["ranks"]
    # per step: a header of 8 int64, the joined [64, 32 + 32, 4, 4] float32 activation and 64 int64 labels
    assert ranks[0]["bytes_sent"] == ranks[0]["steps"] * (8 * 8 + 64 * 64 * 4 * 4 * 4 + 64 * 8)


RESNET_PROGRAMS = {  # both move the program after epoch 1: state regathered by name, placement redone
    "boundaries": ("dbl", dict(blocks=4, boundary_policy="schedule", boundary_schedule="1:4,2:2")),
    # balanced by forward MACs the grown prefix (3 segments) ends between two block cuts, so the cuts change;
    # by training cost the first block cut is at segment 3 and the cut list would stay the same
    "hebbian-prefix": ("dbl-hebbian", dict(blocks=3, start_epoch=2, ramp_epochs=1, max_prefix=3,
                                           balance_by="macs")),
}


@pytest.mark.parametrize("kind", ["boundaries", "hebbian-prefix"])  # most of the time: starting the ranks
def test_resnet20_pipeline_with_a_moving_program_equals_the_sequential_run(resnet_digits_model, tmp_path, kind):
    strategy, options = RESNET_PROGRAMS[kind]
    program = llcompile.transform(resnet_digits_model, strategy, **options).save(tmp_path / "program")
    config = _config(data_limit=192)
    train(program, config, tmp_path / "sequential", show_progress=False)
    launch(program, config, tmp_path / "parallel", False, False, False, ParallelOptions(nproc=2))
    _assert_same_run(tmp_path / "sequential", tmp_path / "parallel")
    records = [json.loads(line) for line in (tmp_path / "parallel" / "metrics.jsonl").open()]
    assert records[0]["cuts"] != records[1]["cuts"]
    for record in records:  # the placement of every epoch holds that epoch's stages, in order
        assert [n for n in sum(record["parallel"]["placement"], []) if n != "hebbian"] == list(record["stages"])
    if kind == "hebbian-prefix":
        assert records[1]["parallel"]["placement"][0][0] == "hebbian"


def _cli(program, run_dir, *extra, epochs: int = 3):
    return [sys.executable, "-m", "llcompile", "train", str(program), "--data", "digits", "--epochs", str(epochs),
            "--batch-size", "32", "--lr", "0.05", "--threads", "1", "--quiet", "--run-dir", str(run_dir), *extra]


def _worker_pid(parent: int, rank: int) -> int | None:
    """The pid of the worker of ``rank`` that the elastic agent in process ``parent`` spawned (in
    rank order; their environment is set after the start, so /proc does not show RANK)."""
    children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(parent)], capture_output=True, text=True).stdout
    workers = sorted(pid for pid in map(int, children.split())
                     if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes())
    return workers[rank] if len(workers) > rank else None


def _stop_after_a_checkpoint(proc: subprocess.Popen, run_dir: Path) -> tuple[int, int]:
    """Once the first epoch's metrics are written, stop rank 1 (SIGSTOP) and wait for the checkpoint
    of the epochs the metrics hold: no epoch completes without rank 1, so that is the last one.
    Returns rank 1's pid and that epoch."""
    start, pid = time.time(), None
    while not (run_dir / "metrics.jsonl").exists():  # the pid found before, so that the stop follows at once
        assert proc.poll() is None and time.time() - start < 300, "the run made no progress"
        pid = pid or _worker_pid(proc.pid, rank=1)
        time.sleep(0.01)
    pid = pid or _worker_pid(proc.pid, rank=1)
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    while True:  # rank 0 may still be writing the checkpoint of the epoch whose metrics it wrote
        epochs = len((run_dir / "metrics.jsonl").read_text().splitlines())
        try:
            if load_checkpoint(run_dir / "checkpoint.npz")[1]["epoch"] == epochs:
                return pid, epochs
        except LLCompileError:
            pass
        assert time.time() - start < 300, "no checkpoint of the metrics' epochs"
        time.sleep(0.05)


# the small CNN in the default run (4 epochs of under a second: the run must outlast the stop); ResNet-20
# (2 s an epoch) and a rank that stops answering (its peer waits out --timeout, then the agent's 30 s grace
# for the stopped process) in the slow set
@pytest.mark.parametrize("program_of, epochs, sent, reported", [
    pytest.param("small_dbl", 4, signal.SIGKILL, "rank 1 failed (killed by SIGKILL)", id="small-killed"),
    pytest.param("resnet_dbl_program", 3, signal.SIGKILL, "rank 1 failed (killed by SIGKILL)",  # as the OOM killer
                 id="resnet-killed", marks=pytest.mark.slow),
    pytest.param("resnet_dbl_program", 3, signal.SIGSTOP,
                 "rank 0 failed (exit code 1: TimeoutError: no answer from another rank within --timeout 10 s",
                 id="resnet-stopped", marks=pytest.mark.slow),
])
def test_a_lost_rank_ends_the_run_and_resume_matches_an_uninterrupted_run(request, tmp_path, program_of, epochs, sent,
                                                                         reported):
    program = request.getfixturevalue(program_of)
    train(program, TrainConfig(data="digits", epochs=epochs, batch_size=32, lr=0.05, threads=1),
          tmp_path / "reference", show_progress=False)  # what _cli runs, in this process
    run_dir = tmp_path / "lost"
    proc = subprocess.Popen(_cli(program, run_dir, "--nproc", "2", "--timeout", "10", epochs=epochs),
                            stderr=subprocess.PIPE, text=True)
    pid, done = _stop_after_a_checkpoint(proc, run_dir)
    before = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    if sent != signal.SIGSTOP:
        os.kill(pid, sent)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and reported in lines[0]
    assert f"the last complete checkpoint is epoch {done} " in lines[0]
    resumed = subprocess.run(_cli(program, run_dir, "--nproc", "2", "--resume", epochs=epochs), capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_run(tmp_path / "reference", run_dir)
    # resumed, not trained again from the start (which the seed would make equal too): the records of
    # the epochs before the loss are kept as written, their measured times included
    assert [json.loads(line) for line in (run_dir / "metrics.jsonl").open()][:done] == before


@pytest.mark.parametrize("backend", ["torch", "ort"])
def test_data_parallel_equals_the_sequential_run_without_batch_statistics(tmp_path, backend):
    """Without BatchNormalization, the mean of the two half-batch gradients the ranks average is
    the full batch's gradient: the weights equal the sequential run's up to float rounding."""
    import torch
    from torch import nn

    from llcompile.models import export

    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    program = llcompile.transform(export(mlp, tmp_path / "mlp.onnx", input_shape=(1, 8, 8)), "bp").save(tmp_path / "bp")
    config = _config(data_limit=256, backend=backend)  # 4 batches of 64 a epoch: every rank's share is 32
    train(program, config, tmp_path / "sequential", show_progress=False)
    result = launch(program, config, tmp_path / "parallel", False, False, False, ParallelOptions(nproc=2))
    arrays_a, _ = load_checkpoint(tmp_path / "sequential" / "checkpoint.npz")
    arrays_b, _ = load_checkpoint(tmp_path / "parallel" / "checkpoint.npz")
    assert set(arrays_a) == set(arrays_b)
    for name in arrays_a:
        np.testing.assert_allclose(arrays_b[name], arrays_a[name], rtol=1e-4, atol=1e-6, err_msg=name)
    parallel = result.history[-1]["parallel"]
    names = [stage["name"] for stage in json.loads((program / "program.json").read_text())["stages"]]
    assert parallel["mode"] == "data" and [r["stages"] for r in parallel["ranks"]] == [names, names]
    # ring all-reduce of the gradients, 2 (N - 1) / N = 1 x their bytes per step for N = 2: the weights and
    # biases of Linear(64, 32) and Linear(32, 10), float32, in 4 steps
    assert [r["bytes_sent"] for r in parallel["ranks"]] == [4 * 4 * (64 * 32 + 32 + 32 * 10 + 10)] * 2


def test_data_parallel_on_ort_trains_what_it_trains_on_torch(tmp_path):
    """A Hebbian prefix and two blocks with BatchNormalization, every rank on half of each batch:
    ORT's gradients averaged by one all-reduce, the Hebbian weights averaged after each update and
    rank 0's running statistics kept give the state DDP gives on torch, to float rounding."""
    import torch

    from llcompile.models import export

    torch.manual_seed(0)
    model = export("small_cnn", tmp_path / "small_cnn.onnx", input_shape=(1, 8, 8))
    program = llcompile.transform(model, "dbl-hebbian", prefix=1, blocks=2, hebbian_lr=0.01)
    hebbian_weight = next(iter(program.stages[0].updates))
    initial = next(onnx.numpy_helper.to_array(tensor) for tensor in program.stages[0].model.graph.initializer
                   if tensor.name == hebbian_weight)
    program = program.save(tmp_path / "program")
    runs = {backend: launch(program, _config(backend=backend, data_limit=256), tmp_path / backend, False, False,
                            False, ParallelOptions(nproc=2, mode="data")) for backend in ("torch", "ort")}
    arrays = {backend: load_checkpoint(tmp_path / backend / "checkpoint.npz")[0] for backend in runs}
    assert set(arrays["torch"]) == set(arrays["ort"])
    for name, value in arrays["torch"].items():
        np.testing.assert_allclose(arrays["ort"][name], value, rtol=1e-3, atol=1e-5, err_msg=name)
    assert np.abs(arrays["ort"][hebbian_weight] - initial).max() > 1e-3  # the prefix learned (100 x the tolerance)
    sent = [[rank["bytes_sent"] for rank in run.history[-1]["parallel"]["ranks"]] for run in runs.values()]
    assert sent[0] == sent[1] and min(sent[0]) > 0  # the same gradients and weights reduced


@pytest.mark.parametrize("reduced, ranks, sent", [(1000, 1, 0), (1000, 2, 1000), (1000, 4, 1500), (1024, 8, 1792)])
def test_ring_allreduce_sends_2_n_minus_1_over_n_of_the_bytes(reduced, ranks, sent):
    assert ring_allreduce_bytes(reduced, ranks) == sent


@pytest.mark.parametrize("options, config, fragment", [
    (ParallelOptions(nproc=2, placement=(1, 1)), {}, "--placement 1,1 does not fit"),
    (ParallelOptions(nproc=2, placement=(0, 3)), {}, "--placement 0,3 does not fit"),
    (ParallelOptions(nproc=4), {}, "needs a stage per rank"),
    (ParallelOptions(nproc=2, mode="data", placement=(1, 2)), {}, "--placement applies to --parallel stages only"),
    (ParallelOptions(nproc=2, mode="data"), {"batch_size": 3}, "fewer than 2 samples per rank"),
])
def test_bad_parallel_options_are_refused_before_any_process_starts(small_dbl, tmp_path, options, config, fragment):
    with pytest.raises(LLCompileError, match=fragment):
        launch(small_dbl, _config(**config), tmp_path / "run", False, False, False, options)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("gpus, fragment", [(0, "no usable CUDA device"), (1, "2 ranks on this machine need 2 CUDA "
                                                                          "devices, it has 1")])
def test_cuda_ranks_need_a_gpu_each_before_any_process_starts(small_dbl, tmp_path, monkeypatch, gpus, fragment):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    with pytest.raises(LLCompileError, match=fragment):
        launch(small_dbl, _config(device="cuda"), tmp_path / "run", False, False, False, ParallelOptions(nproc=2))
    assert not (tmp_path / "run").exists()


def test_bad_parallel_options_on_the_command_line_are_one_line_errors(small_dbl, tmp_path):
    proc = subprocess.run(_cli(small_dbl, tmp_path / "run", "--nproc", "2", "--placement", "2,x"),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "expected stage counts" in proc.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("busy, named", [((20.0, 14.6), True), ((20.0, 19.0), False)])
def test_inspect_names_an_unbalanced_pipeline(busy, named):
    """inspect RUN_DIR says when one rank bounds the pipeline (busy 20 s against a mean of 17.3 s)."""
    ranks = [{"rank": r, "stages": [f"block{r + 1}"], "busy_s": b, "idle_s": 20.5 - b, "busy_share": b / 20.5,
              "bytes_sent": 0, "steps": 10} for r, b in enumerate(busy)]
    epoch = {"epoch": 1, "train_loss": 1.0, "test_acc": 0.5, "epoch_time_s": 20.5, "peak_memory_mb": 100,
             "stages": {"block1": {}, "block2": {}}, "parallel": {"mode": "stages", "world_size": 2,
                                                                  "placement": [["block1"], ["block2"]], "ranks": ranks}}
    text = render_text({"kind": "run", "path": "run", "program": "p", "strategy": "dbl", "options": {},
                        "config": {}, "epochs": [epoch]})
    assert ("busiest rank worked 1.16 x the ranks' mean" in text) is named


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_machines_under_torchrun_equal_the_sequential_run(small_dbl, tmp_path):
    """Two torchrun agents with a static rendezvous, as on two machines (one rank each): rank 0's
    machine writes the whole run, the other machine's run directory is never made."""
    subprocess.run(_cli(small_dbl, tmp_path / "reference"), check=True, timeout=300)
    port = _free_port()
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
                               "--node-rank", str(node), "--master-addr", "127.0.0.1", "--master-port", str(port),
                               "-m", "llcompile", *_cli(small_dbl, tmp_path / f"node{node}")[3:]],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for node in (0, 1)]
    outcomes = [node.communicate(timeout=300) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outcomes
    assert "test accuracy" in outcomes[0][0] and not outcomes[1][0]
    assert not (tmp_path / "node1").exists()
    _assert_same_run(tmp_path / "reference", tmp_path / "node0")
    records = [json.loads(line) for line in (tmp_path / "node0" / "metrics.jsonl").read_text().splitlines()]
    assert len(records[-1]["parallel"]["placement"]) == 2
