"""Strategies: named pipelines of passes, each with its options and defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import onnx_ir as ir

from llcompile.errors import LLCompileError
from llcompile.passes import AuxHeadsPass, ModelLossPass, PartitionPass

DEFAULT_DBL_BLOCKS = 4


@dataclass(frozen=True)
class Strategy:
    name: str
    description: str
    build: Callable[..., list[ir.passes.PassBase]]
    options: tuple[str, ...] = ()  # the transform options this strategy reads


def _bp() -> list[ir.passes.PassBase]:
    return [PartitionPass(blocks=1), ModelLossPass()]


def _dbl(blocks: int | None = None, cuts: list[str] | None = None, aux_head: str | None = None,
         seed: int | None = None) -> list[ir.passes.PassBase]:
    if blocks is None and cuts is None:
        blocks = DEFAULT_DBL_BLOCKS
    return [PartitionPass(blocks=blocks, cuts=cuts), AuxHeadsPass(kind=aux_head or "fc", seed=seed or 0), ModelLossPass()]


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("bp", "end-to-end backpropagation: one stage trained with the model's own loss", _bp),
    Strategy("dbl", f"block-wise local learning: K blocks (default {DEFAULT_DBL_BLOCKS}) at cut points, "
                    "each trained by its own aux head; no error crosses a block boundary", _dbl,
             ("blocks", "cuts", "aux_head", "seed")),
)}


def build_pipeline(name: str, **options) -> list[ir.passes.PassBase]:
    """The passes of strategy ``name``; options it does not take (other than None) are refused."""
    strategy = get_strategy(name)
    given = {k: v for k, v in options.items() if v is not None}
    foreign = sorted(set(given) - set(strategy.options))
    if foreign:
        flags = ", ".join("--" + k.replace("_", "-") for k in foreign)
        raise LLCompileError(f"strategy {name!r} takes no {flags}")
    return strategy.build(**given)


def get_strategy(name: str) -> Strategy:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise LLCompileError(f"unknown strategy {name!r}; available: {', '.join(STRATEGIES)}") from None
