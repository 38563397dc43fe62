"""A rank's links to its neighbours: activations and labels go forward, nothing comes back.

A batch travels as three point-to-point messages over torch.distributed: a fixed-size header
(dtype and shape of the activation; the last batch of an epoch is smaller), the activation, the
labels. Sends are asynchronous; at most ``max_in_flight`` batches wait for the next rank to take
them, so a fast rank cannot run ahead and pile up activations.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from llcompile.backends.base import Backend

DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
HEADER = 8  # dtype code, number of dimensions, up to 6 sizes


class Link:
    """Receives from rank ``rank - 1`` and sends to rank ``rank + 1`` (where those exist), over
    tensors on ``device`` (the rank's GPU with NCCL, the CPU with gloo)."""

    def __init__(self, rank: int, world_size: int, max_in_flight: int, device: torch.device):
        self.previous = rank - 1 if rank > 0 else None
        self.next = rank + 1 if rank < world_size - 1 else None
        self.max_in_flight = max_in_flight
        self.device = device
        self.in_flight: deque[tuple[list[dist.Work], tuple[torch.Tensor, ...]]] = deque()
        self.bytes_sent = 0

    def send(self, activation: Any, labels: Any) -> None:
        activation, labels = self._wire(activation), self._wire(labels)
        header = torch.zeros(HEADER, dtype=torch.int64)
        header[:2 + activation.dim()] = torch.tensor([DTYPES.index(activation.dtype), activation.dim(),
                                                      *activation.shape])
        header = header.to(self.device)
        tensors = (header, activation, labels)
        works = [dist.isend(tensor, self.next) for tensor in tensors]
        self.in_flight.append((works, tensors))  # the tensors must live until their send completes
        self.bytes_sent += sum(t.numel() * t.element_size() for t in tensors)
        while len(self.in_flight) > self.max_in_flight:
            self._complete_oldest()

    def receive(self, backend: Backend) -> tuple[Any, Any]:
        header = torch.empty(HEADER, dtype=torch.int64, device=self.device)
        dist.recv(header, self.previous)
        dtype, dims, *shape = header.tolist()
        activation = torch.empty(shape[:dims], dtype=DTYPES[dtype], device=self.device)
        dist.recv(activation, self.previous)
        labels = torch.empty(shape[0], dtype=torch.int64, device=self.device)
        dist.recv(labels, self.previous)
        if backend.name == "torch":
            return activation.to(backend.device), labels.to(backend.device)
        return backend.to_batch(activation.cpu().numpy(), labels.cpu().numpy())

    def drain(self) -> None:
        while self.in_flight:
            self._complete_oldest()

    def _complete_oldest(self) -> None:
        works, _ = self.in_flight.popleft()
        for work in works:
            work.wait()

    def _wire(self, value: Any) -> torch.Tensor:
        if isinstance(value, np.ndarray):  # the ort backend's arrays
            value = torch.from_numpy(np.ascontiguousarray(value))
        return value.detach().contiguous().to(self.device)
