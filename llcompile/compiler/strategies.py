"""Strategies: named pipelines of passes, each with its options and defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import onnx_ir as ir

from llcompile.compiler.options import (BOUNDARY_OPTIONS, DBL_OPTIONS, DEFAULT_DBL_BLOCKS, HEAD_OPTIONS,
                                        HEBBIAN_OPTIONS, INNER_CUT_OPTIONS, LEARNING_MODE_OPTIONS,
                                        TRANSFORM_OPTION_SPECS)
from llcompile.cost.block_costs import DEFAULT_BALANCE, ProgramCompiler, segment_coster
from llcompile.policies.boundary_policy import BoundaryPolicy
from llcompile.errors import OptionError
from llcompile.policies.learning_mode import LearningMode
from llcompile.passes import AuxHeadsPass, HebbianPass, ModelLossPass, PartitionPass
from llcompile.passes.inner_cuts import DropUnusedInnerCutsPass, JoinInnerCutsPass
from llcompile.util.option_names import option_name
from llcompile.util.option_spec import problem
from llcompile.util.ramp import ramp_ends


@dataclass(frozen=True)
class Strategy:
    name: str
    description: str
    # build(compile_program, **options): compile_program is the compiler's own transform, which the
    # partition's block coster compiles a copy of the model with
    build: Callable[..., list[ir.passes.PassBase]]
    options: tuple[str, ...] = ()  # the transform options this strategy reads


def _bp(_compile_program: ProgramCompiler) -> list[ir.passes.PassBase]:
    return [PartitionPass(blocks=1), ModelLossPass()]


def _blocks_with_heads(compile_program: ProgramCompiler, prefix: int, blocks: int | None = None, cuts: list[str] | None = None,
                       balance_by: str | None = None, aux_head: str | None = None, aux_depth: float | None = None,
                       aux_pool: int | None = None, aux_width: float | None = None,
                       aux_subsample: int | None = None, aux_loss: str | None = None,
                       aux_recon_weight: float | str | None = None, aux_ce_weight: float | str | None = None,
                       aux_contrast_weight: float | str | None = None, aux_temperature: float | None = None,
                       aux_ema_momentum: float | None = None,
                       seed: int | None = None) -> tuple[PartitionPass, AuxHeadsPass]:
    """The partition into K DBL blocks (default DEFAULT_DBL_BLOCKS) after ``prefix`` segments, balanced
    by ``balance_by`` (a block's training cost depends on its head), or at ``cuts``; and the pass
    giving them aux heads."""
    heads = {"aux_head": aux_head, "aux_depth": aux_depth, "aux_pool": aux_pool, "aux_width": aux_width,
             "aux_subsample": aux_subsample, "aux_loss": aux_loss, "aux_recon_weight": aux_recon_weight,
             "aux_ce_weight": aux_ce_weight, "aux_contrast_weight": aux_contrast_weight,
             "aux_temperature": aux_temperature, "aux_ema_momentum": aux_ema_momentum, "seed": seed}
    if blocks is None and cuts is None:
        blocks = DEFAULT_DBL_BLOCKS
    coster = segment_coster(balance_by or DEFAULT_BALANCE, {k: v for k, v in heads.items() if v is not None},
                            compile_program)
    return (PartitionPass(blocks=blocks, cuts=cuts, prefix=prefix, coster=coster),
            AuxHeadsPass(kind=aux_head or "fc", seed=seed or 0, depth=aux_depth, pool=aux_pool, width=aux_width,
                         subsample=aux_subsample, loss=aux_loss or "ce", recon_weight=aux_recon_weight,
                         ce_weight=aux_ce_weight, contrast_weight=aux_contrast_weight, temperature=aux_temperature,
                         ema_momentum=aux_ema_momentum))


# the policies that walk every cut point of the model; they do not know the inner ones
POLICIES_OVER_ALL_CUTS = ("progressive", "sliding")


def _check_loss_weights_hold(options: dict, moving: str | None) -> None:
    """Per-block loss weights (a ramp, or a cross-entropy weight of 0) need blocks that stay put: a
    ramp is spread over the blocks a program has, so a run that changes them would change every
    block's weights, and ``adaptive`` judges blocks by their heads' accuracy, which a cross-entropy
    weight of 0 leaves at chance. ``moving`` says what moves the blocks (None: nothing)."""
    if moving is None:
        return
    for name in ("aux_recon_weight", "aux_contrast_weight", "aux_ce_weight"):
        ends = ramp_ends(options[name]) if options.get(name) is not None else None
        if ends is not None and (ends[0] != ends[1] or (name == "aux_ce_weight" and 0 in ends)):
            raise OptionError(f"{option_name(name, options[name])} needs blocks that stay put "
                              f"({option_name('boundary_policy', 'fixed')}): {moving}")


def _dbl(compile_program: ProgramCompiler, inner_cuts: bool = False, **options) -> list[ir.passes.PassBase]:
    policy = BoundaryPolicy.from_options({k: options.pop(k) for k in BOUNDARY_OPTIONS if k in options})
    _check_loss_weights_hold(options, None if policy.boundary_policy == "fixed" else
                             f"the {policy.boundary_policy} policy moves the block boundaries during training")
    partition, aux_heads = _blocks_with_heads(compile_program, 0, **options)
    if not inner_cuts:
        return [partition, aux_heads, ModelLossPass()]
    if policy.boundary_policy in POLICIES_OVER_ALL_CUTS:
        raise OptionError(f"{option_name('inner_cuts')} works with the fixed, schedule and adaptive boundary policies, "
                          f"not {policy.boundary_policy!r}")
    return [JoinInnerCutsPass(), partition, DropUnusedInnerCutsPass(), aux_heads, ModelLossPass()]


def _hebbian_passes(prefix: int | None, hebbian_rule: str | None, hebbian_activation: str | None,
                    hebbian_subsample: int | None, learning_mode: dict) -> tuple[int, HebbianPass]:
    LearningMode.from_options(learning_mode)  # checks the values
    return prefix or 0, HebbianPass(rule=hebbian_rule or "oja", activation=hebbian_activation or "post",
                                    subsample=hebbian_subsample or 1)


def _local_sgd(_compile_program: ProgramCompiler, prefix: int | None = None, hebbian_rule: str | None = None, hebbian_activation: str | None = None,
               hebbian_subsample: int | None = None, **learning_mode) -> list[ir.passes.PassBase]:
    prefix, hebbian = _hebbian_passes(prefix, hebbian_rule, hebbian_activation, hebbian_subsample, learning_mode)
    return [PartitionPass(blocks=1, prefix=prefix), hebbian, ModelLossPass()]


def _dbl_hebbian(compile_program: ProgramCompiler, prefix: int | None = None, hebbian_rule: str | None = None, hebbian_activation: str | None = None,
                 hebbian_subsample: int | None = None, **options) -> list[ir.passes.PassBase]:
    heads = {k: options.pop(k) for k in HEAD_OPTIONS if k in options}
    BoundaryPolicy.from_options({k: options.pop(k) for k in BOUNDARY_OPTIONS if k in options})
    _check_loss_weights_hold(heads, "dbl-hebbian's growing Hebbian prefix takes blocks during training")
    prefix, hebbian = _hebbian_passes(prefix, hebbian_rule, hebbian_activation, hebbian_subsample, options)
    partition, aux_heads = _blocks_with_heads(compile_program, prefix, **heads)
    return [partition, hebbian, aux_heads, ModelLossPass()]


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("bp", "end-to-end backpropagation: one stage trained with the model's own loss", _bp),
    Strategy("dbl", f"block-wise local learning: K blocks (default {DEFAULT_DBL_BLOCKS}) at cut points, "
                    "each trained by its own aux head; no error crosses a block boundary", _dbl,
             DBL_OPTIONS + INNER_CUT_OPTIONS),
    Strategy("local-sgd", "LoCal+SGD: a forward-only Hebbian prefix of --prefix segments (growing during training "
                          "by the learning mode), the rest trained end to end by the model's loss", _local_sgd,
             HEBBIAN_OPTIONS + LEARNING_MODE_OPTIONS),
    Strategy("dbl-hebbian", f"a forward-only Hebbian prefix followed by K DBL blocks (default "
                            f"{DEFAULT_DBL_BLOCKS}) with aux heads", _dbl_hebbian,
             HEBBIAN_OPTIONS + LEARNING_MODE_OPTIONS + DBL_OPTIONS),
)}


def boundary_policy_of(strategy: str, options: dict) -> BoundaryPolicy | None:
    """The boundary policy of a program's options; None for a strategy without blocks."""
    if "boundary_policy" not in get_strategy(strategy).options:
        return None
    return BoundaryPolicy.from_options(options)


def learning_mode_of(strategy: str, options: dict) -> LearningMode | None:
    """The learning-mode settings of a program's options; None for a strategy without a prefix."""
    if "prefix" not in get_strategy(strategy).options:
        return None
    return LearningMode.from_options(options)


def check_options(name: str, options: dict) -> dict:
    """The options of strategy ``name`` that are given (not None), each of a type and in a range its
    declaration allows; options the strategy does not take are refused."""
    strategy = get_strategy(name)
    given = {k: v for k, v in options.items() if v is not None}
    foreign = sorted(set(given) - set(strategy.options))
    if foreign:
        flags = ", ".join(option_name(k) for k in foreign)
        raise OptionError(f"strategy {name!r} takes no {flags}")
    for key, value in given.items():
        message = problem(key, TRANSFORM_OPTION_SPECS[key], value)
        if message:
            raise OptionError(message)
    return given


def build_pipeline(name: str, compile_program: ProgramCompiler, **options) -> list[ir.passes.PassBase]:
    """The passes of strategy ``name`` with its options (``check_options``). ``compile_program`` is
    ``llcompile.transform``, for a partition balanced by training cost."""
    return get_strategy(name).build(compile_program, **check_options(name, options))


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise OptionError(f"unknown strategy {name!r}; available: {', '.join(STRATEGIES)}") from None
