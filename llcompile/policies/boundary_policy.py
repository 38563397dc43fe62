"""DBL's dynamic block boundaries: which blocks each epoch trains with.

The DBL paper moves block boundaries during training but its rule is not public
(``../shared/ALGORITHMS.md``); llcompile offers policies, recorded in program.json, applied by the
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

from dataclasses import asdict, dataclass, fields

from llcompile.errors import LLCompileError

POLICIES = ("fixed", "schedule", "adaptive", "progressive", "sliding")
# the thresholds of the policies that decide from signals, and their defaults (docs/strategies.md says why)
SETTING_DEFAULTS = {"merge_gain": 0.01, "settle_threshold": 0.5, "min_blocks": 2, "boundary_patience": 2,
                    "activation_budget": 0.7}
_MOVING = ("settle_threshold", "min_blocks", "boundary_patience", "activation_budget")
# the thresholds each policy reads
POLICY_SETTINGS = {"adaptive": tuple(SETTING_DEFAULTS), "progressive": _MOVING, "sliding": _MOVING}
ADDING_POLICIES = ("schedule", "adaptive", "sliding")  # those that may add a boundary during the run


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
class BoundaryPolicy:
    boundary_policy: str = "adaptive"  # chosen by measurement: docs/results.md#boundaries
    boundary_schedule: str | None = None
    # the policies of POLICY_SETTINGS only (None: the default in SETTING_DEFAULTS)
    merge_gain: float | None = None  # adaptive: merge a boundary whose next block gains less accuracy than this
    settle_threshold: float | None = None  # layers have settled below this x their peak update norm per unit lr
    min_blocks: int | None = None  # never merge below this many blocks
    boundary_patience: int | None = None  # adaptive: epochs a merged boundary stays merged at least; others:
    # epochs between two moves at least
    activation_budget: float | None = None  # no merge above this x bp's peak of kept activations
    head_warmup: float = 0.0  # epochs a head new to the run trains alone before its block learns from it

    def __post_init__(self) -> None:
        if self.boundary_policy not in POLICIES:
            raise LLCompileError(f"--boundary-policy must be one of {', '.join(POLICIES)}")
        if (self.boundary_policy == "schedule") != (self.boundary_schedule is not None):
            raise LLCompileError("--boundary-schedule goes with --boundary-policy schedule, and it needs one")
        allowed = POLICY_SETTINGS.get(self.boundary_policy, ())
        given = [name for name in SETTING_DEFAULTS if getattr(self, name) is not None and name not in allowed]
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            readers = [p for p, names in POLICY_SETTINGS.items() if all(n in names for n in given)]
            raise LLCompileError(f"{flags} go(es) with --boundary-policy {' or '.join(readers)}")
        checks = [(self.merge_gain is None or -1 <= self.merge_gain <= 1, "--merge-gain must be in [-1, 1]"),
                  (self.settle_threshold is None or 0 < self.settle_threshold <= 1,
                   "--settle-threshold must be in (0, 1]"),
                  (self.min_blocks is None or self.min_blocks >= 1, "--min-blocks must be >= 1"),
                  (self.boundary_patience is None or self.boundary_patience >= 1,
                   "--boundary-patience must be >= 1"),
                  (self.activation_budget is None or 0 < self.activation_budget <= 1,
                   "--activation-budget must be in (0, 1]"),
                  (self.head_warmup >= 0, "--head-warmup must be >= 0"),
                  (not self.head_warmup or self.boundary_policy in ADDING_POLICIES,
                   f"--head-warmup goes with --boundary-policy {', '.join(ADDING_POLICIES)} (the policies "
                   "that add a boundary during the run)")]
        for ok, message in checks:
            if not ok:
                raise LLCompileError(message)
        self.entries()  # checks the schedule's syntax

    @classmethod
    def from_options(cls, options: dict) -> BoundaryPolicy:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in options.items() if k in names and v is not None})

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
                raise LLCompileError(f"--boundary-schedule entry {item.strip()!r}: expected EPOCH:K or "
                                     "EPOCH:CUT+CUT with EPOCH >= 1")
            if spec.isdigit():
                if int(spec) < 1:
                    raise LLCompileError(f"--boundary-schedule entry {item.strip()!r}: K must be >= 1")
                entries.append(ScheduleEntry(epoch, blocks=int(spec)))
            else:
                entries.append(ScheduleEntry(epoch, cuts=tuple(c for c in spec.split("+") if c)))
        epochs = [e.epoch for e in entries]
        if epochs != sorted(set(epochs)):
            raise LLCompileError(f"--boundary-schedule: epochs must increase, got {', '.join(map(str, epochs))}")
        return entries

    def entry_for(self, epoch: int) -> ScheduleEntry | None:
        """The schedule entry in force at 1-based ``epoch`` (None before the first: the program's own)."""
        current = None
        for entry in self.entries():
            if entry.epoch <= epoch:
                current = entry
        return current
