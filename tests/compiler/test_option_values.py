"""Option values of the wrong type or out of range are refused by transform before any pass runs, in
one line naming the option, whichever strategy and option class declares it."""

from __future__ import annotations

import pytest

import llcompile
from llcompile.compiler.options import TRANSFORM_OPTION_SPECS
from llcompile.errors import LLCompileError
from tests.fixtures import legacy_models as lm


@pytest.fixture(scope="module")
def model():
    return lm.small_cnn()


@pytest.mark.parametrize("strategy, options, message", [
    ("dbl", {"blocks": "2"}, "blocks must be an integer, not '2'"),
    ("dbl", {"blocks": True}, "blocks must be an integer, not True"),
    ("dbl", {"blocks": 2.0}, "blocks must be an integer, not 2.0"),
    ("dbl", {"blocks": 0}, "blocks must be >= 1"),
    ("dbl", {"cuts": "a,b"}, "cuts must be a list of names, not 'a,b'"),
    ("dbl", {"aux_width": 2.0, "aux_head": "conv"}, "aux_width must be in (0, 1]"),
    ("dbl", {"aux_head": "mlp"}, "aux_head must be one of fc, conv, dgl, augmented, ema, not 'mlp'"),
    ("dbl", {"merge_gain": "high"}, "merge_gain must be a number, not 'high'"),
    ("dbl", {"inner_cuts": "yes"}, "inner_cuts must be True or False, not 'yes'"),
    ("local-sgd", {"prefix": 1.5}, "prefix must be an integer, not 1.5"),
    ("local-sgd", {"hebbian_every": 0}, "hebbian_every must be >= 1"),
    ("dbl-hebbian", {"hebbian_subsample": "2"}, "hebbian_subsample must be an integer, not '2'"),
])
def test_bad_values_are_refused_before_any_pass(model, monkeypatch, strategy, options, message):
    def no_pass_may_run(*args, **kwargs):
        raise AssertionError("the model was read before the options were checked")

    monkeypatch.setattr("llcompile.compiler.transform.read_source", no_pass_may_run)
    with pytest.raises(LLCompileError) as error:
        llcompile.transform(model, strategy, **options)
    assert str(error.value) == message


def test_an_integer_where_a_number_goes_and_none_for_a_default_are_accepted(model, tmp_path):
    program = llcompile.transform(model, "dbl", blocks=2, aux_head="conv", aux_width=1, cuts=None)
    assert len(program.stages) == 2
    program.save(tmp_path / "program")  # every recorded value is one program.json can hold


def test_every_declared_kind_has_a_check():
    from llcompile.util.option_spec import KINDS

    assert {spec.kind for spec in TRANSFORM_OPTION_SPECS.values()} <= set(KINDS)
