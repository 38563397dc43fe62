"""--head-warmup in a run: an aux head new to the run trains alone, its block held, then the block learns."""

import numpy as np
import pytest
from onnx import numpy_helper

import llcompile
import llcompile.train.loop as loop
from llcompile.policies.boundary_policy import BoundaryPolicy
from llcompile.cli.inspection import describe, render_text
from llcompile.train import train
from llcompile.train.checkpoint import load_checkpoint
from llcompile.train.transition import ProgramController
from tests.train.test_training import _config


@pytest.fixture(scope="module")
def small_cnn(zoo_file):
    return zoo_file("small_cnn", input_shape=(1, 8, 8))


def _end_to_end_then_three_blocks(model, path, head_warmup):
    return llcompile.transform(model, "dbl", boundary_policy="schedule", boundary_schedule="1:1,2:3",
                               head_warmup=head_warmup).save(path)


@pytest.mark.parametrize("backend", ["torch", "ort"])
def test_the_new_heads_blocks_are_held_for_the_warmup_steps_only(small_cnn, tmp_path, backend, monkeypatch):
    held = []

    def recording(work, stage, stage_index, activation, labels, lr, step):
        held.append((work.epoch, step, stage.name, work.held(stage_index, step)))
        return train_stage(work, stage, stage_index, activation, labels, lr, step)

    train_stage = loop.train_stage
    monkeypatch.setattr(loop, "train_stage", recording)
    program = _end_to_end_then_three_blocks(small_cnn, tmp_path / "program", 0.5)
    history = train(program, _config(backend=backend, epochs=3), tmp_path / "run", show_progress=False).history
    stages = {s.name: s for s in llcompile.transform(small_cnn, "dbl", blocks=3).stages}
    new_cuts = [s.output for s in stages.values() if s.head]
    assert history[1]["boundary_change"]["head_warmup"] == {"cuts": new_cuts, "epochs": 0.5}
    assert "the new heads train alone for 0.5 epoch(s) first" in render_text(describe(tmp_path / "run"))
    assert "boundary_change" not in history[2]
    # 1437 digits in batches of 64: 23 steps an epoch; half an epoch of warm-up is ceil(11.5) = 12 steps
    expected = [(epoch, step, name,
                 frozenset(s.params) - frozenset(s.head.params) if epoch == 1 and step < 12 and s.head else frozenset())
                for epoch in (1, 2) for step in range(23) for name, s in stages.items()]
    assert held[23:] == expected  # epoch 0 trains end to end: one stage, nothing held
    assert all(h == frozenset() for _, _, _, h in held[:23])
    body = expected[0][3]
    assert body and not body & set(stages["block1"].head.params)


@pytest.mark.parametrize("backend", ["torch", "ort"])
def test_a_block_held_for_a_whole_epoch_keeps_its_weights_and_slots(small_cnn, tmp_path, backend):
    config = _config(backend=backend, epochs=2, lr_schedule="constant")  # epoch 1 the same in a 1-epoch run
    warmed = _end_to_end_then_three_blocks(small_cnn, tmp_path / "warmed", 1.0)
    warm, plain, first = tmp_path / "warm", tmp_path / "plain", tmp_path / "first"
    train(warmed, config, warm, show_progress=False)
    train(_end_to_end_then_three_blocks(small_cnn, tmp_path / "plain-program", 0.0), config, plain,
          show_progress=False)
    train(warmed, _config(backend=backend, epochs=1, lr_schedule="constant"), first, show_progress=False)
    after_one, after_two, without = (load_checkpoint(d / "checkpoint.npz")[0] for d in (first, warm, plain))
    stages = llcompile.transform(small_cnn, "dbl", blocks=3).stages
    for stage in stages[:-1]:
        heads = set(stage.head.params)
        initial = {i.name: numpy_helper.to_array(i) for i in stage.model.graph.initializer}
        for name in stage.params:
            if name in heads:  # trained from its initial value
                assert not np.array_equal(after_two[name], initial[name]), name
                continue
            np.testing.assert_array_equal(after_two[name], after_one[name], err_msg=name)
            np.testing.assert_array_equal(after_two[f"{name}/momentum_buffer"], after_one[f"{name}/momentum_buffer"],
                                          err_msg=name)
        assert any(not np.array_equal(without[n], after_one[n]) for n in set(stage.params) - heads)
    last = set(stages[-1].params)
    assert all(not np.array_equal(after_two[n], after_one[n]) for n in last)  # the final block learned


def test_warmups_follow_the_cuts_across_moves(small_cnn):
    a, b = llcompile.analyze(llcompile.load(small_cnn)).cut_points[:2]
    program = llcompile.transform(small_cnn, "dbl", boundary_policy="schedule", head_warmup=1.5,
                                  boundary_schedule=f"1:1,2:{a},3:{a}+{b},4:{b},5:{a}+{b}")
    controller = ProgramController(program, None, BoundaryPolicy.from_options(program.options))
    controller.begin_epoch(1)
    assert controller.warming_cuts(0, 0, 10) == set()
    controller.begin_epoch(2)
    assert controller.warming_cuts(1, 0, 10) == {a}
    assert controller.warming_cuts(2, 4, 10) == {a} and controller.warming_cuts(2, 5, 10) == set()
    controller.begin_epoch(3)  # a cut kept warms up from the epoch it appeared in; a new one from now
    assert controller.warming_cuts(2, 4, 10) == {a, b} and controller.warming_cuts(2, 5, 10) == {b}
    controller.begin_epoch(4)
    assert controller.warming_cuts(3, 4, 10) == {b}
    controller.begin_epoch(5)  # a cut that left and came back starts again
    assert controller.warming_cuts(4, 0, 10) == {a}
    restored = ProgramController(program, None, BoundaryPolicy.from_options(program.options), controller.state())
    assert restored.warming_cuts(4, 14, 10) == {a} and restored.warming_cuts(4, 15, 10) == set()


@pytest.mark.parametrize("options, message", [
    ({"boundary_policy": "fixed", "head_warmup": 1.0}, "head_warmup goes with boundary_policy schedule"),
    ({"boundary_policy": "progressive", "head_warmup": 1.0}, "head_warmup goes with"),
    ({"boundary_policy": "adaptive", "head_warmup": -1.0}, "head_warmup must be >= 0"),
])
def test_a_warmup_no_head_can_use_is_refused(options, message):
    with pytest.raises(llcompile.LLCompileError, match=message):
        BoundaryPolicy.from_options(options)


def test_a_held_block_is_not_taken_for_settled(resnet_digits_model, tmp_path):
    # the scenario of test_sliding_moves_a_boundary_to_a_cut_point_that_was_no_initial_boundary: a boundary
    # slides after epoch 2; its new head then warms up for all of epoch 3, its block held. The block's update
    # norms of epoch 3 are zero, and read as settled they would slide the boundary on after every warm-up
    program = llcompile.transform(resnet_digits_model, "dbl", blocks=3, boundary_policy="sliding",
                                  settle_threshold=1.0, boundary_patience=1, activation_budget=1.0,
                                  balance_by="macs", head_warmup=1.0)
    history = train(program.save(tmp_path / "program"), _config(), tmp_path / "run", show_progress=False).history
    (target,) = set(history[2]["cuts"]) - set(program.cuts)
    assert history[2]["boundary_change"]["head_warmup"]["cuts"] == [target]
    (held,) = [s for s in llcompile.transform(resnet_digits_model, "dbl", cuts=history[2]["cuts"]).stages
               if s.output == target]
    assert held.layers and all(history[2]["update_norms"][layer] == 0 for layer in held.layers)
    assert history[2]["boundary_signals"]["settled"][target] is False
