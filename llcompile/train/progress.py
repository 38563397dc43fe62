"""What a training run shows while it runs, all on stderr (stdout is left to the command's result,
e.g. ``train --format json``): on a terminal a tqdm bar per epoch; without one (a CI log, nohup, a
pipe) a line every ``NO_TTY_INTERVAL_S`` seconds within an epoch instead; and one line per epoch
either way, naming what moved at its start (the Hebbian prefix, merged or restored blocks).
"""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO

from tqdm import tqdm

from llcompile.util.terminal import printable

NO_TTY_INTERVAL_S = 30.0  # a two-minute epoch shows a few lines, a short one none besides its epoch line


class EpochProgress:
    """The progress of one epoch: ``step`` after every training step, ``close`` at its end."""

    def __init__(self, epoch: int, epochs: int, steps: int, start_step: int, enabled: bool,
                 stream: TextIO | None = None, interval_s: float = NO_TTY_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic):
        self.stream = stream or sys.stderr
        self.label = f"epoch {epoch}/{epochs}"
        self.steps = steps
        self.enabled = enabled
        self.interval_s = interval_s
        self.clock = clock
        self.last_line = clock()
        # disable=None: tqdm shows the bar only when the stream is a terminal
        self.bar = tqdm(total=steps, initial=start_step, desc=self.label, file=self.stream,
                        disable=None if enabled else True, leave=False, unit="step")

    def step(self, step: int, loss: float | None, acc: float | None, images_per_s: float, lr: float) -> None:
        """After 0-based ``step`` of the epoch (``loss``/``acc`` None on a rank without the final stage)."""
        shown = {"loss": f"{loss:.3f}", "acc": f"{acc:.3f}"} if loss is not None else {}
        shown.update(img_s=f"{images_per_s:.0f}", lr=f"{lr:.3g}")
        if not self.bar.disable:
            self.bar.set_postfix(**shown)
            self.bar.update(1)
        elif self.enabled and self.clock() - self.last_line >= self.interval_s:
            self.last_line = self.clock()
            metrics = f"loss {loss:.3f} acc {acc:.3f} " if loss is not None else ""
            print(f"{self.label} step {step + 1}/{self.steps}: {metrics}{images_per_s:.0f} img/s lr {lr:.3g}",
                  file=self.stream, flush=True)

    def close(self) -> None:
        self.bar.close()


def print_epoch(record: dict, stream: TextIO | None = None) -> None:
    """The line of a finished epoch (its metrics record), below any bar."""
    stages = "  ".join(f"{name} {v['loss']:.3f}/{v['acc']:.3f}" for name, v in record["stages"].items())
    prefix = f"  hebbian prefix {record['prefix']}" if "prefix" in record else ""
    line = (f"epoch {record['epoch']}{prefix}: train loss {record['train_loss']:.4f} acc {record['train_acc']:.4f}  "
            f"test acc {record['test_acc']:.4f}  {record['epoch_time_s']:.1f}s "
            f"{record['images_per_s']:.0f} img/s  peak {record['peak_memory_mb']:.0f} MiB  [loss/acc {stages}]")
    tqdm.write(printable("; ".join([line, *epoch_changes(record)])), file=stream or sys.stderr)


def epoch_changes(record: dict, cuts: bool = False) -> list[str]:
    """What moved at the start of the epoch of ``record`` and why; with ``cuts``, where the block
    boundaries now are."""
    changes = []
    if "transition" in record:
        t = record["transition"]
        changes.append(f"Hebbian prefix {t['from']} -> {t['to']} ({t['reason']})")
    if "boundary_change" in record:
        b = record["boundary_change"]
        # from/to are the boundaries between blocks trained by gradient: one block more than cuts
        before, after = len(b["from"]) + 1, len(b["to"]) + 1
        what = f"blocks {before} -> {after}" if before != after else "block boundaries moved"
        at = f"{' at' if before != after else ' to'} {', '.join(b['to'])}" if cuts and b["to"] else ""
        warmup = b.get("head_warmup")
        warming = f"; the new heads train alone for {warmup['epochs']:g} epoch(s) first" if warmup else ""
        changes.append(f"{what}{at} ({b['reason']}{warming})")
    return changes
