"""Data sets and the input pipeline of the training runtime.

    dataset = load_dataset("cifar10:cifar10-jpeg.zip", input_shape=(3, 32, 32), num_classes=10)
    for x, y in BatchLoader(dataset, "train", batch_size=128, seed=0, epoch=3):
        ...  # x float32 [128, 3, 32, 32], normalised and augmented; y int64 [128]

Specs: ``cifar10:PATH`` (python batches folder, image-folder tree, or a zip of one),
``digits``, ``mnist1d``, ``synthetic[:N]``.
"""

from .dataset import Dataset
from .loader import BatchLoader
from .specs import load_dataset
from .throughput import measure_loader_throughput

__all__ = ["BatchLoader", "Dataset", "load_dataset", "measure_loader_throughput"]
