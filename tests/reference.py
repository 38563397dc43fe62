"""Independent numpy references the tests compare llcompile against."""

import numpy as np


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean softmax cross-entropy, in float64."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(labels)), labels].mean())


def hebbian_update(x: np.ndarray, y: np.ndarray, w: np.ndarray, lr: float, strides, pads, dilations, group: int,
                   decay: float, renormalize: bool, triangular: bool = False, temperature: float = 0.0) -> np.ndarray:
    """``HebbianUpdate`` by its definition, in float64, for any number of spatial dims.

    ``H[o, c, k]`` = mean over samples n and output positions p of
    ``y[n, o, p] * xpad[n, group(o) * Cin_g + c, p * stride + k * dilation]``, computed with explicit
    loops over (output channel, input channel in its group, kernel offset), each term a strided
    slice of the padded input (no convolution); ``D[o]`` = mean of ``y[:, o]^2``;
    ``V = W + lr * (H - decay * D[o] * W)``, rescaled per filter to ``||W[o]||`` when ``renormalize``;
    with ``triangular`` (Sanger) the decay term of filter o is ``sum over filters q <= o of its group of
    mean(y[:, o] * y[:, q]) * W[q]`` instead. With ``temperature`` T > 0 (SoftHebb) ``y`` is first
    replaced by ``exp(y / T)`` normalised over the filters at every sample and position, and ``D[o]``
    is the mean of that times the given ``y[:, o]``.
    Pads in ONNX order (all begins, then all ends).
    """
    import itertools

    x, y, w = (np.asarray(a, dtype=np.float64) for a in (x, y, w))
    given = y
    if temperature > 0:
        exponentials = np.exp((y - y.max(axis=1, keepdims=True)) / temperature)
        y = exponentials / exponentials.sum(axis=1, keepdims=True)
    dims = w.ndim - 2
    cout, cin_per_group, kernel = w.shape[0], w.shape[1], w.shape[2:]
    out_size = y.shape[2:]
    xpad = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[dims + i]) for i in range(dims)])
    count = y.shape[0] * int(np.prod(out_size))
    filters_per_group = cout // group
    h = np.zeros_like(w)
    for o in range(cout):
        first_channel = (o // filters_per_group) * cin_per_group
        for c in range(cin_per_group):
            for k in itertools.product(*(range(size) for size in kernel)):
                window = tuple(slice(k[i] * dilations[i], k[i] * dilations[i] + strides[i] * (out_size[i] - 1) + 1,
                                     strides[i]) for i in range(dims))
                patch = xpad[(slice(None), first_channel + c, *window)]
                assert patch.shape == y[:, o].shape
                h[(o, c, *k)] = np.sum(patch * y[:, o]) / count
    power = np.array([np.sum(y[:, o] * given[:, o]) / count for o in range(cout)])
    per_filter = (-1,) + (1,) * (dims + 1)
    if triangular:
        term = np.zeros_like(w)
        for o in range(cout):
            for q in range(o // filters_per_group * filters_per_group, o + 1):
                term[o] += np.sum(y[:, o] * y[:, q]) / count * w[q]
    else:
        term = power.reshape(per_filter) * w
    new = w + lr * (h - decay * term)
    if renormalize:
        norms = lambda a: np.sqrt(np.sum(a.reshape(cout, -1) ** 2, axis=1)).reshape(per_filter)  # noqa: E731
        new = new * norms(w) / norms(new)
    return new


def dense_hebbian_update(x: np.ndarray, y: np.ndarray, w_rows: np.ndarray, lr: float, decay: float,
                         renormalize: bool) -> np.ndarray:
    """``HebbianUpdate`` of a dense layer ``y = x W^T`` with ``W`` as rows ``[out, in]``, in float64:
    ``W + lr * (y^T x / N - decay * diag(mean(y^2)) W)``, rows renormalized when asked."""
    x, y, w_rows = (np.asarray(a, dtype=np.float64) for a in (x, y, w_rows))
    n = len(x)
    new = w_rows + lr * (y.T @ x / n - decay * (y ** 2).mean(axis=0)[:, None] * w_rows)
    if renormalize:
        new = new * (np.linalg.norm(w_rows, axis=1) / np.linalg.norm(new, axis=1))[:, None]
    return new
