"""The peak memory an epoch records: a block of known size allocated and freed in the middle of the
epoch (inside one stage's step) must show in the epoch's ``peak_memory_mb``; the resident memory
at the epoch's start or end would not show it."""

from __future__ import annotations

import time

import numpy as np

from llcompile.backends.torch.backend import TorchStage
from llcompile.train import train
from llcompile.train.memory import current_rss_bytes
from tests.train.test_training import _config

BLOCK = 256 * 2**20


def test_a_block_held_for_one_step_sets_the_epochs_peak(digits_programs, tmp_path, monkeypatch):
    step_of_stage = TorchStage.train_step
    seen = {}

    def allocating(self, *args, **kwargs):
        if not seen:  # once, in the first step
            seen["before"] = current_rss_bytes()
            block = np.ones(BLOCK // 8)  # written, so resident
            time.sleep(0.05)  # several of the sampler's intervals
            seen["during"] = current_rss_bytes()
            seen["block_bytes"] = block.nbytes  # freed on return
        return step_of_stage(self, *args, **kwargs)

    monkeypatch.setattr(TorchStage, "train_step", allocating)
    history = train(digits_programs["bp"], _config(epochs=1, data_limit=256), tmp_path / "run",
                    show_progress=False).history
    assert seen["block_bytes"] == BLOCK and seen["during"] >= seen["before"] + 0.95 * BLOCK  # resident
    assert current_rss_bytes() < seen["before"] + BLOCK / 2  # and was given back
    assert history[0]["peak_memory_mb"] * 2**20 >= seen["before"] + 0.95 * BLOCK
