"""Peak memory of the training process over an interval (an epoch).

On CPU the resident set size is sampled from /proc every few milliseconds by a daemon thread
(``ru_maxrss`` only ever grows, so it cannot give a per-epoch peak); on CUDA, torch's allocator
statistics are exact.
"""

from __future__ import annotations

import ctypes
import gc
import os
import resource
import threading
from pathlib import Path

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
STATM = Path("/proc/self/statm")


def current_rss_bytes() -> int:
    if STATM.exists():
        return int(STATM.read_text().split()[1]) * PAGE_SIZE
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def release_freed_memory() -> None:
    """Collect garbage and return the heap's free pages to the OS (glibc's ``malloc_trim``). When
    the program changes, the old stages' tensors are freed between many small live objects, and the
    allocator would otherwise keep those pages resident: measured, each boundary move raised the
    peak resident memory of the epochs after it (docs/results.md)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the pages are reused, though not returned
        pass


class PeakMemoryMonitor:
    def __init__(self, device: str = "cpu", interval_s: float = 0.005):
        self.device = device
        self.interval_s = interval_s
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemoryMonitor:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._peak = current_rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._peak = max(self._peak, current_rss_bytes())

    def peak_bytes(self) -> int:
        if self.device.startswith("cuda"):
            import torch

            return int(torch.cuda.max_memory_allocated(self.device))
        return max(self._peak, current_rss_bytes())
