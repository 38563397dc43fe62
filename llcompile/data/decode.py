"""Decoding the image files of a tree into one uint8 [N, 3, H, W] array, in two processes when it pays."""

from __future__ import annotations

import io
import multiprocessing
import os
import sys
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from llcompile.errors import DataError

from .image_tree import TreeSource

# below this many images a second process costs more than it saves
PARALLEL_MIN_IMAGES = 4000
WORKERS = 2
CHUNKS_PER_WORKER = 8

# Pillow reports a damaged file with any of these
DECODE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class Chunk(NamedTuple):
    """Encoded images for one decoding task, named for error messages."""

    blobs: list[bytes]
    names: list[str]
    reference: tuple[str, tuple[int, ...]]  # (name, (H, W, 3)): the size every image must have


def decode_images(source: TreeSource, members: list[str], workers: int | None = None) -> np.ndarray:
    """The images ``members`` of ``source``, in that order, as RGB uint8 [N, 3, H, W]."""
    workers = _default_workers(len(members)) if workers is None else workers
    with source.reader() as read:
        first_name = source.describe(members[0])
        reference = (first_name, _decode_rgb(read(members[0]), first_name).shape)
        # read lazily: this process reads chunk k+1 from disk while the workers decode chunk k
        chunks = (
            Chunk([read(member) for member in part], [source.describe(member) for member in part], reference)
            for part in _split(members, workers * CHUNKS_PER_WORKER)
        )
        if workers > 1:
            # fork: the children start at once and need nothing re-imported (spawn would re-run __main__)
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                parts = list(pool.imap(decode_chunk, chunks))
        else:
            parts = [decode_chunk(chunk) for chunk in chunks]
    return np.ascontiguousarray(np.concatenate(parts).transpose(0, 3, 1, 2))


def _default_workers(count: int) -> int:
    if count < PARALLEL_MIN_IMAGES or sys.platform != "linux" or len(os.sched_getaffinity(0)) < WORKERS:
        return 1
    return WORKERS


def _split(items: list[str], parts: int) -> list[list[str]]:
    size = max(1, -(-len(items) // parts))
    return [items[start:start + size] for start in range(0, len(items), size)]


def decode_chunk(chunk: Chunk) -> np.ndarray:
    """[n, H, W, 3]: every image must have the reference's size."""
    reference_name, shape = chunk.reference
    images = np.empty((len(chunk.blobs), *shape), np.uint8)
    for index, (blob, name) in enumerate(zip(chunk.blobs, chunk.names)):
        pixels = _decode_rgb(blob, name)
        if pixels.shape != shape:
            raise DataError(
                f"image {name} is {_size(pixels.shape)} pixels but {reference_name} is {_size(shape)}: "
                "all images need one size"
            )
        images[index] = pixels
    return images


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]}"


def _decode_rgb(data: bytes, name: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    except UnidentifiedImageError:
        raise DataError(f"cannot decode image {name}: not an image file Pillow can read") from None
    except DECODE_ERRORS as error:
        raise DataError(f"cannot decode image {name}: {error}") from None
