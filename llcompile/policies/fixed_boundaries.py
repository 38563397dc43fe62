"""The ``fixed`` and ``schedule`` boundary policies: boundaries known before the run."""

from __future__ import annotations

from llcompile.policies.boundary_decision import BoundaryRule, BoundaryState, Decision


class FixedBoundaries(BoundaryRule):
    """The boundaries never move."""

    def decide(self, state: BoundaryState) -> Decision | None:
        return None


class ScheduledBoundaries(BoundaryRule):
    """From each entry's epoch on, the entry's boundaries (``--boundary-schedule``)."""

    def decide(self, state: BoundaryState) -> Decision | None:
        """When an epoch begins: the entry in force (None before the first: the program's own)."""
        entry = None if state.ended else self.options.entry_for(state.epoch)
        if entry is None:
            return None
        return Decision(entry=entry, reason=f"schedule: {entry.describe()} from epoch {entry.epoch}")
