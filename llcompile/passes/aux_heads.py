"""Give every non-final block an auxiliary classifier head and a local loss."""

from __future__ import annotations

import zlib

import numpy as np
import onnx_ir as ir

from llcompile.analysis.structure import analyze, parameter_roles
from llcompile.errors import LLCompileError
from llcompile.passes.augmented_head import DEFAULT_AUX_DEPTH, check_depth, copy_segments, select_segments
from llcompile.passes.ema_head import DEFAULT_EMA_MOMENTUM, add_ema_copies
from llcompile.frontend.canonical.dynamic_batch import BATCH_DIM
from llcompile.frontend.graph_builder import (GraphBuilder, add_cross_entropy, add_loss_output, labels_input,
                                             subsample_batch, uniform_fan_in, value_named)
from llcompile.ops.contrastive import contrastive_function, contrastive_loss_node
from llcompile.ops.hebbian import DOMAIN as CONTRAST_DOMAIN, DOMAIN_VERSION as CONTRAST_DOMAIN_VERSION
from llcompile.passes.reconstruction import reconstructable, reconstruction_error
from llcompile.program.plan import HeadPlan, StageKind, require_plan
from llcompile.analysis.readout import CLASS_TOKEN, Readout, is_token_tensor, model_readout
from llcompile.frontend.pass_pipeline import LLCompilePass
from llcompile.util.option_names import option_name
from llcompile.util.ramp import ramp_at, ramp_ends, ramp_value

HEAD_PREFIX = "aux@"
DGL_HIDDEN = 128  # the dgl head's MLP width, as DGL's and InfoPro's CIFAR heads
CONTRAST_DIM = 128  # the contrastive projection's width: InfoPro's aux_net_feature_dim
CONV_HEADS = ("conv", "dgl")  # the heads that start with a conv-BN-ReLU on a feature map
AUX_HEAD_KINDS = {
    "fc": "GlobalAveragePool -> Flatten -> Gemm(C -> classes): the small FC head of DBL (a token tensor: "
          "its class token or mean, as the model's head reads it)",
    "conv": "1x1 Conv + BN + ReLU -> pool -> MLP(C -> C -> classes): DGL's MLP-SR style head",
    "dgl": f"3x3 stride-2 Conv(C -> C) + BN + ReLU -> pool -> MLP(C -> {DGL_HIDDEN} -> classes): the conv head "
           "DGL and InfoPro train blocks with",
    "augmented": "copies of the model's own later segments (--aux-depth of them) -> pool -> Gemm: AugLocal style",
    "ema": "the next segment twice, with exponentially averaged weights (no gradient) plus a learned copy, summed "
           "-> pool -> Gemm: MAN style",
}

AUX_LOSSES = {
    "ce": "softmax cross-entropy of the head's logits",
    "ce+recon": "cross-entropy plus --aux-recon-weight x the mean squared error of a small decoder from the "
                "block's output back to its input (InfoPro's reconstruction term)",
    "ce+contrast": f"cross-entropy plus --aux-contrast-weight x a supervised contrastive loss of a "
                   f"{CONTRAST_DIM}-d projection of the head's features (InfoPro's contrastive term)",
    "ce+contrast+recon": "all three terms",
}
DEFAULT_RECON_WEIGHT = 1.0
DEFAULT_CE_WEIGHT = 1.0
DEFAULT_CONTRAST_WEIGHT = 1.0
DEFAULT_TEMPERATURE = 0.07  # InfoPro's code, and SupCon's CIFAR setting
MIN_TEMPERATURE = 0.01  # 1 / T stays far below the loss's self-similarity penalty (ops/contrastive.py)


def is_feature_map(value: ir.Value) -> bool:
    """``[N, C, spatial...]``: what ``pool`` pools (not a token tensor, not a vector)."""
    return value.shape is not None and value.shape.rank() > 2 and not is_token_tensor(value)


class AuxHeadsPass(LLCompilePass):
    """For each block but the last: head on the block's output, softmax cross-entropy loss.

    A head is named after the tensor it reads (``aux@<cut>.fc.weight``), not after its block: when
    the runtime moves block boundaries, a head at a cut that was a boundary before is the same
    head, and resumes from its state. Its weights are drawn like torch's defaults from a generator
    seeded by ``seed`` and the cut's name, so the same options always give the same program.

    ``augmented`` (``passes/augmented_head.py``): copies of the model's own later segments, with
    their current weights, then the pooling and a fresh classifier; ``depth`` (default 0.1) is the
    fraction of the later segments it copies. The head records the segments in ``segments``.

    ``ema`` (``passes/ema_head.py``): the next segment twice, an averaged copy that no gradient
    trains (the stage's buffers; the runtime moves it towards the segment's trained weights by
    ``ema_momentum`` after every step) and a learned one, summed, then the ``fc`` read-out. The head
    records which weights each averaged one follows in ``ema``.

    ``pool`` P (any head): average-pool a spatial activation to P x P (each spatial size divided
    by P; they must divide) instead of pooling it globally, so the classifier sees where features
    are: its Gemm reads C * P^2 values. A token tensor is always reduced whole: a head that pools
    records ``pool`` in its entry, one on tokens does not, and a model whose every cut point is a
    token tensor (or a vector) is refused. ``width`` w
    (``conv`` and ``dgl``): the conv (and ``conv``'s hidden Gemm) have round(w * C) channels instead
    of C, so the head costs about w times the MACs.

    ``dgl``: the head DGL (Belilovsky et al. 2020) and InfoPro (Wang et al. 2021) train CIFAR blocks
    with: a 3x3 conv with stride 2 sees each position's neighbourhood before the pooling (``conv``'s
    1x1 conv does not), then an MLP of ``DGL_HIDDEN`` units. On a token tensor or a vector it is the
    read-out and that MLP.

    ``subsample`` k: the head (and so its loss, and the block's gradient) sees every k-th sample of
    the batch only, so it costs about 1/k of its MACs and kept activations; the block itself still
    runs forward and backward on the whole batch. Its recorded accuracy is the subset's.

    A token tensor ``[N, tokens, features]`` (a transformer's or Mixer's residual stream) is reduced
    over its tokens as the model's own head reduces its last one: the class token or the mean
    (``readout.py``); the feature axis is kept. Any head that reduces a tensor itself gets a fresh
    LayerNormalization over the features where the model's head has one (on a token tensor before
    or after the reduction, as the model's head; on a feature map after the pooling); a head on a
    tensor the copied segments already reduced (rank 2) gets none.

    ``loss`` ``ce+recon``: the block's loss is the head's cross-entropy plus ``recon_weight`` times
    a reconstruction error (``passes/reconstruction.py``): a decoder from the block's output back to
    its input, named and recorded with the head (``recon`` in its entry holds the weight). A block
    whose input cannot be reconstructed that way (a vector or token output) keeps the cross-entropy
    alone, and its entry has no ``recon``.

    ``loss`` with ``contrast``: plus ``contrast_weight`` times the supervised contrastive loss
    (``ops/contrastive.py``, at ``temperature``) of a fresh Gemm projecting the features the head's
    classifier reads to ``CONTRAST_DIM`` (``aux@<cut>.proj``; ``contrast`` in the head's entry holds
    the weight). With a cross-entropy weight of 0 this is InfoPro's contrastive head: its MLP then a
    128-d output, the classifier beside it untrained.

    ``ce_weight`` multiplies the cross-entropy (``ce`` in the head's entry when it is not 1). Any
    weight may be a ramp (``util/ramp.py``): the i-th of the n blocks with heads gets the value at i,
    as InfoPro weighs its terms per block (more reconstruction early, more task loss late).
    """

    def __init__(self, kind: str = "fc", seed: int = 0, depth: float | None = None, pool: int | None = None,
                 width: float | None = None, subsample: int | None = None, loss: str = "ce",
                 recon_weight: float | str | None = None, ce_weight: float | str | None = None,
                 contrast_weight: float | str | None = None, temperature: float | None = None,
                 ema_momentum: float | None = None):
        super().__init__()
        if loss not in AUX_LOSSES:
            raise LLCompileError(f"unknown aux loss {loss!r}; choose one of: {', '.join(AUX_LOSSES)}")
        terms = loss.split("+")
        for name, weight, term in (("aux_recon_weight", recon_weight, "recon"),
                                   ("aux_contrast_weight", contrast_weight, "contrast"),
                                   ("aux_temperature", temperature, "contrast")):
            if weight is not None and term not in terms:
                raise LLCompileError(f"{option_name(name)} applies to an {option_name('aux_loss')} with {term}, "
                                     f"not {loss}")
        for name, weight in (("aux_recon_weight", recon_weight), ("aux_ce_weight", ce_weight),
                             ("aux_contrast_weight", contrast_weight)):
            ends = ramp_ends(weight) if weight is not None else (1.0, 1.0)
            if ends is None or min(ends) < 0:
                raise LLCompileError(f"{option_name(name)} must be a number >= 0 or FIRST:LAST of two, got {weight!r}")
            if name != "aux_ce_weight" and max(ends) == 0:
                raise LLCompileError(f"{option_name(name)} must be > 0 for one block at least, got {weight!r}")
        if temperature is not None and not temperature >= MIN_TEMPERATURE:
            raise LLCompileError(f"{option_name('aux_temperature')} must be >= {MIN_TEMPERATURE}, got {temperature}")
        if kind not in AUX_HEAD_KINDS:
            raise LLCompileError(f"unknown aux head {kind!r}; choose one of: {', '.join(AUX_HEAD_KINDS)}")
        if seed < 0:
            raise LLCompileError(f"the aux-head seed must be >= 0, got {seed}")
        if depth is not None and kind != "augmented":
            raise LLCompileError(f"{option_name('aux_depth')} applies to {option_name('aux_head', 'augmented')} only, "
                                 f"not {kind}")
        if ema_momentum is not None and kind != "ema":
            raise LLCompileError(f"{option_name('aux_ema_momentum')} applies to {option_name('aux_head', 'ema')} only, "
                                 f"not {kind}")
        if ema_momentum is not None and not 0 <= ema_momentum < 1:
            raise LLCompileError(f"{option_name('aux_ema_momentum')} must be in [0, 1), got {ema_momentum}")
        if width is not None and kind not in CONV_HEADS:
            raise LLCompileError(f"{option_name('aux_width')} applies to the {' and '.join(CONV_HEADS)} aux heads "
                                 f"only, not {kind}")
        if width is not None and not 0 < width <= 1:
            raise LLCompileError(f"{option_name('aux_width')} must be in (0, 1], got {width}")
        if pool is not None and pool < 1:
            raise LLCompileError(f"{option_name('aux_pool')} must be >= 1, got {pool}")
        if subsample is not None and subsample < 1:
            raise LLCompileError(f"{option_name('aux_subsample')} must be >= 1, got {subsample}")
        self.kind = kind
        self.seed = seed
        self.pool = pool
        self.width = width
        self.subsample = subsample
        self.recon_weight = ((DEFAULT_RECON_WEIGHT if recon_weight is None else recon_weight)
                             if "recon" in terms else None)
        self.contrast_weight = ((DEFAULT_CONTRAST_WEIGHT if contrast_weight is None else contrast_weight)
                                if "contrast" in terms else None)
        self.temperature = (DEFAULT_TEMPERATURE if temperature is None else temperature) if "contrast" in terms else None
        self.loss = loss
        self.ce_weight = ce_weight
        self.depth = check_depth(DEFAULT_AUX_DEPTH if depth is None else depth) if kind == "augmented" else None
        self.ema_momentum = (DEFAULT_EMA_MOMENTUM if ema_momentum is None else ema_momentum) if kind == "ema" else None

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        plan = require_plan(model, type(self).__name__)
        graph = model.graph
        labels = labels_input(graph, plan.labels)
        copies = self.kind in ("augmented", "ema")
        analysis = analyze(model) if copies or self.pool is not None else None  # before any head
        if self.pool is not None:
            self._check_pool_applies(graph, analysis.cut_points)
        readout = model_readout(graph)
        modified = False
        # a Hebbian stage has no loss
        headed = [s for s in plan.stages[:-1] if s.loss is None and s.kind != StageKind.HEBBIAN]
        for index, stage in enumerate(headed):
            builder = GraphBuilder(graph, f"{HEAD_PREFIX}{stage.output}")
            rng = np.random.default_rng([self.seed, zlib.crc32(stage.output.encode())])
            before = set(graph.initializers)
            x, head_labels, block_input = value_named(graph, stage.output), labels, value_named(graph, stage.input)
            # a term whose weight is 0 at this block is left out (no decoder or projection to train)
            recon = (ramp_at(self.recon_weight, index, len(headed)) or None
                     if self.recon_weight is not None and reconstructable(x, block_input) else None)
            ce = ramp_at(self.ce_weight, index, len(headed)) if self.ce_weight is not None else DEFAULT_CE_WEIGHT
            contrast = (ramp_at(self.contrast_weight, index, len(headed)) or None
                        if self.contrast_weight is not None else None)
            if ce == 0 and not recon and not contrast:
                raise LLCompileError(f"{stage.name} would have no loss: its {option_name('aux_ce_weight')} is 0 and "
                                     "it has no reconstruction or contrastive term")
            subset = self.subsample is not None and self.subsample > 1
            if subset:
                seen = {"x_subsample": x, "labels_subsample": labels}
                if recon is not None:
                    seen["input_subsample"] = block_input
                x, head_labels, *rest = subsample_batch(builder, seen, self.subsample)
                block_input = rest[0] if rest else block_input
            block_output = x
            existing = set(graph) if subset else None
            segments = copied_from = ema = None
            if self.kind == "augmented":
                segments = select_segments(analysis, stage.output, self.depth)
                x, copied_from = copy_segments(builder, analysis, segments, x)
            elif self.kind == "ema":
                x, segments, copied_from, ema = add_ema_copies(builder, analysis, stage.output, x)
            pooled = self.pool is not None and is_feature_map(x)  # tokens and vectors are reduced whole
            logits, features, width = self._build_head(builder, x, plan.num_classes, rng, readout)
            contrastive = None
            if contrast is not None:
                projection = self._linear(builder, features, "proj", width, CONTRAST_DIM, rng)
                contrastive = self._contrastive_loss(model, builder, projection, head_labels)
            stage.loss = self._add_loss(builder, logits, head_labels, rng, stage.name, ce,
                                        (contrastive, contrast) if contrastive is not None else None,
                                        (block_output, block_input, recon) if recon is not None else None)
            if subset:
                _unbind_batch(node for node in graph if node not in existing)
            added = set(graph.initializers) - before
            roles = parameter_roles(graph)  # copied shape constants and the like are neither
            averaged = set(ema or ())  # trained by no gradient: the runtime averages them
            stage.head = HeadPlan(kind=self.kind, logits=logits.name,
                                  params=sorted(n for n in added if roles.get(n) == "param" and n not in averaged),
                                  buffers=sorted(n for n in added if roles.get(n) == "buffer" or n in averaged),
                                  pool=self.pool if pooled else None, width=self.width,
                                  subsample=self.subsample if subset else None,
                                  segments=segments, copied_from=copied_from, recon=recon,
                                  ce=ce if ce != DEFAULT_CE_WEIGHT else None, contrast=contrast,
                                  ema=ema or None, momentum=self.ema_momentum if ema else None)
            modified = True
        plan.options["aux_head"] = self.kind
        plan.options.update({k: v for k, v in (("aux_pool", self.pool), ("aux_width", self.width),
                                               ("aux_subsample", self.subsample)) if v is not None})
        if self.depth is not None:
            plan.options["aux_depth"] = self.depth
        if self.ema_momentum is not None:
            plan.options["aux_ema_momentum"] = self.ema_momentum
        if self.loss != "ce":
            plan.options["aux_loss"] = self.loss
        if self.recon_weight is not None:
            plan.options["aux_recon_weight"] = ramp_value(self.recon_weight)
        if self.contrast_weight is not None:
            plan.options.update(aux_contrast_weight=ramp_value(self.contrast_weight),
                                aux_temperature=self.temperature)
        if self.ce_weight is not None:
            plan.options["aux_ce_weight"] = ramp_value(self.ce_weight)
        plan.write(model)
        return ir.passes.PassResult(model, modified)

    def _contrastive_loss(self, model: ir.Model, b: GraphBuilder, projection: ir.Value, labels: ir.Value) -> ir.Value:
        """The supervised contrastive loss of ``projection`` (one node of llcompile's own op; its
        model-local function definition added to the model once)."""
        function = contrastive_function(model.opset_imports[""])
        model.functions.setdefault(function.identifier(), function)
        model.opset_imports[CONTRAST_DOMAIN] = CONTRAST_DOMAIN_VERSION
        temperature = b.initializer("temperature", np.array(self.temperature, np.float32))
        node = contrastive_loss_node(projection, labels, temperature)
        node.name = node.outputs[0].name = b.names.fresh(f"{b.prefix}.contrast")
        b.graph.append(node)
        return node.outputs[0]

    @staticmethod
    def _add_loss(b: GraphBuilder, logits: ir.Value, labels: ir.Value, rng, stage: str, ce_weight: float,
                  contrast: tuple[ir.Value, float] | None, recon: tuple[ir.Value, ir.Value, float] | None) -> str:
        """The block's loss, a graph output: the head's cross-entropy times ``ce_weight``, plus with
        ``contrast`` (the loss, the weight) the weighted contrastive term, plus with ``recon`` (the
        block's output, its input, the weight) the weighted error of the input's reconstruction from
        the output."""
        loss_name = f"{stage}.aux_loss"
        if recon is None and contrast is None and ce_weight == DEFAULT_CE_WEIGHT:
            return add_cross_entropy(b.graph, logits, labels, loss_name).name
        loss = b.op("SoftmaxCrossEntropyLoss", [logits, labels], "ce", reduction="mean")
        if ce_weight != DEFAULT_CE_WEIGHT:
            loss = b.op("Mul", [loss, b.initializer("ce_weight", np.array(ce_weight, np.float32))], "ce_weighted")
        if contrast is not None:
            term, weight = contrast
            weighted = b.op("Mul", [term, b.initializer("contrast_weight", np.array(weight, np.float32))],
                            "contrast_weighted")
            loss = b.op("Add", [loss, weighted], "with_contrast")
        if recon is not None:
            output, target, weight = recon
            error = reconstruction_error(b, output, target, rng, stage)
            weighted = b.op("Mul", [error, b.initializer("recon_weight", np.array(weight, np.float32))],
                            "recon_weighted")
            loss = b.op("Add", [loss, weighted], "loss")
        return add_loss_output(b.graph, loss.producer(), loss_name).name

    def _check_pool_applies(self, graph: ir.Graph, cut_points: list[str]) -> None:
        """``pool`` pools feature maps only: refuse it when no cut point of the model is one (a transformer's
        or Mixer's residual stream is a token tensor), rather than ignore it in every head. The model's cut
        points, not this program's: boundaries that move may reach any of them."""
        if not any(is_feature_map(value_named(graph, cut)) for cut in cut_points):
            raise LLCompileError(f"{option_name('aux_pool', self.pool)} pools feature maps [N, C, H, W], but every cut "
                                 "point of this model is a token tensor [N, tokens, features] or a vector: leave it "
                                 "out")

    def _build_head(self, b: GraphBuilder, x: ir.Value, classes: int, rng,
                    readout: Readout) -> tuple[ir.Value, ir.Value, int]:
        """The head's logits, and the features its classifier reads with their width."""
        rank = x.shape.rank() if x.shape is not None else 0
        tokens = is_token_tensor(x)
        feature_axis = 2 if tokens else 1
        if rank < 2 or not isinstance(x.shape[feature_axis], int):
            raise LLCompileError(f"cannot attach an aux head to {x.name!r} of shape {x.shape}")
        channels, spatial = x.shape[feature_axis], list(x.shape)[2:]
        hidden = max(1, round(self.width * channels)) if self.width is not None else channels
        if self.kind in CONV_HEADS and rank > 2 and not tokens:
            x, spatial = self._conv_bn_relu(b, x, channels, hidden, spatial, rng)
            channels = hidden
        features = channels
        if tokens:
            if readout.norm == "before":
                x = self._layer_norm(b, x, channels)
            x = self._reduce_tokens(b, x, readout.tokens)
            if readout.norm == "after":
                x = self._layer_norm(b, x, channels)
        elif rank > 2:
            x, features = self._pool_spatial(b, x, channels, spatial)
            x = b.op("Flatten", [x], "flatten", axis=1)
            if readout.norm is not None:  # a feature map's channels are last only once it is pooled
                x = self._layer_norm(b, x, features)
        if self.kind in CONV_HEADS:
            mlp = DGL_HIDDEN if self.kind == "dgl" else hidden
            x = self._linear(b, x, "fc1", features, mlp, rng)
            x = b.op("Relu", [x], "fc1_relu")
            features = mlp
        logits = self._linear(b, x, "fc2" if self.kind in CONV_HEADS else "fc", features, classes, rng,
                              output="logits")
        return logits, x, features

    def _conv_bn_relu(self, b: GraphBuilder, x: ir.Value, channels: int, hidden: int, spatial: list,
                      rng) -> tuple[ir.Value, list]:
        """``conv``: a 1x1 conv (the spatial sizes kept); ``dgl``: a 3x3 conv with stride 2 and padding 1
        (each spatial size halved, rounded up); then BN on the batch's statistics and ReLU."""
        kernel, stride = (1, 1) if self.kind == "conv" else (3, 2)
        dims = len(spatial)
        w = b.initializer("conv.weight", uniform_fan_in(rng, (hidden, channels) + (kernel,) * dims,
                                                        channels * kernel ** dims))
        strided = {} if stride == 1 else {"strides": [stride] * dims, "pads": [kernel // 2] * (2 * dims)}
        x = b.op("Conv", [x, w], "conv", kernel_shape=[kernel] * dims, **strided)
        x = b.batch_norm(x, "bn", hidden)
        spatial = [-(-d // stride) if isinstance(d, int) else d for d in spatial]
        return b.op("Relu", [x], "relu"), spatial

    @staticmethod
    def _reduce_tokens(b: GraphBuilder, x: ir.Value, how: str) -> ir.Value:
        """[N, tokens, features] -> [N, features]: the class token (token 0) or the mean over the tokens."""
        if how == CLASS_TOKEN:
            return b.op("Gather", [x, b.initializer("class_token_index", np.array(0, np.int64))], "class_token",
                        axis=1)
        if b.graph.opset_imports.get("", 1) >= 18:  # axes became an input in opset 18
            return b.op("ReduceMean", [x, b.initializer("token_axis", np.array([1], np.int64))], "token_mean",
                        keepdims=0)
        return b.op("ReduceMean", [x], "token_mean", axes=[1], keepdims=0)

    @staticmethod
    def _layer_norm(b: GraphBuilder, x: ir.Value, features: int) -> ir.Value:
        """A fresh LayerNormalization over the last axis (torch's defaults: weight 1, bias 0, eps 1e-5)."""
        scale = b.initializer("norm.weight", np.ones(features, np.float32))
        bias = b.initializer("norm.bias", np.zeros(features, np.float32))
        return b.op("LayerNormalization", [x, scale, bias], "norm", axis=-1, epsilon=1e-5)

    def _pool_spatial(self, b: GraphBuilder, x: ir.Value, channels: int, spatial: list) -> tuple[ir.Value, int]:
        """Global average pooling, or with ``pool`` P an average pool of the ``spatial`` sizes to P x ... x P;
        the features per sample."""
        if self.pool is None:
            return b.op("GlobalAveragePool", [x], "pool"), channels
        if not all(isinstance(d, int) and d % self.pool == 0 for d in spatial):
            raise LLCompileError(f"{option_name('aux_pool', self.pool)}: the spatial sizes {spatial} of {x.name!r} "
                                 f"must be multiples of {self.pool}")
        kernel = [d // self.pool for d in spatial]
        pooled = b.op("AveragePool", [x], "pool", kernel_shape=kernel, strides=kernel)
        return pooled, channels * self.pool ** len(spatial)

    @staticmethod
    def _linear(b: GraphBuilder, x: ir.Value, name: str, fan_in: int, fan_out: int, rng,
                output: str | None = None) -> ir.Value:
        w = b.initializer(f"{name}.weight", uniform_fan_in(rng, (fan_out, fan_in), fan_in))
        bias = b.initializer(f"{name}.bias", uniform_fan_in(rng, (fan_out,), fan_in))
        return b.op("Gemm", [x, w, bias], output or name, transB=1)


def _unbind_batch(nodes) -> None:
    """A head on a subset: its values' batch is not the model's (copied segments carry the model's
    symbolic batch in their shapes); leave it unnamed."""
    for node in nodes:
        for value in node.outputs:
            if value.shape is not None and value.shape.rank() > 0 and value.shape[0] == BATCH_DIM:
                value.shape = ir.Shape([None, *list(value.shape)[1:]])
