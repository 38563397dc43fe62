"""llcompile.fit: a Program or its directory trained on arrays, a torch Dataset or DataLoader, in one call."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import llcompile
from llcompile.data.synthetic import make_synthetic_splits
from llcompile.errors import LLCompileError
from llcompile.train import TrainConfig, train
from tests.fixtures import legacy_models as lm

SHAPE, CLASSES, SAMPLES = (3, 16, 16), 10, 48
OPTIONS = dict(epochs=2, batch_size=16, lr=0.05, seed=3)


@pytest.fixture(scope="module")
def program():
    return llcompile.transform(lm.small_cnn(), "dbl", blocks=2, boundary_policy="fixed")


@pytest.fixture(scope="module")
def spec_run(program, tmp_path_factory):
    """The same data through ``llcompile train``'s path: the ``synthetic:48`` spec."""
    program_dir = program.save(tmp_path_factory.mktemp("fit") / "program")
    return train(program_dir, TrainConfig(data=f"synthetic:{SAMPLES}", **OPTIONS), program_dir.parent / "run",
                 show_progress=False)


def _arrays():
    splits = make_synthetic_splits(SAMPLES, SHAPE, CLASSES)
    return (splits.train_x, splits.train_y), (splits.test_x, splits.test_y)


def _without_times(history):
    return [{k: v for k, v in epoch.items() if k not in ("epoch_time_s", "images_per_s", "peak_memory_mb")}
            for epoch in history]


def test_arrays_train_exactly_as_the_same_data_by_spec(program, spec_run):
    result = llcompile.fit(program, _arrays(), **OPTIONS)
    assert _without_times(result.history) == _without_times(spec_run.history)
    assert result.test_accuracy == spec_run.test_accuracy and result.run_dir is None
    trained = onnx.load(spec_run.trained_model)
    assert [t.raw_data for t in result.model.graph.initializer] == [t.raw_data for t in trained.graph.initializer]


@pytest.mark.parametrize("wrap", [
    lambda x, y: TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
    lambda x, y: DataLoader(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)), batch_size=5),
], ids=["Dataset", "DataLoader"])
def test_a_torch_dataset_or_dataloader_is_read_in_order(program, spec_run, wrap):
    (train_x, train_y), (test_x, test_y) = _arrays()
    result = llcompile.fit(program, (wrap(train_x, train_y), wrap(test_x, test_y)), **OPTIONS)
    assert _without_times(result.history) == _without_times(spec_run.history)


def test_a_program_directory_and_a_run_dir(program, tmp_path):
    program_dir = program.save(tmp_path / "program")
    result = llcompile.fit(program_dir, "synthetic:32", tmp_path / "run", epochs=1, batch_size=16)
    assert result.run_dir == tmp_path / "run" and (tmp_path / "run" / "trained_model.onnx").is_file()
    assert len(result.history) == 1


@pytest.mark.parametrize("data, options, fragment", [
    ([1, 2], {}, "a spec string .* or a pair"),
    (((np.zeros((4, 3, 16, 16)), np.zeros(4)), (np.zeros((2, 3, 16, 16)), np.zeros(2, np.int64))), {},
     "the train labels are class indices"),
    (((np.zeros((4, 3, 16, 16)), np.zeros(3, np.int64)), (np.zeros((2, 3, 16, 16)), np.zeros(2, np.int64))), {},
     "the train data needs samples x \\[N, ...\\] and labels y \\[N\\]"),
    ("synthetic:8", {"epoch": 2}, "fit takes no option epoch"),
])
def test_bad_data_and_options_are_named(program, data, options, fragment):
    with pytest.raises(LLCompileError, match=fragment):
        llcompile.fit(program, data, **options)


def test_a_diverging_run_stops_at_the_first_bad_loss(program, tmp_path):
    """A learning rate far too large: the loss becomes NaN and the run stops there, in one line that
    says where, instead of training on NaN to the end."""
    with pytest.raises(llcompile.TrainingDiverged, match=r"^training diverged: block\d's loss is nan at epoch \d+, "
                                                         r"step \d+; lower the learning rate \(lr\)$"):
        llcompile.fit(program, _arrays(), run_dir=tmp_path / "run", epochs=3, batch_size=16, lr=1e4)
