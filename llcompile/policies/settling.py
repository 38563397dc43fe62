"""When a layer has settled: its relative update norm per unit of learning rate, against its own peak.

Both policies that react to update norms use this: DBL's ``adaptive`` boundary policy (a merged
boundary comes back once the layers before it have settled) and LoCal+SGD's ``dynamic`` learning
mode (the transition moves past a layer once it has settled). The norms are divided by each
epoch's mean learning rate because a decaying schedule shrinks the raw ``||dW|| / ||W||`` whether
or not the layer still learns: with raw norms, a cosine schedule makes every layer look settled.
"""

from __future__ import annotations

# a learning rate this small is zero: its epoch's norms per unit of it are not meaningful, only finite
MIN_LR = 1e-12


def per_unit_lr(norm_history: list[dict[str, float]], lr_means: list[float]) -> list[dict[str, float]]:
    """Each epoch's update norms (oldest first) divided by that epoch's mean learning rate."""
    return [{layer: norm / max(lr, MIN_LR) for layer, norm in norms.items()}
            for norms, lr in zip(norm_history, lr_means, strict=True)]


def layers_settled(layers: list[str], norm_history: list[dict[str, float]], threshold: float) -> bool:
    """Whether each of ``layers`` moved by less than ``threshold`` x its peak update norm in the last
    epoch of ``norm_history`` (oldest first; per unit of learning rate, ``per_unit_lr``)."""
    for layer in layers:
        norms = [record[layer] for record in norm_history if layer in record]
        if not norms or norms[-1] >= threshold * max(norms):
            return False
    return bool(layers)
