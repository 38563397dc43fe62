"""Drive a program's trainable stages the way the runtime does."""


def train_chain(stages, x, labels, lr: float) -> list[float]:
    """One train step of every stage in order, each fed the previous stage's output; their losses."""
    losses = []
    for stage in stages:
        result = stage.train_step(x, labels, lr)
        losses.append(result.loss)
        x = result.output
    return losses
