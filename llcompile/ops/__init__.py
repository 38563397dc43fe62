"""Every fact llcompile knows about each ONNX op, registered once (``registry.py``) in the file of
its family, next to its torch emitter, its run-time helpers and its ORT decomposition.

Importing the package imports every family, so the registry is complete before anyone reads it;
the sets below are made from it.
"""

from llcompile.ops import (activation, arithmetic, average_pool, constant, contrastive, conv, dropout, hebbian,
                           loss, normalization, padding, pooling, reduce, shape, slicing)
from llcompile.ops.registry import STANDARD_DOMAIN, Role, registered_ops

FAMILIES = (activation, arithmetic, average_pool, constant, contrastive, conv, dropout, hebbian, loss, normalization,
            padding, pooling, reduce, shape, slicing)

# the ops the importer accepts and the training backends implement: the standard domain's
SUPPORTED_OPS = frozenset(f.op_type for f in registered_ops() if f.domain == STANDARD_DOMAIN)
# ops with a weight: the layers that learn, whose work is counted in MACs
PARAMETRIC_OPS = frozenset(f.op_type for f in registered_ops() if f.role is Role.PARAMETRIC)
# the ops that carry a model's class probabilities rather than its logits
PROBABILITY_OPS = frozenset(f.op_type for f in registered_ops() if f.probabilities)
