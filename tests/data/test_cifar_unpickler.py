"""CIFAR python batches are read by an unpickler that builds only what the format holds."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from llcompile.data import load_dataset
from llcompile.errors import LLCompileError
from tests.data.builders import batch_dict

SHAPE = (3, 32, 32)


class _RunsCode:
    """Unpickling this calls ``os.system``: what a data folder from elsewhere could hide in a batch."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _CallsEval:
    def __reduce__(self):
        return eval, ("__import__('os').getcwd()",)


def _write(path, value, protocol: int | str = pickle.DEFAULT_PROTOCOL) -> None:
    """``protocol`` "numpy1": protocol 2 naming numpy's modules as numpy 1 did (the files CIFAR ships)."""
    data = pickle.dumps(value, protocol=2 if protocol == "numpy1" else protocol)
    if protocol == "numpy1":
        data = data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
        assert b"numpy.core.multiarray\n_reconstruct" in data or b"_reconstruct" not in data
    path.write_bytes(data)


@pytest.mark.parametrize("protocol", ["numpy1", 2, 3, 4, 5])
def test_batches_load_in_every_pickle_protocol(batches_dir, tiny, protocol):
    """numpy writes its arrays differently per protocol (_reconstruct, _frombuffer, _codecs for bytes)."""
    halves = np.array_split(np.arange(len(tiny.train_y)), 2)
    for number, part in enumerate(halves, start=1):
        batch = {**batch_dict(tiny.train_x[part], tiny.train_y[part]), b"batch_label": b"training batch",
                 b"filenames": [b"a.png"] * len(part)}
        _write(batches_dir / f"data_batch_{number}", batch, protocol)
    _write(batches_dir / "test_batch", batch_dict(tiny.test_x, tiny.test_y), protocol)
    _write(batches_dir / "batches.meta", {b"label_names": [b"airplane", b"bird", b"cat"], b"num_vis": 3072},
           protocol)
    data = load_dataset(f"cifar10:{batches_dir}", SHAPE, 3)
    for name in ("train_x", "train_y", "test_x", "test_y"):
        np.testing.assert_array_equal(getattr(data, name), getattr(tiny, name), err_msg=name)


@pytest.mark.parametrize("payload", ["system", "eval", "nested"])
@pytest.mark.parametrize("file", ["data_batch_1", "test_batch", "batches.meta"])
def test_a_pickle_that_would_run_code_is_refused(batches_dir, tmp_path, monkeypatch, payload, file):
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "PWNED"
    value = {"system": _RunsCode(marker), "eval": _CallsEval(),
             "nested": {b"data": np.zeros((1, 3072), np.uint8), b"labels": [_RunsCode(marker)]}}[payload]
    _write(batches_dir / file, value)
    with pytest.raises(LLCompileError) as error:
        load_dataset(f"cifar10:{batches_dir}", SHAPE, 3)
    message = str(error.value)
    assert "is not a CIFAR-10 batch: it refers to" in message and "refused: loading it could run code" in message
    assert "\n" not in message
    assert not marker.exists()
