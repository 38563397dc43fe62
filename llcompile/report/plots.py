"""The report's figure (matplotlib, Agg backend): per-layer MACs stacked by kind for every strategy,
activation memory per stage, and the strategies side by side. Returns PNG bytes."""

from __future__ import annotations

import io

KINDS = [("forward", "macs_forward", "#4c72b0"), ("backward dX", "macs_backward_dx", "#dd8452"),
         ("backward dW", "macs_backward_dw", "#c44e52"), ("Hebbian", "macs_hebbian", "#55a868")]
AUX_COLOR = "#8172b3"


def report_png(report: dict, dpi: int = 100) -> bytes:
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure

    strategies = report["strategies"]
    names = list(strategies)
    n = len(names)
    fig = Figure(figsize=(12, 2.4 * n + 4.2), dpi=dpi, layout="constrained")
    grid = fig.add_gridspec(n + 1, 2, height_ratios=[2.4] * n + [4.2])
    share = None
    for row, name in enumerate(names):
        ax = fig.add_subplot(grid[row, :], sharex=share, sharey=share)
        share = share or ax
        layers = strategies[name]["layers"]
        x = range(len(layers))
        bottom = [0.0] * len(layers)
        for label, key, color in KINDS:
            values = [layer[key] / 1e6 for layer in layers]
            ax.bar(x, values, bottom=bottom, color=color, label=label, width=0.85)
            bottom = [b + v for b, v in zip(bottom, values)]
        starts = [i for i in range(1, len(layers)) if layers[i]["stage"] != layers[i - 1]["stage"]]
        for i in starts:
            ax.axvline(i - 0.5, color="black", linewidth=0.8, linestyle="--")
        ax.set_title(f"{name}: MACs per layer (millions per sample; dashed lines: stage boundaries)", fontsize=9,
                     loc="left")
        ax.set_ylabel("M MACs")
        if row == 0:
            ax.legend(fontsize=8, ncols=4, loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False)
        if row == n - 1:
            ax.set_xlabel("layer (graph order)")

    totals = fig.add_subplot(grid[n, 0])
    bottom = [0.0] * n
    for label, key, color in [*((k[0], k[1].removeprefix("macs_"), k[2]) for k in KINDS),
                              ("aux heads", "aux", AUX_COLOR)]:
        values = [strategies[s]["macs"][key] / 1e6 for s in names]
        totals.bar(names, values, bottom=bottom, color=color, label=label)
        bottom = [b + v for b, v in zip(bottom, values)]
    totals.set_title("total MACs per sample, by kind (millions; FLOPs = 2 x MACs)", fontsize=9, loc="left")
    totals.tick_params(axis="x", labelrotation=20, labelsize=8)
    totals.set_ylim(0, max(bottom, default=0) * 1.35 or 1)
    totals.legend(fontsize=8, ncols=3, loc="upper right")

    memory = fig.add_subplot(grid[n, 1])
    width = 0.8
    cmap = matplotlib.colormaps["tab20"]
    for i, name in enumerate(names):
        stages = strategies[name]["stages"]
        base = 0.0
        for j, stage in enumerate(stages):
            value = stage["activation_bytes"] / 2**20
            memory.bar(i, value, bottom=base, width=width, color=cmap(j % 20), edgecolor="white", linewidth=0.5)
            base += value
        peak = strategies[name]["memory"]["activation_peak_bytes"] / 2**20
        memory.plot([i - width / 2, i + width / 2], [peak, peak], color="black", linewidth=2)
    memory.set_xticks(range(n), names, rotation=20, fontsize=8)
    memory.margins(y=0.1)
    memory.set_ylabel("MiB per step")
    memory.set_title("activations kept per stage (stacked; black bar: the peak, one stage at a time)", fontsize=9,
                     loc="left")
    out = io.BytesIO()
    fig.savefig(out, format="png")
    return out.getvalue()
