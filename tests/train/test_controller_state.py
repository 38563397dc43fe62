"""The controller's decisions, metrics fields and checkpoint JSON are those of the controller before
it was split into a prefix and a boundary controller: tests/fixtures/controller_states.json holds
what that controller wrote for these scenarios (every state after each begin_epoch and end_epoch,
and every end_epoch record)."""

import json
from pathlib import Path

import pytest

import llcompile
from llcompile.compiler.strategies import boundary_policy_of, learning_mode_of
from llcompile.train.transition import ProgramController

FIXTURE = Path(__file__).parent.parent / "fixtures" / "controller_states.json"
SCENARIOS = [
    ("dbl-hebbian", dict(blocks=3, boundary_policy="adaptive", merge_gain=0.05, boundary_patience=1, head_warmup=0.5,
                         learning_mode="dynamic", start_epoch=2, max_prefix=1, prefix_step=1)),
    ("dbl", dict(blocks=2, boundary_policy="sliding", boundary_patience=1, head_warmup=1.0, activation_budget=1.0)),
    ("dbl", dict(boundary_policy="schedule", boundary_schedule="1:1,2:3", head_warmup=1.0)),
    ("local-sgd", dict(schedule="step", start_epoch=1, ramp_epochs=2, max_prefix=2)),
]
EPOCHS = 4


@pytest.fixture(scope="module")
def small_cnn(zoo_file):
    return zoo_file("small_cnn", input_shape=(1, 8, 8))


def _controller(program, state=None):
    return ProgramController(program, learning_mode_of(program.strategy, program.options),
                             boundary_policy_of(program.strategy, program.options), state)


def _run(model, strategy, options):
    """The states and records of ``EPOCHS`` epochs with made-up signals: norms falling as 1/epoch^2, a
    loss that rises once, and each later block's head 0.01 more accurate than the one before."""
    controller = _controller(llcompile.transform(model, strategy, **options))
    layers = [layer.name for layer in llcompile.analyze(llcompile.load(model)).layers]
    states, records, norms, losses, lrs = [], [], [], [], []
    for epoch in range(1, EPOCHS + 1):
        controller.begin_epoch(epoch)
        states.append(json.dumps(controller.state()))
        norms.append({layer: 1.0 / epoch ** 2 for layer in layers})
        losses.append([2.0, 1.5, 1.7, 1.2][epoch - 1])
        lrs.append(0.1)
        metrics = {s.name: {"loss": 1.0 / (i + 1), "acc": 0.5 + 0.01 * i}
                   for i, s in enumerate(controller.program().stages)}
        records.append(controller.end_epoch(epoch, norms, losses, metrics, lrs))
        states.append(json.dumps(controller.state()))
    return states, records


@pytest.mark.parametrize("index", range(len(SCENARIOS)))
def test_decisions_records_and_states_are_the_unsplit_controllers(small_cnn, index):
    expected = json.loads(FIXTURE.read_text())
    states, records = _run(small_cnn, *SCENARIOS[index])
    per_run = 2 * EPOCHS
    assert states == expected["states"][index * per_run:(index + 1) * per_run]
    assert records == expected["records"][index * EPOCHS:(index + 1) * EPOCHS]


@pytest.mark.parametrize("index", range(len(SCENARIOS)))
def test_an_old_checkpoints_controller_state_is_written_back_identically(small_cnn, index):
    strategy, options = SCENARIOS[index]
    program = llcompile.transform(small_cnn, strategy, **options)
    for text in json.loads(FIXTURE.read_text())["states"][index * 2 * EPOCHS:(index + 1) * 2 * EPOCHS]:
        assert json.dumps(_controller(program, json.loads(text)).state()) == text
