"""The activation-memory rule against what torch's autograd actually keeps, on ResNet-20.

The torch backend trains each program for one step with ``saved_tensors_hooks`` recording every
tensor autograd saves (distinct storages, parameters and buffers excluded). The rule predicts each
stage's bytes; the peak over stages is what a strategy needs. The rule matches torch to the byte,
so the peaks, their ratios to bp and their ordering agree exactly.
"""

import pytest

import llcompile
from llcompile.cost import cost_program
from llcompile.report.saved_tensors import measure_saved_bytes

BATCH = 4
STRATEGIES = [("bp", {}), ("dbl", {"blocks": 4}), ("local-sgd", {"prefix": 5}),
              ("dbl-hebbian", {"prefix": 5, "blocks": 2})]


@pytest.fixture(scope="module")
def measured(zoo_file):
    model = llcompile.load(zoo_file("resnet20"))
    assert len(llcompile.analyze(model).segments) // 2 == 5  # prefix 5: half of ResNet-20 localized
    results = {}
    for name, options in STRATEGIES:
        program = llcompile.transform(model, name, **options)
        predicted = [stage.activation_bytes for stage in cost_program(program, batch_size=BATCH).stages]
        results[name] = (predicted, measure_saved_bytes(program, BATCH))
    return results


def test_every_stage_matches_torch(measured):
    for name, (predicted, torch_bytes) in measured.items():
        assert predicted == torch_bytes, name


def test_peak_ratios_and_ordering(measured):
    peak = {name: (max(p), max(m)) for name, (p, m) in measured.items()}
    bp_predicted, bp_measured = peak["bp"]
    for name, (p, m) in peak.items():
        assert p == m and p / bp_predicted == m / bp_measured, name
    by_predicted = sorted(peak, key=lambda n: peak[n][0])
    by_measured = sorted(peak, key=lambda n: peak[n][1])
    assert by_predicted == by_measured == ["dbl-hebbian", "local-sgd", "dbl", "bp"]  # docs/cost-model.md's order
    assert measured["local-sgd"][1][0] == 0  # the Hebbian stage keeps nothing
