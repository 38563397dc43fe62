"""The report's figure (matplotlib, Agg backend): per-layer MACs stacked by kind for every strategy,
activation memory per stage, the strategies side by side and, when training runs are attached,
their test accuracy against each cost. Returns PNG bytes."""

from __future__ import annotations

import io

KINDS = [("forward", "macs_forward", "#4c72b0"), ("backward dX", "macs_backward_dx", "#dd8452"),
         ("backward dW", "macs_backward_dw", "#c44e52"), ("Hebbian", "macs_hebbian", "#55a868")]
AUX_COLOR = "#8172b3"
HEADROOM = 0.12  # above the tallest bar, so that no bar touches its panel's top
MAX_LAYER_TICKS = 80  # layer names on the x axis; a longer model names every k-th layer
LAYER_NAME_CHARS = 28
# the trade-off panels: (title, the value of a strategy's report entry) per cost
TRADEOFF_COSTS = [
    ("seconds per step (measured)", lambda e: e["measured"]["s_per_step"]),
    ("peak memory, MiB (measured, whole process)", lambda e: e["measured"]["peak_memory_bytes"] / 2**20),
    ("training MACs per sample, millions (cost model)", lambda e: e["macs"]["total"] / 1e6),
    ("activation peak, MiB per step (cost model)", lambda e: e["memory"]["activation_peak_bytes"] / 2**20),
]


def report_png(report: dict, dpi: int = 100) -> bytes:
    out = io.BytesIO()
    report_figure(report, dpi).savefig(out, format="png")
    return out.getvalue()


def report_figure(report: dict, dpi: int = 100):
    """The report's figure, a matplotlib ``Figure`` (not attached to pyplot)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    strategies = report["strategies"]
    names = list(strategies)
    n = len(names)
    measured = [name for name in names if strategies[name]["measured"] and strategies[name]["measured"]["test_acc"]
                is not None]
    tradeoff_rows = 2 if measured else 0
    heights = [2.4] * n + [0.4 * n + 2] + [3.2] * tradeoff_rows
    fig = Figure(figsize=(12, sum(heights) + 2), dpi=dpi, layout="constrained")
    grid = fig.add_gridspec(n + 1 + tradeoff_rows, 2, height_ratios=heights)
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
        aux = strategies[name]["macs"]["aux"] / 1e6
        ax.set_title(f"{name}: MACs per layer (millions per sample; dashed lines: stage boundaries)"
                     + (f"; aux heads {aux:,.3f} M in all, purple" if heads else ""), fontsize=9, loc="left")
        ax.set_ylabel("M MACs")
        ax.margins(y=HEADROOM)
        if row == n - 1:
            step = -(-len(layers) // MAX_LAYER_TICKS)
            ticks = list(range(0, len(layers), step))
            ax.set_xticks(ticks, [short_layer_name(layers[i]["name"]) for i in ticks], rotation=90, fontsize=6)
            ax.set_xlabel("layer (graph order" + (f", every {step}th named)" if step > 1 else ")"))
        else:
            ax.tick_params(axis="x", labelbottom=False)
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
    most_stages = max(len(strategies[name]["stages"]) for name in names)
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
    stage_handles = [Patch(color=cmap(j % 20), label=f"stage {j + 1}") for j in range(min(most_stages, 20))]
    stage_handles.append(Line2D([], [], color="black", linewidth=2, label="peak"))
    memory.legend(handles=stage_handles, fontsize=7, ncols=min(len(stage_handles), 6), loc="upper center",
                  bbox_to_anchor=(0.5, -0.18), frameon=False)
    if measured:
        tradeoff_panels(fig, grid, n + 1, {name: strategies[name] for name in measured})
    return fig


def head_bars(entry: dict) -> list[tuple[int, int]]:
    """(layer index, MACs) of every aux head of a strategy's report ``entry``: its forward and backward
    (an augmented head's copies included), drawn on the last layer of its stage, where it hangs."""
    last = {layer["stage"]: i for i, layer in enumerate(entry["layers"])}
    return [(last[s["name"]], s["macs"]["aux_forward"] + s["macs"]["aux_backward"])
            for s in entry["stages"] if s["head"] and s["name"] in last]


def tradeoff_panels(fig, grid, first_row: int, entries: dict) -> None:
    """Test accuracy (y) against each of ``TRADEOFF_COSTS`` (x), one point per measured strategy;
    dotted lines through bp's point, the reference."""
    import matplotlib

    colors = matplotlib.colormaps["tab10"]
    for k, (title, cost_of) in enumerate(TRADEOFF_COSTS):
        ax = fig.add_subplot(grid[first_row + k // 2, k % 2])
        for i, (name, entry) in enumerate(entries.items()):
            x, y = cost_of(entry), entry["measured"]["test_acc"]
            ax.scatter([x], [y], color=colors(i % 10), marker="*" if name == "bp" else "o", s=90, label=name,
                       zorder=3)
            if name == "bp":
                ax.axhline(y, color="grey", linewidth=0.8, linestyle=":")
                ax.axvline(x, color="grey", linewidth=0.8, linestyle=":")
        ax.set_xlabel(title, fontsize=8)
        ax.set_ylabel("test accuracy (last epoch)", fontsize=8)
        ax.margins(0.15)
        ax.grid(alpha=0.3)
        if k == 0:
            ax.set_title("accuracy against cost per strategy (up and left is better; dotted: bp)", fontsize=9,
                         loc="left")
            ax.legend(fontsize=7, loc="best")


def short_layer_name(name: str) -> str:
    """A layer's name short enough for an axis: the path components that say where it is (a parent
    repeated in its child's name and the trailing op type left out), at most LAYER_NAME_CHARS."""
    parts = [p for p in name.split("/") if p]
    if len(parts) > 1 and parts[-1][:1].isupper():  # the exporter's op type: /conv1/conv/Conv
        parts.pop()
    parts = [p for p, following in zip(parts, [*parts[1:], ""]) if not following.startswith(p)]
    text = "/".join(parts) or name
    return text if len(text) <= LAYER_NAME_CHARS else "…" + text[-(LAYER_NAME_CHARS - 1):]
