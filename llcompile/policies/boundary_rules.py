"""The boundary policies by name (``--boundary-policy``)."""

from __future__ import annotations

from llcompile.policies.adaptive_boundaries import AdaptiveBoundaries
from llcompile.policies.boundary_decision import BoundaryRule
from llcompile.policies.boundary_policy import BoundaryPolicy
from llcompile.policies.fixed_boundaries import FixedBoundaries, ScheduledBoundaries
from llcompile.policies.moving_boundaries import ProgressiveBoundaries, SlidingBoundaries

BOUNDARY_RULES: dict[str, type[BoundaryRule]] = {
    "fixed": FixedBoundaries, "schedule": ScheduledBoundaries, "adaptive": AdaptiveBoundaries,
    "progressive": ProgressiveBoundaries, "sliding": SlidingBoundaries}


def boundary_rule(options: BoundaryPolicy) -> BoundaryRule:
    """The policy that ``options`` name, with them."""
    return BOUNDARY_RULES[options.boundary_policy](options)
