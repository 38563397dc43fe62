"""LoCal+SGD's learning-mode selection: where the Localized->SGD transition sits, epoch by epoch.

The transition point is a number of leading *segments* (``prefix``): those are localized
(Hebbian, forward-only), everything after is trained by gradient. All layers start on SGD and
the prefix only grows. The paper's scheduler shapes, dynamic criterion and weak-supervision
function are not published; these are llcompile's, each a named
option with its default documented in docs/strategies.md.

- ``static``: a scheduler function of the epoch (``linear``, ``step``, ``exp`` saturation)
  from ``start_epoch`` up to ``max_prefix`` over ``ramp_epochs``.
- ``dynamic``: after every epoch, the transition moves past the transition layer (the first SGD
  layer) when that layer has settled: its relative update norm over the epoch,
  ``||W_end - W_start|| / ||W_start||``, per unit of the epoch's mean learning rate, has fallen below
  ``update_threshold`` times its own peak (``llcompile.policies.settling``, the test the ``adaptive`` boundary
  policy uses); and on past the following ones while they have settled too, at most
  ``prefix_step`` segments per epoch. A rising norm is not settled, and neither is a norm that only
  fell because the schedule lowered the rate.
- weak supervision (``loss-trend``): the localized learning rate is multiplied by ``lr_decay`` for
  the next epoch when the epoch's training loss rose over the previous one, and restored toward
  1 (x 1/lr_decay, at most 1) when it fell; ``none`` keeps the factor at 1. The rate also follows the
  SGD learning-rate schedule (``hebbian_lr * lr(t) / base_lr * factor``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from llcompile.errors import LLCompileError
from llcompile.policies.settling import layers_settled, per_unit_lr
from llcompile.util.option_spec import DeclaredOptions, check_values, option
from llcompile.util.option_names import option_name

MODES = ("static", "dynamic")
SCHEDULES = ("linear", "step", "exp")
WEAK_SUPERVISION = ("loss-trend", "none")
# default share of the forward MACs that may be localized: the rest stays on SGD
DEFAULT_MAX_LOCALIZED_MACS = 0.5


@dataclass(frozen=True)
class LearningMode(DeclaredOptions):
    """The learning mode's options (read by the runtime, recorded in program.json)."""

    learning_mode: str = option(str, "How the prefix grows between epochs: a schedule of the epoch, or the "
                                     "transition layer's update norms", field_default="static", choices=MODES)
    schedule: str = option(str, "static: shape of the prefix over epochs", field_default="linear",
                           choices=SCHEDULES)
    start_epoch: int = option(int, "First epoch with a Hebbian prefix", field_default=2, minimum=1)  # 1-based
    ramp_epochs: int = option(int, "static: epochs from --start-epoch to the maximum prefix", field_default=2,
                              minimum=1)
    max_prefix: int | None = option(int, "Largest prefix, in segments", minimum=0,
                                    default_text="the longest with at most half the forward MACs")
    update_threshold: float = option(
        float, "dynamic: a layer has settled when its ||dW||/||W|| per epoch, per unit of the epoch's mean "
               "learning rate, is below this fraction of its peak", field_default=0.5, minimum=0, maximum=1,
        min_open=True)
    prefix_step: int = option(int, "dynamic: most segments the transition moves per epoch", field_default=2,
                              minimum=1)
    hebbian_lr: float = option(float, "Localized learning rate at the SGD schedule's peak; it follows that "
                                      "schedule", field_default=1e-4, minimum=0)  # measured: docs
    # the localized weights are updated at every k-th step (the others: forward only); 4 measured: as
    # accurate as every step (both level with a frozen prefix), 1.55x bp's step speed instead of 1.29x
    hebbian_every: int = option(int, "Update the localized weights at every k-th step only; the other steps run "
                                     "the prefix forward", field_default=4, minimum=1)
    weak_supervision: str = option(str, "loss-trend: scale the localized rate down when the training loss rises",
                                   field_default="loss-trend", choices=WEAK_SUPERVISION)
    lr_decay: float = option(float, "loss-trend: the factor per rising epoch", field_default=0.5, minimum=0,
                             maximum=1, min_open=True)

    def __post_init__(self) -> None:
        check_values(self)

    def to_json(self) -> dict:
        return asdict(self)

    def resolved(self, segment_macs: list[int]) -> LearningMode:
        """With ``max_prefix`` set: the default from the segments' forward MACs, and never more
        than leaves one segment on SGD."""
        limit = len(segment_macs) - 1
        if self.max_prefix is not None:
            if self.max_prefix > limit:
                raise LLCompileError(f"{option_name('max_prefix', self.max_prefix)} leaves no layer on SGD: this model "
                                     f"has {len(segment_macs)} segments, so at most {limit}")
            return self
        total, running, best = sum(segment_macs), 0, 0
        for count, macs in enumerate(segment_macs[:limit], start=1):
            running += macs
            if running <= DEFAULT_MAX_LOCALIZED_MACS * total:
                best = count
        return LearningMode(**{**asdict(self), "max_prefix": best})


def static_prefix(mode: LearningMode, epoch: int) -> int:
    """The prefix of 1-based ``epoch`` under the static scheduler (``mode`` resolved)."""
    if epoch < mode.start_epoch:
        return 0
    progress = (epoch - mode.start_epoch + 1) / mode.ramp_epochs
    if mode.schedule == "linear":
        fraction = min(progress, 1.0)
    elif mode.schedule == "step":  # half the maximum for the first half of the ramp, then all of it
        fraction = 0.5 if progress <= 0.5 else 1.0
    else:  # exponential saturation: 95 % of the maximum at the end of the ramp
        fraction = 1.0 - math.exp(-3.0 * progress)
    # halves round up (Python's round() sends 2.5 to 2 but 4.5 to 4: an uneven ramp)
    return min(mode.max_prefix, max(1, math.floor(fraction * mode.max_prefix + 0.5)))


def dynamic_prefix(mode: LearningMode, epoch: int, current: int, norm_history: list[dict[str, float]],
                   lr_means: list[float], transition_layers: list[str]) -> tuple[int, str]:
    """The prefix for 1-based ``epoch``, given every layer's relative update norm in each epoch so
    far (``norm_history``, oldest first), each epoch's mean learning rate (``lr_means``) and the
    transition layer of each prefix; and why.

    The transition layer has *settled* when its latest norm per unit of learning rate is below
    ``update_threshold`` times the largest it had (``settling.layers_settled``); the transition then
    moves past it, and on past the next ones while they have settled too, at most ``prefix_step``
    segments per epoch and never beyond ``max_prefix``. Relative to each layer's own peak, the rule
    depends neither on the learning-rate scale nor, per unit of rate, on its schedule.
    """
    if epoch < mode.start_epoch:
        return current, "before the start epoch"
    per_lr = per_unit_lr(norm_history, lr_means)
    prefix, reasons = current, []
    while prefix < mode.max_prefix and prefix - current < mode.prefix_step:
        layer = transition_layers[prefix]
        norms = [record[layer] for record in per_lr if layer in record]
        if not norms:
            break
        share = norms[-1] / max(norms) if max(norms) > 0 else 0.0
        if not layers_settled([layer], per_lr, mode.update_threshold):
            if not reasons:
                reasons.append(f"{layer} still learning (update norm per unit lr at {share:.2f} of its peak)")
            break
        reasons.append(f"{layer} at {share:.2f} of its peak update norm per unit lr")
        prefix += 1
    if prefix >= mode.max_prefix and not reasons:
        reasons.append("at the maximum prefix")
    return prefix, "; ".join(reasons) or "no update norms yet"


def weak_supervision_factor(mode: LearningMode, factor: float, losses: list[float]) -> float:
    """The localized-rate factor for the next epoch, from the epochs' training losses so far."""
    if mode.weak_supervision == "none" or len(losses) < 2:
        return factor
    if losses[-1] > losses[-2]:
        return factor * mode.lr_decay
    return min(1.0, factor / mode.lr_decay)
