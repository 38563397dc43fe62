"""The anchor baseline of stage-parallel training: plain backprop of a zoo model (the torch module,
not llcompile's program) pipelined over processes with torch.distributed.pipelining (GPipe or 1F1B),
gloo on CPU, launched with torch's launcher (`python -m torch.distributed.run --standalone`).

    ./dev bench pipelining_bp [--model resnet20|vgg11_bn] [--nproc 2] [--schedule gpipe|1f1b]
                              [--micro-batches 4] [--threads 1] [--epochs 1] [--limit 2000]

The model's blocks (its children in order, containers opened: ResNet's stem, each residual block
and the head; VGG's conv+BN+ReLU units and pools) are grouped into --nproc consecutive stages that
balance the forward+backward time each block takes here (measured once before training, on one
micro-batch). The batches are llcompile's (BatchLoader, seed 0, full batches only): rank 0 feeds
the images, the last rank the labels of the same steps. SGD nesterov, momentum 0.9, weight decay
5e-4, cosine learning rate per step: llcompile train's defaults. After the epochs the stages'
weights are gathered on rank 0, which measures test accuracy. Prints (and with --out writes) JSON:
images/s per epoch, the split, the bytes each rank sends per step.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from local_sgd_cifar10 import SHARED_ZIP
from strategies_cifar10 import DEFAULT_LR  # peak SGD learning rate per model (VGG-11-BN: 0.01)

SCHEDULES = ("gpipe", "1f1b")
INPUT_SHAPE = (3, 32, 32)  # CIFAR-10


def blocks_of(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's blocks in the order it runs them: its children, with every plain nn.Sequential
    that holds containers opened (a stage of residual blocks, VGG's feature list), recursively."""
    blocks = []
    for name, child in model.named_children():
        if type(child) is nn.Sequential and any(len(list(c.children())) for c in child.children()):
            blocks += [(f"{name}.{inner}", module) for inner, module in blocks_of(child)]
        else:
            blocks.append((name, child))
    return blocks


def block_times(blocks: list[nn.Module], x: torch.Tensor, repeats: int = 3) -> list[float]:
    """Median seconds of each block's forward + backward (dX and dW) on ``x``, blocks run in order."""
    times = [[] for _ in blocks]
    for _ in range(repeats + 1):  # the first round warms up
        activation = x
        for i, block in enumerate(blocks):
            inputs = activation.detach().requires_grad_(i > 0)
            start = time.perf_counter()
            out = block(inputs)
            out.backward(torch.ones_like(out))
            times[i].append(time.perf_counter() - start)
            activation = out
    return [statistics.median(t[1:]) for t in times]


def split(model: nn.Module, stages: int, micro_batch: int) -> list[list[str]]:
    """Block names per stage: consecutive groups with the smallest slowest-stage time."""
    from llcompile.passes.partition import min_max_partition

    named = blocks_of(copy.deepcopy(model))  # profiling updates BN statistics: not on the model trained
    seconds = block_times([m for _, m in named], torch.randn(micro_batch, *INPUT_SHAPE))
    groups = min_max_partition(len(named), stages, lambda a, b: sum(seconds[a:b + 1]))
    return [[named[i][0] for i in range(a, b + 1)] for a, b in groups]


def worker(args) -> None:
    """One rank (started by torch.distributed.run): train its stage, report from rank 0."""
    import torch.distributed as dist
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    from llcompile.data import BatchLoader, load_dataset
    from llcompile.models import build
    from llcompile.train.lr_schedule import learning_rate

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build(args.model)
    plan = [split(model, world, args.batch_size // args.micro_batches) if rank == 0 else None]
    dist.broadcast_object_list(plan, src=0)
    placement = plan[0]
    blocks = dict(blocks_of(model))
    stage_module = nn.Sequential(*(blocks[name] for name in placement[rank]))
    # static shapes: left to infer them, the stage runs its module once on an uninitialised tensor, in
    # training mode, which can put garbage into the BatchNorm running statistics of its first layer
    shapes = stage_output_shapes(placement, blocks)
    micro_batch = args.batch_size // args.micro_batches
    stage = PipelineStage(stage_module, rank, world, torch.device("cpu"),
                          input_args=torch.empty(micro_batch, *(shapes[rank - 1] if rank else INPUT_SHAPE),
                                                 requires_grad=rank > 0),  # the gradient goes back
                          output_args=torch.empty(micro_batch, *shapes[rank], requires_grad=True))
    schedule_class = ScheduleGPipe if args.schedule == "gpipe" else Schedule1F1B
    schedule = schedule_class(stage, n_microbatches=args.micro_batches, loss_fn=nn.functional.cross_entropy)
    optimizer = torch.optim.SGD(stage_module.parameters(), lr=args.lr, momentum=0.9, nesterov=True,
                                weight_decay=5e-4)
    dataset = load_dataset(args.data, INPUT_SHAPE, 10, limit=args.limit)
    steps = len(BatchLoader(dataset, "train", args.batch_size, 0, 0, drop_last=True))
    sent = bytes_sent_per_step(shapes, args.batch_size)
    epochs = []
    for epoch in range(args.epochs):
        stage_module.train()
        dist.barrier()
        start = time.perf_counter()
        loader = BatchLoader(dataset, "train", args.batch_size, 0, epoch, drop_last=True)
        losses: list[torch.Tensor] = []  # the last rank's, one per micro-batch
        inputs = iter(loader) if rank == 0 else None  # rank 0 reads the images, the last rank only the labels
        for step in range(steps):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate("cosine", args.lr, epoch * steps + step, args.epochs * steps)
            optimizer.zero_grad(set_to_none=True)
            images = (torch.from_numpy(next(inputs)[0]),) if rank == 0 else ()
            target = {}
            if rank == world - 1:
                rows = loader.order[step * args.batch_size:(step + 1) * args.batch_size]
                target = {"target": torch.from_numpy(dataset.train_y[rows].astype("int64")), "losses": losses}
            schedule.step(*images, **target)
            optimizer.step()
        dist.barrier()
        seconds = time.perf_counter() - start
        train_loss = [float(torch.stack(losses).detach().mean()) if losses else None]
        dist.broadcast_object_list(train_loss, src=world - 1)
        epochs.append({"epoch": epoch + 1, "epoch_time_s": seconds, "images_per_s": steps * args.batch_size / seconds,
                       "train_loss": train_loss[0],
                       "test_acc": _test_accuracy(model, placement, stage_module, dataset, args, rank)})
    if rank == 0:
        text = json.dumps({"model": args.model, "schedule": args.schedule, "nproc": world, "threads": args.threads,
                           "micro_batches": args.micro_batches, "batch_size": args.batch_size, "lr": args.lr,
                           "steps_per_epoch": steps, "placement": placement, "bytes_sent_per_step": sent,
                           "epochs": epochs})
        if args.out:
            Path(args.out).write_text(text + "\n")
        print(text)
    dist.destroy_process_group()


def stage_output_shapes(placement: list[list[str]], blocks: dict[str, nn.Module]) -> list[tuple[int, ...]]:
    """Per-sample shape of each stage's output (a forward of one sample through copies in eval mode)."""
    shapes = []
    with torch.no_grad():
        activation = torch.zeros(1, *INPUT_SHAPE)
        for names in placement:
            for name in names:
                activation = copy.deepcopy(blocks[name]).eval()(activation)
            shapes.append(tuple(activation.shape[1:]))
    return shapes


def bytes_sent_per_step(shapes: list[tuple[int, ...]], batch: int) -> list[int]:
    """Bytes each rank sends per step: the activation leaving its stage forward and the gradient of
    its input backward, float32 (the micro-batches add up to the batch)."""
    elements = [math.prod(shape) for shape in shapes]
    last = len(shapes) - 1
    return [4 * batch * ((elements[r] if r < last else 0) + (elements[r - 1] if r > 0 else 0))
            for r in range(len(shapes))]


def _test_accuracy(model: nn.Module, placement: list[list[str]], stage_module: nn.Module, dataset, args,
                   rank: int) -> float | None:
    """Gather every stage's weights on rank 0 and evaluate the whole model there; None elsewhere."""
    import torch.distributed as dist

    from llcompile.data import BatchLoader

    states = [None] * len(placement) if rank == 0 else None
    dist.gather_object(stage_module.state_dict(), states, dst=0)
    if rank != 0:
        return None
    blocks = dict(blocks_of(model))
    for names, state in zip(placement, states):  # the blocks are the model's own modules
        nn.Sequential(*(blocks[name] for name in names)).load_state_dict(state)
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in BatchLoader(dataset, "test", args.batch_size, 0, 0):
            correct += int((model(torch.from_numpy(x)).argmax(1).numpy() == y).sum())
            total += len(y)
    return correct / total


def launch(args) -> dict:
    """Run the pipeline in --nproc processes with torch's launcher; rank 0's JSON summary."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                   str(args.nproc), __file__, "--worker", "--out", str(out), *_worker_flags(args)]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode != 0 or not out.exists():
            raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-4000:]}")
        return json.loads(out.read_text())


def _worker_flags(args) -> list[str]:
    flags = ["--model", args.model, "--schedule", args.schedule, "--micro-batches", str(args.micro_batches),
             "--threads", str(args.threads), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
             "--data", args.data, "--lr", str(args.lr)]
    return flags + (["--limit", str(args.limit)] if args.limit else [])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--schedule", choices=SCHEDULES, default="gpipe")
    p.add_argument("--micro-batches", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="torch threads per process")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--data", default=f"cifar10:{SHARED_ZIP}")
    p.add_argument("--limit", type=int, default=2000, help="samples per split (0: all)")
    p.add_argument("--lr", type=float, help="peak SGD learning rate [default: 0.1; VGG-11-BN 0.01]")
    p.add_argument("--out", help="also write the JSON summary here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p


def main() -> None:
    args = parser().parse_args()
    args.limit = args.limit or None
    args.lr = args.lr or DEFAULT_LR.get(args.model, 0.1)
    if args.batch_size % args.micro_batches:
        raise SystemExit("--batch-size must be a multiple of --micro-batches")
    if args.worker:
        worker(args)
        return
    summary = launch(args)
    if args.out:
        Path(args.out).write_text(json.dumps(summary) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
