"""program.json stays format 1: one written before the stage kind and the aux head were typed
loads into ``StageKind`` and ``HeadPlan`` and writes back byte for byte.

The fixtures are program.json files that llcompile wrote before the typing (``llcompile models export
resnet20 -o m.onnx --input-shape 1,8,8``, then ``transform m.onnx --strategy dbl-hebbian --blocks 2``,
the same with ``--prefix 1 --aux-head augmented --aux-depth 0.5 --aux-subsample 2``, and with
``--blocks 3 --prefix 1 --aux-head conv --aux-pool 2 --aux-width 0.5 --aux-subsample 2``), each stage's
lists cut to their first three entries.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llcompile.errors import LLCompileError
from llcompile.program.plan import HeadPlan, StageKind, StagePlan
from llcompile.program.program import Program

FIXTURES = Path(__file__).parents[1] / "fixtures" / "program_json"


def _load(name: str, directory: Path) -> tuple[str, Program]:
    text = (FIXTURES / f"{name}.json").read_text()
    (directory / "program.json").write_text(text)
    return text, Program.load(directory, with_graphs=False)


@pytest.mark.parametrize("name", sorted(path.stem for path in FIXTURES.glob("*.json")))
def test_an_old_program_json_loads_typed_and_writes_back_the_same_bytes(name, tmp_path):
    text, program = _load(name, tmp_path)
    assert all(type(stage.kind) is StageKind for stage in program.stages)
    heads = [stage.head for stage in program.stages if stage.head is not None]
    assert heads and all(type(head) is HeadPlan for head in heads)
    assert json.dumps(program.to_json(), indent=2) + "\n" == text


def test_every_head_field_is_read_as_an_attribute(tmp_path):
    _, program = _load("dbl_hebbian_prefix_conv", tmp_path)
    hebbian, block1, _, final = program.stages
    assert [s.kind for s in program.stages] == [StageKind.HEBBIAN, StageKind.BLOCK, StageKind.BLOCK,
                                                StageKind.FINAL]
    assert hebbian.head is None and hebbian.lr_input == "hebbian_lr" and hebbian.updates
    assert (block1.head.kind, block1.head.pool, block1.head.width, block1.head.subsample, block1.head.every) == (
        "conv", 2, 0.5, 2, 2)
    assert block1.head.logits.endswith(".logits") and block1.head.segments is None
    assert final.head is None and final.loss == "loss"
    _, augmented = _load("dbl_hebbian_prefix_augmented", tmp_path)
    head = augmented.stages[1].head
    assert head.kind == "augmented" and head.segments and head.copied_from and head.pool is None


def test_a_stage_plan_round_trips_through_its_json():
    data = {"name": "block1", "kind": "block", "input": "x", "output": "y", "loss": "block1.aux_loss",
            "head": {"kind": "fc", "logits": "aux@y.logits", "params": ["aux@y.fc.bias"], "buffers": []},
            "updates": None, "lr_input": None}
    stage = StagePlan.from_json(data)
    assert stage.kind is StageKind.BLOCK and stage.head.every == 1
    assert stage.to_json() == data


def test_an_unknown_stage_kind_is_a_damaged_program(tmp_path):
    data = json.loads((FIXTURES / "dbl_hebbian_fc.json").read_text())
    data["stages"][0]["kind"] = "mystery"
    (tmp_path / "program.json").write_text(json.dumps(data))
    with pytest.raises(LLCompileError, match="damaged program directory.*mystery"):
        Program.load(tmp_path, with_graphs=False)
