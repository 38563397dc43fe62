"""DBL's dynamic block boundaries: which blocks each epoch trains with.

The DBL paper moves block boundaries during training but does not publish its rule; llcompile
offers its own policies (docs/strategies.md), recorded in program.json, applied by the
runtime between epochs (the program is re-emitted; parameters, BN statistics, optimizer state
and aux heads carry over by name, an aux head whose cut becomes a boundary again resumes):

- ``fixed``: the boundaries never move (greedy block-wise training; with ``--aux-head conv`` the
  DGL-style baseline).
- ``schedule``: an explicit list of changes, ``--boundary-schedule "EPOCH:SPEC,..."``; SPEC is a
  block count K (boundaries balanced by the program's ``--balance-by``) or cut tensors joined by
  ``+``; from the entry's (1-based) epoch on, until the next entry. E.g. ``"1:4,4:2"``: four
  blocks, then two from epoch 4; ``"1:1,3:4"``: end to end for two epochs, then four blocks.
- ``adaptive``: the boundaries given at transform time (``--blocks``/``--cuts``) are the
  candidates; after every epoch one may be removed or restored from per-block signals
  (``llcompile.policies.adaptive_boundaries``, thresholds ``merge_gain``, ``settle_threshold``,
  ``min_blocks``, ``boundary_patience``, ``activation_budget``).
- ``progressive`` and ``sliding`` move boundaries over *all* cut points, not only the initial ones
  (``llcompile.policies.moving_boundaries``): ``progressive`` starts with the transform-time blocks (many
  small ones: ``--blocks`` up to the number of segments) and merges the earliest boundary whose
  block has settled; ``sliding`` moves the earliest boundary whose block has settled one cut point
  toward the output. Both read ``settle_threshold``, ``min_blocks``, ``boundary_patience`` and
  ``activation_budget``.

An aux head that appears during the run (a schedule entry or a sliding move adds its boundary,
adaptive restores one) starts untrained, or parked since its boundary left and stale, and its first
gradients would rewrite a block that was already trained (docs/results.md#issue14-schedules).
``head_warmup`` gives it that many epochs alone first: its block's weights are held (no update, no
momentum, no weight decay) while the head trains on the block's output, and a block held in an
epoch is not judged settled from that epoch's update norms. ``fixed`` and ``progressive`` never
add a boundary and refuse it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from llcompile.errors import LLCompileError
from llcompile.util.option_names import option_name
from llcompile.util.option_spec import DeclaredOptions, check_values, option, option_specs

POLICIES = ("fixed", "schedule", "adaptive", "progressive", "sliding")
ADDING_POLICIES = ("schedule", "adaptive", "sliding")  # those that may add a boundary during the run
_MOVING = ("settle_threshold", "min_blocks", "boundary_patience", "activation_budget")
# the thresholds each policy that decides from signals reads (docs/strategies.md says why their defaults)
POLICY_SETTINGS = {"adaptive": ("merge_gain", *_MOVING), "progressive": _MOVING, "sliding": _MOVING}


@dataclass(frozen=True)
class ScheduleEntry:
    epoch: int
    blocks: int | None = None
    cuts: tuple[str, ...] | None = None

    def options(self) -> dict:
        """The transform options of this entry (the other way of giving boundaries cleared)."""
        return {"blocks": self.blocks, "cuts": None} if self.blocks is not None else {
            "blocks": None, "cuts": list(self.cuts)}

    def describe(self) -> str:
        return f"{self.blocks} blocks" if self.blocks is not None else "cuts " + ", ".join(self.cuts)


@dataclass(frozen=True)
class BoundaryPolicy(DeclaredOptions):
    """The boundary policy's options. The thresholds (``POLICY_SETTINGS``) are None unless given:
    a policy that does not read one refuses it; ``setting`` resolves its default."""

    boundary_policy: str = option(str, "dbl, dbl-hebbian: how block boundaries move during training",
                                  field_default="adaptive", choices=POLICIES)  # measured: docs/results.md#boundaries
    boundary_schedule: str | None = option(
        str, "schedule policy: from each (1-based) EPOCH on, K blocks or these cuts, e.g. 1:4,4:2",
        metavar="EPOCH:K|CUT+CUT,...")
    merge_gain: float | None = option(
        float, "adaptive: merge a boundary whose next block's head gains less training accuracy than this",
        default=0.01, minimum=-1, maximum=1)
    settle_threshold: float | None = option(
        float, "adaptive, progressive, sliding: layers have settled (adaptive restores a boundary, the others "
               "move one) when they move less than this fraction of their peak ||dW||/||W|| per epoch per unit "
               "learning rate", default=0.5, minimum=0, maximum=1, min_open=True)
    min_blocks: int | None = option(int, "adaptive, progressive, sliding: never merge below this", default=2,
                                    minimum=1)
    boundary_patience: int | None = option(
        int, "adaptive: epochs a merged boundary stays merged at least; progressive, sliding: epochs between "
             "two moves at least", default=2, minimum=1)
    activation_budget: float | None = option(
        float, "adaptive, progressive, sliding: move only while the peak of activations kept for backward stays "
               "within this fraction of end-to-end backprop's (cost model)", default=0.7, minimum=0, maximum=1,
        min_open=True)
    head_warmup: float = option(
        float, "schedule, adaptive, sliding: an aux head that appears during the run trains alone for this "
               "many epochs, its block's weights held, before its loss updates the block", field_default=0.0,
        minimum=0, metavar="EPOCHS")

    def __post_init__(self) -> None:
        check_values(self)
        if (self.boundary_policy == "schedule") != (self.boundary_schedule is not None):
            raise LLCompileError(f"{option_name('boundary_schedule')} goes with "
                                 f"{option_name('boundary_policy', 'schedule')}, and it needs one")
        allowed = POLICY_SETTINGS.get(self.boundary_policy, ())
        given = [name for name in SETTING_DEFAULTS if getattr(self, name) is not None and name not in allowed]
        if given:
            flags = ", ".join(option_name(name) for name in given)
            readers = [p for p, names in POLICY_SETTINGS.items() if all(n in names for n in given)]
            raise LLCompileError(f"{flags} go(es) with {option_name('boundary_policy')} {' or '.join(readers)}")
        if self.head_warmup and self.boundary_policy not in ADDING_POLICIES:
            raise LLCompileError(f"{option_name('head_warmup')} goes with {option_name('boundary_policy')} "
                                 f"{', '.join(ADDING_POLICIES)} (the policies that add a boundary during the run)")
        self.entries()  # checks the schedule's syntax

    def to_json(self) -> dict:
        """The policy with the settings it reads resolved (the others left out)."""
        allowed = POLICY_SETTINGS.get(self.boundary_policy, ())
        unread = {*SETTING_DEFAULTS, *(() if self.boundary_policy in ADDING_POLICIES else ("head_warmup",))}
        return {**{k: v for k, v in asdict(self).items() if k not in unread}, **{k: self.setting(k) for k in allowed}}

    def setting(self, name: str):
        """The value of threshold ``name``, its default when not given."""
        value = getattr(self, name)
        return SETTING_DEFAULTS[name] if value is None else value

    def entries(self) -> list[ScheduleEntry]:
        if self.boundary_schedule is None:
            return []
        entries = []
        for item in self.boundary_schedule.split(","):
            epoch_text, _, spec = item.strip().partition(":")
            try:
                epoch = int(epoch_text)
            except ValueError:
                epoch = 0
            if epoch < 1 or not spec:
                raise LLCompileError(f"{option_name('boundary_schedule')} entry {item.strip()!r}: expected EPOCH:K or "
                                     "EPOCH:CUT+CUT with EPOCH >= 1")
            if spec.isdigit():
                if int(spec) < 1:
                    raise LLCompileError(f"{option_name('boundary_schedule')} entry {item.strip()!r}: K must be >= 1")
                entries.append(ScheduleEntry(epoch, blocks=int(spec)))
            else:
                entries.append(ScheduleEntry(epoch, cuts=tuple(c for c in spec.split("+") if c)))
        epochs = [e.epoch for e in entries]
        if epochs != sorted(set(epochs)):
            raise LLCompileError(f"{option_name('boundary_schedule')}: epochs must increase, got "
                                 f"{', '.join(map(str, epochs))}")
        return entries

    def entry_for(self, epoch: int) -> ScheduleEntry | None:
        """The schedule entry in force at 1-based ``epoch`` (None before the first: the program's own)."""
        current = None
        for entry in self.entries():
            if entry.epoch <= epoch:
                current = entry
        return current


# the default of each threshold, from its declaration
SETTING_DEFAULTS = {name: spec.default for name, spec in option_specs(BoundaryPolicy).items()
                    if name in POLICY_SETTINGS["adaptive"]}
