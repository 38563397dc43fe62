"""The report's figure (matplotlib, Agg backend): per-layer MACs stacked by kind for every strategy,
activation memory per stage, and the strategies side by side. Returns PNG bytes."""

from __future__ import annotations

import io

KINDS = [("forward", "macs_forward", "#4c72b0"), ("backward dX", "macs_backward_dx", "#dd8452"),
         ("backward dW", "macs_backward_dw", "#c44e52"), ("Hebbian", "macs_hebbian", "#55a868")]
AUX_COLOR = "#8172b3"
HEADROOM = 0.12  # above the tallest bar, so that no bar touches its panel's top


def report_png(report: dict, dpi: int = 100) -> bytes:
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    strategies = report["strategies"]
    names = list(strategies)
    n = len(names)
    fig = Figure(figsize=(12, 2.4 * n + 0.4 * n + 3), dpi=dpi, layout="constrained")
    grid = fig.add_gridspec(n + 1, 2, height_ratios=[2.4] * n + [0.4 * n + 2])
    share = None
    for row, name in enumerate(names):
        ax = fig.add_subplot(grid[row, :], sharex=share, sharey=share)
        share = share or ax
        layers = strategies[name]["layers"]
        x = range(len(layers))
        bottom = [0.0] * len(layers)
        for label, key, color in KINDS:
            values = [layer[key] / 1e6 for layer in layers]
            ax.bar(x, values, bottom=bottom, color=color, width=0.85)
            bottom = [b + v for b, v in zip(bottom, values)]
        heads = head_bars(strategies[name])
        ax.bar([i for i, _ in heads], [v / 1e6 for _, v in heads], bottom=[bottom[i] for i, _ in heads],
               color=AUX_COLOR, width=0.85)
        starts = [i for i in range(1, len(layers)) if layers[i]["stage"] != layers[i - 1]["stage"]]
        for i in starts:
            ax.axvline(i - 0.5, color="black", linewidth=0.8, linestyle="--")
        ax.set_title(f"{name}: MACs per layer (millions per sample; dashed lines: stage boundaries)", fontsize=9,
                     loc="left")
        ax.set_ylabel("M MACs")
        ax.margins(y=HEADROOM)
        if row == n - 1:
            ax.set_xlabel("layer (graph order)")
    handles = [Patch(color=color, label=label) for label, _, color in KINDS]
    handles.append(Patch(color=AUX_COLOR, label="aux head (forward + backward, on its stage's last layer)"))
    fig.legend(handles=handles, fontsize=8, ncols=len(handles), loc="outside upper right", frameon=False)

    # the strategies as rows, their names (options on a second line) left of the bars: any length fits
    labels = [name.replace(":", "\n", 1) for name in names]
    totals = fig.add_subplot(grid[n, 0])
    left = [0.0] * n
    for label, key, color in [*((k[0], k[1].removeprefix("macs_"), k[2]) for k in KINDS),
                              ("aux heads", "aux", AUX_COLOR)]:
        values = [strategies[s]["macs"][key] / 1e6 for s in names]
        totals.barh(range(n), values, left=left, color=color, label=label, height=0.7)
        left = [b + v for b, v in zip(left, values)]
    totals.set_yticks(range(n), labels, fontsize=8)
    totals.invert_yaxis()  # bp, the baseline, on top
    totals.set_xlim(0, max(left, default=0) * (1 + HEADROOM) or 1)
    totals.set_title("total MACs per sample, by kind (millions; FLOPs = 2 x MACs)", fontsize=9, loc="left")
    totals.legend(fontsize=8, ncols=5, loc="upper center", bbox_to_anchor=(0.5, -0.08), frameon=False)

    memory = fig.add_subplot(grid[n, 1], sharey=totals)
    height = 0.7
    cmap = matplotlib.colormaps["tab20"]
    for i, name in enumerate(names):
        stages = strategies[name]["stages"]
        base = 0.0
        for j, stage in enumerate(stages):
            value = stage["activation_bytes"] / 2**20
            memory.barh(i, value, left=base, height=height, color=cmap(j % 20), edgecolor="white", linewidth=0.5)
            base += value
        peak = strategies[name]["memory"]["activation_peak_bytes"] / 2**20
        memory.plot([peak, peak], [i - height / 2, i + height / 2], color="black", linewidth=2)
    memory.tick_params(axis="y", labelleft=False)
    memory.margins(x=HEADROOM)
    memory.set_xlim(left=0)
    memory.set_xlabel("MiB per step")
    memory.set_title("activations kept per stage (stacked; black: the peak, one stage at a time)", fontsize=9,
                     loc="left", wrap=True)
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()


def head_bars(entry: dict) -> list[tuple[int, int]]:
    """(layer index, MACs) of every aux head of a strategy's report ``entry``: its forward and backward
    (an augmented head's copies included), drawn on the last layer of its stage, where it hangs."""
    last = {layer["stage"]: i for i, layer in enumerate(entry["layers"])}
    return [(last[s["name"]], s["macs"]["aux_forward"] + s["macs"]["aux_backward"])
            for s in entry["stages"] if s["head"] and s["name"] in last]
