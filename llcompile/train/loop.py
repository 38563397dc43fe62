"""The training run: feed batches through the stages in order, evaluate, log, checkpoint.

Determinism: the batches and their augmentation are a pure function of (seed, epoch, step), and
torch's RNG is re-seeded from (seed, epoch, step, stage) before every stage's step (``step.py``),
so a run resumed from any checkpoint continues exactly as the uninterrupted one would have, and
a parallel run (``parallel/``), whose ranks share the work through a ``Team``, equals this one.
"""

from __future__ import annotations

import json
import shutil
import time
from itertools import islice
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir
import torch

from llcompile.analysis.structure import analyze
from llcompile.util.atomic import atomic_write_text
from llcompile.backends import make_backend
from llcompile.backends.base import Backend, TrainableStage
from llcompile.data import BatchLoader, Dataset, load_dataset
from llcompile.data.dataset import Splits, fit_to_program
from llcompile.errors import LLCompileError
from llcompile.util.paths import inside
from llcompile.program.program import Program
from llcompile.compiler.strategies import boundary_policy_of, learning_mode_of
from llcompile.train.checkpoint import load_checkpoint, save_checkpoint
from llcompile.train.precise_bn import precise_batch_statistics
from llcompile.train.config import TrainConfig
from llcompile.train.export import save_trained_model
from llcompile.train.interrupt import DeferredInterrupt
from llcompile.train.memory import PeakMemoryMonitor, release_freed_memory
from llcompile.train.metrics import write_metrics
from llcompile.train.progress import EpochProgress, print_epoch
from llcompile.train.epoch import EpochSums, EpochWork, T, Team
from llcompile.train.step import step_lr, train_stage
from llcompile.train.transition import ProgramController, update_norms
from llcompile.util.option_names import option_name

CHECKPOINT = "checkpoint.npz"
EPOCH_START = "epoch_start/"  # checkpoint arrays: the layer weights when the epoch began
RUN_FILE = "run.json"
TRAINED_MODEL = "trained_model.onnx"


class TrainingInterrupted(LLCompileError):
    exit_code = 130


class SingleProcess:
    """Every stage in this process, in order."""

    writes = True

    def share(self, compute: Callable[[], T]) -> T:
        return compute()

    def train_epoch(self, work: EpochWork, interrupt: DeferredInterrupt, show_progress: bool) -> int | None:
        return _train_epoch(work, interrupt, show_progress)

    def test_accuracy(self, stages: list[TrainableStage], backend: Backend, dataset: Dataset,
                      batch_size: int) -> float:
        return evaluate(stages, backend, dataset, batch_size)

    def describe(self) -> dict:
        return {}

    def interrupt(self) -> DeferredInterrupt:
        return DeferredInterrupt()


@dataclass
class RunResult:
    run_dir: Path
    history: list[dict]
    trained_model: Path

    @property
    def test_accuracy(self) -> float:
        return self.history[-1]["test_acc"]


def train(program_dir: str | Path, config: TrainConfig, run_dir: str | Path, resume: bool = False,
          force: bool = False, show_progress: bool = True, team: Team | None = None,
          data: Splits | None = None) -> RunResult:
    """Train the program in ``program_dir``; everything the run writes goes to ``run_dir`` (from
    ``team``'s writing process only; by default the run is this one process). The data is what
    ``config.data`` names, or ``data`` (splits a caller holds, ``llcompile.fit``)."""
    team = team or SingleProcess()
    program = Program.load(program_dir)
    learning_mode = learning_mode_of(program.strategy, program.options)
    boundaries = boundary_policy_of(program.strategy, program.options)
    run_dir = Path(run_dir)
    if config.threads:
        torch.set_num_threads(config.threads)
    # everything that can fail on bad input comes before the run directory is touched
    input_shape = tuple(program.input["shape"][1:])
    dataset = (load_dataset(config.data, input_shape, program.num_classes, config.data_limit) if data is None else
               fit_to_program(config.data, data.head(config.data_limit), input_shape, program.num_classes))
    if len(dataset.train_y) < 2:
        raise LLCompileError(f"the training split has {len(dataset.train_y)} sample(s); training needs at least 2")
    backend = make_backend(config.backend, config.device, config.torch_mode, config.threads)
    stages = backend.build(program, config.optimizer)
    arrays, progress = team.share(lambda: _prepare_run_dir(run_dir, program_dir, config, resume, force))
    controller = None
    if learning_mode is not None or boundaries is not None:
        controller = ProgramController(program, learning_mode, boundaries, progress.get("controller"))
    if controller is not None and controller.program() is not program:  # resumed with other boundaries
        program = controller.program()
        stages = backend.build(program, config.optimizer)
    # every state entry seen so far: an aux head or optimizer slot left out of the current program
    # (its boundary moved away) is kept here, and resumes if its boundary comes back
    carried = {k: v for k, v in arrays.items() if not k.startswith(EPOCH_START)}
    for stage in stages:
        stage.load_state(carried)
    carried = parked(carried, stages)
    layer_weights = _layer_weights(program)  # every program of the run has the same eval model
    epoch_start = _weights(layer_weights, {k.removeprefix(EPOCH_START): v for k, v in arrays.items()
                                           if k.startswith(EPOCH_START)})
    steps_per_epoch = len(train_loader(dataset, config, epoch=0))
    history: list[dict] = progress["history"]
    with team.interrupt() as interrupt:
        for epoch in range(progress["epoch"], config.epochs):
            # a new epoch; one a Ctrl-C stopped (with its sums) has begun, even at step 0: its controller
            # state already holds this epoch's moves, and beginning it again would lose their record
            if progress["sums"] is None:
                if controller is not None and controller.begin_epoch(epoch + 1):
                    carried.update(merged_state(stages))
                    stages = work = None  # the old stages' tensors are freed before the new ones are built
                    program = controller.program()
                    stages = backend.build(program, config.optimizer)
                    carried.update(_new_head_copies(program, carried))
                    for stage in stages:
                        stage.load_state(carried)
                    carried = parked(carried, stages)
                    release_freed_memory()
                epoch_start = _weights(layer_weights, merged_state(stages))
            sums = EpochSums(**progress["sums"]) if progress["sums"] else EpochSums()
            start_step = progress["step"]
            work = EpochWork(program, stages, backend, dataset, config, controller, epoch, start_step,
                             steps_per_epoch, sums)
            stopped_at = team.train_epoch(work, interrupt, show_progress)
            if stopped_at is not None:
                progress = {"epoch": epoch, "step": stopped_at, "sums": sums.__dict__, "history": history}
                _save(run_dir, merged_state(stages), carried, progress, controller, epoch_start)
                raise TrainingInterrupted(
                    f"interrupted at epoch {epoch + 1} step {stopped_at}; checkpoint saved, continue with "
                    f"{option_name('resume')}")
            if config.precise_bn:  # before the evaluation and the checkpoint, so the trained model has them
                statistics = team.share(lambda: precise_batch_statistics(
                    stages, program, backend, islice(train_loader(dataset, config, epoch), config.precise_bn)))
                for stage in stages:
                    stage.load_state(statistics)
            test_acc = team.test_accuracy(stages, backend, dataset, config.batch_size)
            record = {**_epoch_record(program, config, epoch, steps_per_epoch, sums, test_acc), **team.describe(),
                      # the batches the BN statistics were recomputed over before the evaluation (0: none)
                      "precise_bn_batches": min(config.precise_bn, steps_per_epoch)}
            state = merged_state(stages)
            norms = update_norms(epoch_start, state, layer_weights)
            if controller is not None:
                losses = [r["train_loss"] for r in history] + [record["train_loss"]]
                norm_history = [r["update_norms"] for r in history] + [norms]
                lr_means = [r.get("lr_mean", r["lr"]) for r in history] + [record["lr_mean"]]
                record.update(controller.end_epoch(epoch + 1, norm_history, losses, record["stages"], lr_means))
            record["update_norms"] = norms
            history.append(record)
            progress = {"epoch": epoch + 1, "step": 0, "sums": None, "history": history}
            if team.writes:
                write_metrics(run_dir, history)
                _save(run_dir, state, carried, progress, controller)
            if show_progress:
                print_epoch(record)
    if team.writes:
        save_trained_model(program, merged_state(stages), run_dir / TRAINED_MODEL)
    return RunResult(run_dir=run_dir, history=history, trained_model=run_dir / TRAINED_MODEL)


def _train_epoch(work: EpochWork, interrupt: DeferredInterrupt, show_progress: bool) -> int | None:
    """Train from ``work.start_step`` to the end of the epoch, adding to ``work.sums``; return None,
    or the step at which a Ctrl-C stopped it (that step not yet taken)."""
    config, sums = work.config, work.sums
    loader = train_loader(work.dataset, config, work.epoch, work.start_step)
    shown = progress_bar(work, show_progress)
    started = time.perf_counter() - sums.seconds
    with PeakMemoryMonitor(config.device) as memory:
        for step, (x, labels) in enumerate(loader, start=work.start_step):
            if interrupt.requested:
                break
            lr = step_lr(config, work.epoch, step, work.steps_per_epoch)
            activation, batch_labels = work.backend.to_batch(x, labels)
            for index, (stage, plan) in enumerate(zip(work.stages, work.program.stages)):
                activation, loss, correct = train_stage(work, stage, index, activation, batch_labels, lr, step)
                if plan.updates is None:
                    sums.add(stage.name, loss, correct, len(labels))
            work.after_step()
            sums.samples += len(labels)
            show_step(shown, step, sums, work.stages[-1].name, started, lr)
        else:
            step = None
        sums.seconds = time.perf_counter() - started
        sums.peak_memory_bytes = max(sums.peak_memory_bytes, memory.peak_bytes())
    shown.close()
    return step


def progress_bar(work: EpochWork, show: bool) -> EpochProgress:
    return EpochProgress(work.epoch + 1, work.config.epochs, work.steps_per_epoch, work.start_step, show)


def show_step(shown: EpochProgress, step: int, sums: EpochSums, final: str, started: float, lr: float) -> None:
    """After ``step``: the final stage's running loss and accuracy (when this process trains it and
    counts the samples), the images per second and the learning rate."""
    held = final in sums.loss and sums.samples
    shown.step(step, sums.loss[final] / sums.samples if held else None,
               sums.correct[final] / sums.samples if held else None,
               sums.samples / max(time.perf_counter() - started, 1e-9), lr)


def train_loader(dataset: Dataset, config: TrainConfig, epoch: int, start_step: int = 0) -> BatchLoader:
    # a last batch of one sample cannot train BatchNormalization (one value per channel): drop it
    drop_last = len(dataset.train_y) % config.batch_size == 1
    return BatchLoader(dataset, "train", config.batch_size, config.seed, epoch, start_step=start_step,
                       drop_last=drop_last)


def evaluate(stages: list[TrainableStage], backend: Backend, dataset: Dataset, batch_size: int) -> float:
    """Top-1 accuracy of the final head on the test split (BN on running statistics)."""
    correct = total = 0
    for x, labels in BatchLoader(dataset, "test", batch_size, seed=0, epoch=0):
        activation, _ = backend.to_batch(x, labels)
        for stage in stages:
            activation = stage.forward(activation)
        predictions = backend.to_numpy(activation).reshape(len(labels), -1).argmax(1)
        correct += int((predictions == labels).sum())
        total += len(labels)
    return correct / max(total, 1)


def _epoch_record(program: Program, config: TrainConfig, epoch: int, steps_per_epoch: int, sums: EpochSums,
                  test_acc: float) -> dict:
    n = max(sums.samples, 1)
    final = program.stages[-1].name
    per_stage = {s.name: {"loss": sums.loss[s.name] / n, "acc": sums.correct[s.name] / n}
                 for s in program.stages if s.updates is None}
    return {
        "epoch": epoch + 1,
        "lr": step_lr(config, epoch, steps_per_epoch - 1, steps_per_epoch),
        "lr_mean": float(np.mean([step_lr(config, epoch, step, steps_per_epoch) for step in range(steps_per_epoch)])),
        "train_loss": per_stage[final]["loss"],
        "train_acc": per_stage[final]["acc"],
        "test_acc": test_acc,
        "stages": per_stage,
        "epoch_time_s": sums.seconds,
        "images_per_s": sums.samples / max(sums.seconds, 1e-9),
        "peak_memory_mb": sums.peak_memory_bytes / 2**20,
    }


def merged_state(stages: list[TrainableStage]) -> dict[str, np.ndarray]:
    state: dict[str, np.ndarray] = {}
    for stage in stages:
        state.update(stage.state())
    return state


def parked(carried: dict[str, np.ndarray], stages: list[TrainableStage]) -> dict[str, np.ndarray]:
    """The entries of ``carried`` that no stage holds (a parked head, its optimizer slots): the
    stages' own state is their copy, taken again when the program changes."""
    held = set(merged_state(stages))
    return {name: value for name, value in carried.items() if name not in held}


def _new_head_copies(program: Program, carried: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """An augmented aux head new to the run starts as a copy of the current (trained) weights of the
    segments it copies, as it would have been compiled from them; a head seen before resumes."""
    return {copy: carried[original] for stage in program.stages if stage.head
            for copy, original in (stage.head.copied_from or {}).items()
            if copy not in carried and original in carried}


def _weights(layer_weights: dict[str, str], state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The layers' weights in ``state`` (what the update norms compare)."""
    names = set(layer_weights.values())
    return {name: value.copy() for name, value in state.items() if name in names}


def _layer_weights(program: Program) -> dict[str, str]:
    """Layer name -> its weight initializer, for every layer of the program's model."""
    return {layer.name: layer.weight for layer in analyze(ir.from_proto(program.eval_model)).layers}


def _save(run_dir: Path, state: dict[str, np.ndarray], carried: dict[str, np.ndarray], progress: dict,
          controller: ProgramController | None, epoch_start: dict[str, np.ndarray] | None = None) -> None:
    """A checkpoint of the stages' ``state`` over what earlier programs left; mid-epoch it also
    keeps the weights at the epoch's start (for update norms)."""
    arrays = {**carried, **state}
    if epoch_start is not None:
        arrays.update({EPOCH_START + name: value for name, value in epoch_start.items()})
    if controller is not None:
        progress = {**progress, "controller": controller.state()}
    save_checkpoint(run_dir / CHECKPOINT, arrays, progress)


def _prepare_run_dir(run_dir: Path, program_dir, config: TrainConfig, resume: bool,
                     force: bool) -> tuple[dict[str, np.ndarray], dict]:
    """Create or check the run directory; return the checkpoint to start from (empty when new)."""
    run_record = {"program": str(Path(program_dir).resolve()),
                  "program_json": (Path(program_dir) / "program.json").read_text(), "config": config.to_json()}
    try:
        if resume:
            arrays, progress = _resumable_checkpoint(run_dir, program_dir, config, run_record)
        else:
            arrays, progress = {}, {"epoch": 0, "step": 0, "sums": None, "history": []}
            if run_dir.exists() and any(run_dir.iterdir()):
                if not force:
                    raise LLCompileError(
                        f"{run_dir} already holds a run (use {option_name('resume')} to continue it or "
                        f"{option_name('force')} to replace it)")
                shutil.rmtree(run_dir)
            run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / RUN_FILE, json.dumps(run_record, indent=2))
    except OSError as exc:
        raise LLCompileError(f"cannot use {run_dir} as the run directory: {exc.strerror or exc}") from None
    return arrays, progress


def _resumable_checkpoint(run_dir: Path, program_dir, config: TrainConfig,
                          run_record: dict) -> tuple[dict[str, np.ndarray], dict]:
    checkpoint, run_file = inside(run_dir, CHECKPOINT, "the checkpoint"), inside(run_dir, RUN_FILE, "the run file")
    if not checkpoint.exists():
        raise LLCompileError(f"{run_dir}: no checkpoint to resume from")
    try:
        previous = json.loads(run_file.read_text())
        # through TrainConfig: a setting added since the run was written reads as its default
        previous_program = previous["program_json"]
        previous_config = TrainConfig.from_json(previous["config"]).to_json()
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        raise LLCompileError(f"{run_dir}: {RUN_FILE} is missing or damaged; cannot resume") from None
    if previous_program != run_record["program_json"]:
        raise LLCompileError(f"{run_dir} was trained from another program; cannot resume with {program_dir}")
    changed = sorted(k for k, v in run_record["config"].items()
                     if previous_config.get(k) != v and k not in TrainConfig.RESUMABLE_CHANGES)
    if changed:
        raise LLCompileError(f"cannot resume with other settings: {', '.join(changed)} "
                             f"differ(s) from the run's (only {option_name('epochs')}, {option_name('threads')} and "
                             f"{option_name('precise_bn')} may change)")
    arrays, progress = load_checkpoint(checkpoint)
    if config.epochs < progress["epoch"]:
        raise LLCompileError(f"the run has already trained {progress['epoch']} epochs; "
                             f"{option_name('epochs', config.epochs)} is fewer")
    return arrays, progress
