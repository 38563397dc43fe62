"""What changes between epochs: the Hebbian prefix (LoCal+SGD) and the block boundaries (DBL).

``ProgramController`` composes the prefix controller (``train.prefix_control``, by the learning
mode) and the boundary controller (``train.boundary_control``, by the boundary policy), and hands
the loop the program for them (re-emitted with ``recompile`` when they move). Its state is plain
JSON, kept in checkpoints, so a resumed run decides exactly as the uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx_ir as ir

from llcompile.analysis.structure import analyze
from llcompile.compiler.transform import recompile
from llcompile.cost.cost_model import cost_program
from llcompile.policies.boundary_policy import BoundaryPolicy
from llcompile.policies.learning_mode import LearningMode
from llcompile.policies.settling import per_unit_lr
from llcompile.program.plan import StageKind
from llcompile.program.program import Program
from llcompile.train.boundary_control import BoundaryControlState, BoundaryController
from llcompile.train.prefix_control import PrefixControlState, PrefixController

ACTIVATION_BATCH = 128  # kept activations grow linearly with the batch: any size gives the same shares


def update_norms(before: dict[str, np.ndarray], after: dict[str, np.ndarray], weights: dict[str, str]) -> dict:
    """``||W_after - W_before|| / ||W_before||`` per layer; ``weights`` maps layer -> weight name."""
    norms = {}
    for layer, weight in weights.items():
        if weight in before and weight in after:
            old = before[weight].astype(np.float64)
            norms[layer] = float(_norm(after[weight] - old) / max(_norm(old), 1e-30))
    return norms


def _norm(values: np.ndarray) -> float:
    # numpy's pairwise sum, not np.linalg.norm: BLAS's dot sums in an order that depends on its
    # thread count, and the norms decide program moves, which must not depend on how many
    # processes or threads a run has
    return float(np.sqrt(np.sum(np.square(values))))


def _block_cuts(program: Program) -> list[str]:
    """The boundaries between the blocks trained by gradient (the end of a Hebbian prefix is none)."""
    return [s.input for s in program.stages if s.kind != StageKind.HEBBIAN][1:]


def _key(changes: dict) -> str:
    """The cache key of a program re-emitted with these option ``changes``."""
    return json.dumps(changes, sort_keys=True)


def _from_json(state_class, state: dict):
    """A controller state dataclass from its keys of a checkpoint's controller state (those missing:
    written before they existed, their defaults)."""
    names = {f.name for f in dataclasses.fields(state_class)}
    return state_class(**{k: v for k, v in state.items() if k in names})


class ProgramController:
    """Between epochs: the Hebbian prefix (LoCal+SGD's learning mode, ``learning``) and the block
    boundaries (DBL's boundary policy, ``boundaries``) the next epoch trains with; the program for
    them, re-emitted when either moves. Its state is plain JSON, kept in checkpoints."""

    def __init__(self, program: Program, learning: LearningMode | None, boundaries: BoundaryPolicy | None,
                 state: dict | None = None):
        self.base = dataclasses.replace(program, stages=[])  # what recompile reads; its stages' weights are not kept
        self.learning = learning
        analysis = analyze(ir.from_proto(program.eval_model))
        # the transition layer of prefix p: the first layer of segment p
        self.transition_layers = [segment.layers[0] for segment in analysis.segments]
        initial_prefix = program.options.get("prefix", 0)
        self.prefixes = PrefixController(learning, _from_json(PrefixControlState, state) if state
                                         else PrefixControlState(initial_prefix))
        self.boundaries = BoundaryController(analysis, _block_cuts(program), boundaries,
                                             _from_json(BoundaryControlState, state) if state else None)
        self.moved: dict = state["moved"] if state else {}  # what moved at this epoch's start, for its record
        # only the program in force: a program holds a copy of the model's weights, so keeping every
        # one the run visited grew its memory with each move (docs/results.md)
        self._current = (_key({"prefix": initial_prefix, **self.boundaries.initial_options()}), program)
        self._activation_peaks: dict[str, int] = {}

    @property
    def prefix(self) -> int:
        """The Hebbian prefix in force, in segments."""
        return self.prefixes.state.prefix

    def state(self) -> dict:
        """The controller state for a checkpoint, keys in the order of the checkpoints written before
        the prefix and the boundaries had a controller each."""
        boundaries = dataclasses.asdict(self.boundaries.state)
        return {**dataclasses.asdict(self.prefixes.state), "entry": boundaries.pop("entry"), "moved": self.moved,
                **boundaries}

    def program(self) -> Program:
        options = self.boundaries.options_for(self.prefix)
        key = _key({"prefix": self.prefix, **options})
        if key != self._current[0]:
            changes = {"prefix": self.prefix} if self.learning is not None else {}
            changes.update(options)
            self._current = (key, recompile(self.base, **changes))
        return self._current[1]

    def begin_epoch(self, epoch: int) -> bool:
        """Set the prefix and boundaries of 1-based ``epoch``; whether the program changed."""
        old_cuts = _block_cuts(self.program())
        transition = self.prefixes.begin_epoch(epoch)
        if transition is not None:
            self.moved["transition"] = transition
        reason = self.boundaries.begin_epoch(epoch)
        if reason is not None:
            self.moved["boundaries"] = {"reason": reason}
        new_cuts = _block_cuts(self.program())
        if new_cuts == old_cuts:
            self.moved.pop("boundaries", None)
        else:
            self.moved.setdefault("boundaries", {"reason": "the Hebbian prefix moved"})
            self.moved["boundaries"].update({"from": old_cuts, "to": new_cuts})
        warmup = self.boundaries.start_warmups(epoch, old_cuts, new_cuts)
        if warmup is not None:
            self.moved["boundaries"]["head_warmup"] = warmup
        return transition is not None or reason is not None

    def warming_cuts(self, epoch: int, step: int, steps_per_epoch: int) -> set[str]:
        """The cuts whose aux head still trains alone at ``step`` of 0-based ``epoch`` (``head_warmup``)."""
        return self.boundaries.warming_cuts(epoch, step, steps_per_epoch)

    def hebbian_lr(self, lr: float, base_lr: float) -> float:
        """The localized rate at a step whose SGD rate is ``lr`` (peak ``base_lr``)."""
        return self.prefixes.hebbian_lr(lr, base_lr)

    def hebbian_updates_at(self, step: int) -> bool:
        """Whether the localized weights are updated at 0-based global ``step`` (``hebbian_every``)."""
        return self.prefixes.hebbian_updates_at(step)

    def end_epoch(self, epoch: int, norm_history: list[dict[str, float]], train_losses: list[float],
                  stage_metrics: dict[str, dict], lr_means: list[float]) -> dict:
        """After 1-based ``epoch``, given every epoch's update norms, training loss and mean learning
        rate so far (this one last) and this epoch's loss and accuracy per stage: the dynamic
        decisions and the weak supervision for the next epoch; the fields this adds to the epoch's
        metrics record."""
        record: dict = {"cuts": self.program().cuts}
        if "boundaries" in self.moved:
            record["boundary_change"] = self.moved["boundaries"]
        if "transition" in self.moved:
            record["transition"] = self.moved["transition"]
        self.moved = {}
        if self.boundaries.from_signals:
            record["boundary_signals"] = self.boundaries.end_epoch(
                epoch, self.prefix, per_unit_lr(norm_history, lr_means), self.program().stages, stage_metrics,
                self._activation_share)
        record.update(self.prefixes.end_epoch(epoch, norm_history, train_losses, lr_means, self.transition_layers))
        return record

    def _activation_share(self, cuts: list[str]) -> float:
        """The cost model's peak of activations kept for backward with these block ``cuts`` (and the
        current prefix), as a fraction of the end-to-end program's."""
        def peak(**changes) -> int:
            key = _key(changes)
            if key not in self._activation_peaks:
                program = recompile(self.base, **changes)
                self._activation_peaks[key] = cost_program(program, ACTIVATION_BATCH).activation_peak_bytes
            return self._activation_peaks[key]

        prefix = {"prefix": self.prefix} if self.learning is not None else {}
        trained = [c for c in cuts if self.boundaries.segment_of_cut[c] > self.prefix]
        return peak(**prefix, blocks=None, cuts=trained) / max(peak(prefix=0, blocks=None, cuts=[]), 1)
