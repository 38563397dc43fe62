"""Training with block boundaries that move between epochs: state carries, heads resume, resume is exact."""

import gc
import json
import re
import subprocess
import sys
import weakref

import numpy as np
import pytest

import llcompile
from llcompile.policies.boundary_policy import BoundaryPolicy
from llcompile.errors import LLCompileError
from llcompile.cli.inspection import describe, render_text
from llcompile.train import train
from llcompile.train.checkpoint import load_checkpoint
from llcompile.train.transition import ProgramController
from tests.train.test_training import _assert_same_run, _config, _run_cli, _wait_for_progress


@pytest.mark.parametrize("backend", ["torch", "ort"])
def test_schedule_moves_boundaries_and_a_parked_head_resumes(resnet_digits_model, tmp_path, backend):
    program = llcompile.transform(resnet_digits_model, "dbl", boundary_policy="schedule",
                                  boundary_schedule="1:4,2:2,3:4").save(tmp_path / "program")
    four = llcompile.Program.load(program)
    two = llcompile.transform(resnet_digits_model, "dbl", blocks=2)
    parked = sorted(set(p for s in four.stages if s.head for p in s.head.params)
                    - set(p for s in two.stages if s.head for p in s.head.params))
    assert parked  # heads of the 4-block program that the 2-block one does not have

    # a constant rate: a run's first epochs do not depend on how many epochs it has in all
    run_dir = tmp_path / "run"
    train(program, _config(backend=backend, epochs=2, lr_schedule="constant"), run_dir, show_progress=False)
    after_two, _ = load_checkpoint(run_dir / "checkpoint.npz")
    history = train(program, _config(backend=backend, epochs=3, lr_schedule="constant"), run_dir, resume=True,
                    show_progress=False).history
    assert [len(r["stages"]) for r in history] == [4, 2, 4]
    assert [len(r["cuts"]) for r in history] == [3, 1, 3]
    assert history[1]["boundary_change"]["reason"] == "schedule: 2 blocks from epoch 2"
    assert history[2]["boundary_change"]["to"] == four.cuts
    # the heads parked during epoch 2 are kept in the checkpoint as they were after epoch 1 ...
    trained_one = train(program, _config(backend=backend, epochs=1, lr_schedule="constant"), tmp_path / "one",
                        show_progress=False)
    after_one, _ = load_checkpoint(trained_one.run_dir / "checkpoint.npz")
    for name in parked:
        np.testing.assert_array_equal(after_two[name], after_one[name], err_msg=name)
    # ... and trained again once their boundaries are back
    final, _ = load_checkpoint(run_dir / "checkpoint.npz")
    assert all(not np.array_equal(final[name], after_two[name]) for name in parked)


def test_a_schedule_moves_a_boundary_off_an_inner_cut_and_back(resnet_digits_model, tmp_path):
    """--inner-cuts at run time: each re-emitted program joins the skip and branch at its inner cut
    only, and the head parked at the inner cut resumes from its state."""
    inner, unit = "inner_cut./stages/layer2/layer2.0/conv2/conv/Conv", "/stages/layer3/layer3.0/relu/Relu_output_0"
    program = llcompile.transform(resnet_digits_model, "dbl", inner_cuts=True, boundary_policy="schedule",
                                  boundary_schedule=f"1:{inner}+{unit},2:{unit},3:{inner}+{unit}")
    run_dir = tmp_path / "run"
    config = _config(epochs=2, lr_schedule="constant")
    train(program.save(tmp_path / "program"), config, run_dir, show_progress=False)
    after_two, _ = load_checkpoint(run_dir / "checkpoint.npz")
    history = train(tmp_path / "program", _config(epochs=3, lr_schedule="constant"), run_dir, resume=True,
                    show_progress=False).history
    assert [r["cuts"] for r in history] == [[inner, unit], [unit], [inner, unit]]
    head = sorted(p for p in after_two if p.startswith(f"aux@{inner}."))
    assert head  # kept, parked, through epoch 2
    final, _ = load_checkpoint(run_dir / "checkpoint.npz")
    assert any(not np.array_equal(final[p], after_two[p]) for p in head)  # and trained again in epoch 3


def test_a_program_the_run_moved_away_from_is_freed(resnet_digits_model):
    """The controller keeps only the program in force (each holds a copy of the model's weights): the
    program of epoch 1 is garbage once the run has moved on, and coming back recompiles it, equal."""
    program = llcompile.transform(resnet_digits_model, "dbl", boundary_policy="schedule",
                                  boundary_schedule="1:4,2:2,3:4")
    controller = ProgramController(program, None, BoundaryPolicy.from_options(program.options))
    controller.begin_epoch(1)
    first = weakref.ref(controller.program())
    assert len(first().stages) == 4
    del program
    assert controller.begin_epoch(2) is True and len(controller.program().stages) == 2
    gc.collect()
    assert first() is None
    assert controller.begin_epoch(3) is True
    back = controller.program()
    again = llcompile.transform(resnet_digits_model, "dbl", blocks=4)
    assert [(s.name, s.input, s.params, s.head) for s in back.stages] == [(s.name, s.input, s.params, s.head)
                                                                        for s in again.stages]


@pytest.mark.parametrize("backend", ["torch", "ort"])
def test_adaptive_merges_a_boundary_then_restores_it(resnet_digits_model, tmp_path, backend):
    # merge_gain 1: every boundary is worth merging, but min_blocks 3 allows one merge; the merged
    # layers' update norms fall below their epoch-1 peak, so the boundary comes back after epoch 2
    # balanced by forward MACs: the blocks this scenario was built on (the merged layers settle)
    program = llcompile.transform(resnet_digits_model, "dbl", boundary_policy="adaptive", merge_gain=1.0,
                                  min_blocks=3, boundary_patience=1, settle_threshold=1.0, activation_budget=1.0,
                                  balance_by="macs")
    history = train(program.save(tmp_path / "program"), _config(backend=backend), tmp_path / "run",
                    show_progress=False).history
    assert [len(r["cuts"]) for r in history] == [3, 2, 3]
    signals = history[0]["boundary_signals"]
    worst = min(signals["boundaries"], key=lambda s: s["gain"])
    assert signals["decision"].startswith(f"merged at {worst['cut']}")
    assert all(0 < s["activations_if_merged"] <= 1 for s in signals["boundaries"])
    assert worst["cut"] not in history[1]["cuts"] and history[2]["cuts"] == program.cuts
    assert history[1]["boundary_change"]["reason"].startswith("adaptive: merged at " + worst["cut"])
    assert history[2]["boundary_change"]["reason"].startswith("adaptive: restored " + worst["cut"])
    for record in history:  # the gains logged are the stages' own training accuracies
        accs = [record["stages"][name]["acc"] for name in record["stages"]]
        assert [s["gain"] for s in record["boundary_signals"]["boundaries"]] == pytest.approx(
            [b - a for a, b in zip(accs, accs[1:])], abs=1e-4)


def test_adaptive_merges_only_within_the_activation_budget(resnet_digits_model, tmp_path):
    from llcompile.cost.cost_model import cost_program

    program = llcompile.transform(resnet_digits_model, "dbl", boundary_policy="adaptive", merge_gain=1.0,
                                  activation_budget=0.6)
    history = train(program.save(tmp_path / "program"), _config(epochs=2), tmp_path / "run",
                    show_progress=False).history
    signals = history[0]["boundary_signals"]["boundaries"]
    (removed,) = [s for s in signals if s["cut"] not in history[1]["cuts"]]
    # the smallest gain among the merges within budget, not necessarily the smallest of all
    assert removed["gain"] == min(s["gain"] for s in signals if s["activations_if_merged"] <= 0.6)
    # and the share it was judged by is the cost model's for the merged program
    bp_peak = cost_program(llcompile.transform(resnet_digits_model, "bp")).activation_peak_bytes
    merged = llcompile.transform(resnet_digits_model, "dbl", cuts=history[1]["cuts"])
    assert cost_program(merged).activation_peak_bytes / bp_peak == pytest.approx(removed["activations_if_merged"],
                                                                                 abs=1e-4)
    assert any(s["activations_if_merged"] > 0.6 for s in signals)  # the budget ruled something out


@pytest.mark.parametrize("backend", ["torch", "ort"])
def test_sliding_moves_a_boundary_to_a_cut_point_that_was_no_initial_boundary(resnet_digits_model, tmp_path,
                                                                                backend):
    # settle threshold 1: a block has settled once all its layers moved less (per unit lr) than at their
    # peak, which the epoch-1 norms are by construction; so the earliest settled boundary slides after epoch 2
    # balanced by forward MACs: the blocks this scenario was built on (a boundary settles by epoch 2)
    program = llcompile.transform(resnet_digits_model, "dbl", blocks=3, boundary_policy="sliding",
                                  settle_threshold=1.0, boundary_patience=1, activation_budget=1.0,
                                  balance_by="macs")
    cut_points = llcompile.analyze(llcompile.load(resnet_digits_model)).cut_points
    history = train(program.save(tmp_path / "program"), _config(backend=backend), tmp_path / "run",
                    show_progress=False).history
    assert history[0]["boundary_signals"]["decision"] == "no change"  # one epoch: every norm is its own peak
    assert history[1]["cuts"] == program.cuts
    settled = history[1]["boundary_signals"]["settled"]
    slid = next(cut for cut in program.cuts if settled[cut])
    target = cut_points[cut_points.index(slid) + 1]
    assert target not in program.cuts
    assert history[2]["cuts"] == [target if c == slid else c for c in program.cuts]
    assert history[2]["boundary_change"]["reason"].startswith(f"sliding: slid {slid} -> {target}")
    state, _ = load_checkpoint(tmp_path / "run" / "checkpoint.npz")
    assert f"aux@{target}.fc.weight" in state  # the new cut's head trained in epoch 3 and is kept


def test_progressive_merges_the_earliest_settled_block(resnet_digits_model, tmp_path):
    program = llcompile.transform(resnet_digits_model, "dbl", blocks=6, boundary_policy="progressive",
                                  settle_threshold=1.0, boundary_patience=1, activation_budget=1.0)
    history = train(program.save(tmp_path / "program"), _config(), tmp_path / "run", show_progress=False).history
    settled = history[1]["boundary_signals"]["settled"]
    merged = next(cut for cut in program.cuts if settled[cut])
    assert history[2]["cuts"] == [c for c in program.cuts if c != merged]
    assert history[2]["boundary_change"]["reason"].startswith(f"progressive: merged at {merged}")


def test_transform_refuses_a_moving_policy_when_a_cut_point_takes_no_head(zoo_file):
    # --aux-pool 3 divides none of ResNet-20's spatial sizes (32, 16, 8): a fixed program cut only at the
    # 2-D Flatten output compiles; a moving one, which may reach the 4-D cuts, is refused at transform time
    path = zoo_file("resnet20")
    cut_points = llcompile.analyze(llcompile.load(path)).cut_points
    flat = cut_points[-1]  # the Flatten output: a 2-D cut, which any pool size accepts
    llcompile.transform(path, "dbl", cuts=[flat], aux_pool=3, boundary_policy="fixed")
    with pytest.raises(LLCompileError, match="may move a boundary to any cut point.*aux_pool=3"):
        llcompile.transform(path, "dbl", cuts=[flat], aux_pool=3, boundary_policy="sliding")


def test_inspect_run_dir_shows_the_boundary_history(resnet_digits_model, tmp_path):
    program = llcompile.transform(resnet_digits_model, "dbl-hebbian", blocks=2, start_epoch=2, ramp_epochs=1,
                                  max_prefix=2, boundary_policy="schedule",
                                  boundary_schedule="3:1").save(tmp_path / "program")
    train(program, _config(), tmp_path / "run", show_progress=False)
    description = describe(tmp_path / "run")
    assert description["kind"] == "run" and description["strategy"] == "dbl-hebbian"
    assert [e.get("prefix") for e in description["epochs"]] == [0, 2, 2]
    text = render_text(description)
    assert "Hebbian prefix 0 -> 2" in text and "schedule: 1 blocks from epoch 3" in text
    # the table and the list of changes count the same blocks: those trained by gradient
    rows = [row.split() for row in text.splitlines()]
    table = {int(row[0]): int(row[-1]) for row in rows if row and row[0].isdigit()}
    assert table == {1: 2, 2: 2, 3: 1}
    changes = re.findall(r"epoch (\d+): blocks (\d+) -> (\d+)", text)
    assert changes and all((table[int(e) - 1], table[int(e)]) == (int(a), int(b)) for e, a, b in changes)
    result = subprocess.run([sys.executable, "-m", "llcompile", "inspect", str(tmp_path / "run"), "--format",
                             "json"], capture_output=True, text=True)
    assert result.returncode == 0 and json.loads(result.stdout)["epochs"][2]["boundary_change"]["to"] == []


@pytest.mark.parametrize("policy", [dict(boundary_policy="schedule", boundary_schedule="1:4,2:2"),
                                    dict(boundary_policy="adaptive", merge_gain=1.0),
                                    # a boundary slides after epoch 2 (test_sliding_moves_a_boundary_...); slow:
                                    # the default run keeps the suite under 8 minutes with two of the four
                                    pytest.param(dict(boundary_policy="sliding", blocks=3, settle_threshold=1.0,
                                                      boundary_patience=1, activation_budget=1.0),
                                                 marks=pytest.mark.slow),
                                    # the new heads of epoch 2 train alone for its first half
                                    pytest.param(dict(boundary_policy="schedule", boundary_schedule="1:2,2:4",
                                                      head_warmup=0.5), marks=pytest.mark.slow)])
def test_resume_across_a_boundary_change_matches_an_uninterrupted_run(resnet_digits_model, tmp_path, policy):
    program = llcompile.transform(resnet_digits_model, "dbl", **policy).save(tmp_path / "program")
    reference = tmp_path / "reference"
    subprocess.run(_run_cli(program, reference), check=True, timeout=300)
    interrupted = tmp_path / "interrupted"
    proc = subprocess.Popen(_run_cli(program, interrupted), stderr=subprocess.PIPE, text=True)
    _wait_for_progress(interrupted, proc, min_epochs_done=1)  # inside epoch 2, the first with 2 blocks
    proc.kill()
    proc.wait(timeout=60)
    resumed = subprocess.run(_run_cli(program, interrupted, "--resume"), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_run(reference, interrupted)


def test_a_new_augmented_head_starts_from_the_trained_weights_it_copies(resnet_digits_model):
    from llcompile.train.loop import _new_head_copies

    program = llcompile.transform(resnet_digits_model, "dbl", blocks=4, aux_head="augmented")
    copies = {c: o for s in program.stages if s.head for c, o in s.head.copied_from.items()}
    assert copies and all(c.startswith("aux@") and not o.startswith("aux@") for c, o in copies.items())
    trained = {o: np.full(2, i, np.float32) for i, o in enumerate(sorted(set(copies.values())))}
    seen_before = next(iter(copies))
    carried = {**trained, seen_before: np.zeros(1, np.float32)}
    seeded = _new_head_copies(program, carried)
    assert set(seeded) == set(copies) - {seen_before}  # a head seen before resumes from its own state
    for copy, value in seeded.items():
        np.testing.assert_array_equal(value, trained[copies[copy]])
