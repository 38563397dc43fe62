"""Ctrl-C that stops the run at the next step boundary, so the checkpoint is consistent.

The first SIGINT sets a flag the training loop checks between steps; a second one interrupts
immediately (the previous checkpoint on disk stays intact either way).
"""

from __future__ import annotations

import signal
import threading


class DeferredInterrupt:
    def __init__(self, install: bool = True):
        """``install=False``: a stand-in that is never requested (SIGINT keeps its handler)."""
        self.requested = False
        self.install = install
        self._previous = None

    def __enter__(self) -> DeferredInterrupt:
        if self.install and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
