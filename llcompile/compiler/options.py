"""The transform options of the strategies, declared once (``llcompile.util.option_spec``).

The boundary policy's and the learning mode's own classes declare theirs; the partition, aux-head
and Hebbian-pass options are declared here. ``llcompile transform``'s flags are generated from
``TRANSFORM_OPTIONS``, in its order; the strategies list which of them they read.
"""

from __future__ import annotations

from dataclasses import dataclass

from llcompile.cost.block_costs import BALANCE_CRITERIA, DEFAULT_BALANCE, ELEMENT_OP_MACS
from llcompile.passes.aux_heads import (AUX_HEAD_KINDS, AUX_LOSSES, DEFAULT_CE_WEIGHT, DEFAULT_CONTRAST_WEIGHT,
                                        DEFAULT_RECON_WEIGHT, DEFAULT_TEMPERATURE, MIN_TEMPERATURE)
from llcompile.passes.ema_head import DEFAULT_EMA_MOMENTUM
from llcompile.passes.hebbian import ACTIVATIONS
from llcompile.passes.hebbian_function import RULES
from llcompile.policies.boundary_policy import BoundaryPolicy
from llcompile.policies.learning_mode import LearningMode
from llcompile.util.option_spec import option, option_specs
from llcompile.util.ramp import Ramp

DEFAULT_DBL_BLOCKS = 4


@dataclass(frozen=True)
class HeadOptions:
    """The blocks of a DBL partition and their aux heads (read by the partition and aux-head passes,
    which check them)."""

    blocks: int | None = option(int, "dbl: number of blocks", minimum=1, default=DEFAULT_DBL_BLOCKS,
                                short_flag="-k")
    cuts: list[str] | None = option(list, "dbl: comma-separated cut-point tensors (see `inspect MODEL`)")
    balance_by: str | None = option(
        str, "dbl: what --blocks balances: forward MACs, the cost model's training MACs, or those plus its element "
             f"ops at {ELEMENT_OP_MACS} MACs each", choices=BALANCE_CRITERIA, default=DEFAULT_BALANCE)
    aux_head: str | None = option(str, "dbl: aux head kind", choices=tuple(AUX_HEAD_KINDS), default="fc")
    aux_depth: float | None = option(float, "augmented aux head: fraction of the later segments it copies",
                                     minimum=0, maximum=1, min_open=True, default=0.1)
    aux_pool: int | None = option(
        int, "aux heads on feature maps: average-pool to P x P instead of globally; token tensors are reduced whole "
             "(refused if every cut point is one)", minimum=1, default_text="global")
    aux_width: float | None = option(float, "conv and dgl aux heads: their conv's channels as a fraction of the "
                                            "block's", minimum=0, maximum=1, min_open=True, default_text="1")
    aux_subsample: int | None = option(
        int, "aux heads: train on every k-th sample of the batch only (about 1/k of their cost)", minimum=1,
        default_text="1, the whole batch")
    aux_loss: str | None = option(
        str, "dbl: each block's local loss: the head's cross-entropy, plus a decoder's reconstruction of the block's "
             "input and/or a supervised contrastive term (InfoPro's two)", choices=tuple(AUX_LOSSES), default="ce")
    aux_recon_weight: float | str | None = option(
        Ramp, "--aux-loss ce+recon: the reconstruction term's weight, or FIRST:LAST from the first block's to the "
              "last aux block's, linear between (InfoPro's per-block weights)", minimum=0,
        default=DEFAULT_RECON_WEIGHT, metavar="W|FIRST:LAST")
    aux_contrast_weight: float | str | None = option(
        Ramp, "--aux-loss with contrast: the supervised contrastive term's weight, or FIRST:LAST as "
              "--aux-recon-weight", minimum=0, default=DEFAULT_CONTRAST_WEIGHT, metavar="W|FIRST:LAST")
    aux_temperature: float | None = option(
        float, "--aux-loss with contrast: the contrastive loss's temperature (from 0.01: a sample's similarity to "
               "itself is masked by a fixed penalty that must dwarf 1 / temperature)", minimum=MIN_TEMPERATURE,
        default=DEFAULT_TEMPERATURE)
    aux_ce_weight: float | str | None = option(
        Ramp, "dbl: the aux heads' cross-entropy weight in each block's loss, or FIRST:LAST as --aux-recon-weight "
              "(InfoPro's ResNet-32 K=4: --aux-ce-weight 0:2 --aux-recon-weight 6:1); a ramp, or 0, needs "
              "--boundary-policy fixed", minimum=0,
        default=DEFAULT_CE_WEIGHT, metavar="W|FIRST:LAST")
    aux_ema_momentum: float | None = option(
        float, "ema aux head: each step its averaged copy of the next segment keeps this share of its weights and "
               "takes the rest from the segment's trained ones", minimum=0, maximum=1, max_open=True,
        default=DEFAULT_EMA_MOMENTUM)
    seed: int | None = option(int, "dbl: seed of the aux-head initialisation", minimum=0, default=0)


@dataclass(frozen=True)
class InnerCutOptions:
    """dbl only: with a Hebbian prefix, the prefix counts segments, which inner cuts would renumber."""

    inner_cuts: bool | None = option(
        bool, "dbl: also cut inside residual units (between a unit's convolutions; the skip and the branch cross "
              "the boundary as one joined tensor): finer blocks to balance, for stage-parallel training",
        default_text="off; see `inspect MODEL`")


@dataclass(frozen=True)
class HebbianOptions:
    """The Hebbian prefix at transform time (read by the partition and Hebbian passes)."""

    prefix: int | None = option(int, "local-sgd, dbl-hebbian: segments in the Hebbian prefix at the start",
                                minimum=0, default_text="0, all on SGD")
    hebbian_rule: str | None = option(str, "local-sgd, dbl-hebbian:", choices=tuple(RULES), default="oja")
    hebbian_activation: str | None = option(
        str, "local-sgd, dbl-hebbian: the y of the rule, before or after BN+activation", choices=tuple(ACTIVATIONS),
        default="post")
    hebbian_subsample: int | None = option(
        int, "local-sgd, dbl-hebbian: the update reads every k-th sample of the batch (k times fewer MACs)",
        minimum=1, default=1)


# the option classes in the order of `llcompile transform --help`
TRANSFORM_OPTIONS = (HeadOptions, InnerCutOptions, BoundaryPolicy, HebbianOptions, LearningMode)

# every transform option's declaration by name
TRANSFORM_OPTION_SPECS = {name: spec for options in TRANSFORM_OPTIONS for name, spec in option_specs(options).items()}
HEAD_OPTIONS = tuple(option_specs(HeadOptions))
BOUNDARY_OPTIONS = tuple(option_specs(BoundaryPolicy))
DBL_OPTIONS = HEAD_OPTIONS + BOUNDARY_OPTIONS
INNER_CUT_OPTIONS = tuple(option_specs(InnerCutOptions))
HEBBIAN_OPTIONS = tuple(option_specs(HebbianOptions))
# read by the runtime (llcompile.policies.learning_mode), recorded in program.json; no pass uses them
LEARNING_MODE_OPTIONS = tuple(option_specs(LearningMode))
