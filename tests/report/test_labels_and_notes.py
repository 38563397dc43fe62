"""What a reader of the report needs beside the numbers: a program's label says its aux head, the
per-layer panels carry every aux head's MACs, and a strategy that moves more off-chip bytes than bp
gets a note that says which parts do."""

import pytest

import llcompile
from llcompile.report import build_report
from llcompile.report.plots import head_bars
from llcompile.report.programs import parse_spec
from llcompile.report.tables import summary_tables


@pytest.fixture
def augmented_program(tiny_model, tmp_path):
    return llcompile.transform(tiny_model, "dbl", cuts=["u1.out"], aux_head="augmented", aux_depth=0.5).save(
        tmp_path / "prog")


def test_an_augmented_program_is_labelled_with_its_head(augmented_program):
    report = build_report(augmented_program, [parse_spec("dbl:cuts=u1.out")])
    assert list(report["strategies"]) == ["bp", "dbl:aux_head=augmented,aux_depth=0.5", "dbl:cuts=u1.out"]


def test_the_per_layer_panels_carry_every_aux_head(augmented_program):
    entry = build_report(augmented_program, [])["strategies"]["dbl:aux_head=augmented,aux_depth=0.5"]
    bars = head_bars(entry)
    last_of_block1 = max(i for i, layer in enumerate(entry["layers"]) if layer["stage"] == "block1")
    assert [i for i, _ in bars] == [last_of_block1]
    assert sum(macs for _, macs in bars) == entry["macs"]["aux"] > 0


def test_a_note_where_a_strategy_moves_more_offchip_bytes_than_bp(tiny_model):
    report = build_report(tiny_model, [parse_spec("dbl:cuts=u1.out"), parse_spec("local-sgd:prefix=1")],
                          batch_size=64, onchip_kib=1)
    ratios = {name: e["vs_bp"]["offchip_bytes"] for name, e in report["strategies"].items()}
    assert ratios["dbl:cuts=u1.out"] > 1 >= ratios["local-sgd:prefix=1"]
    memory = summary_tables(report)[1]
    notes = [note for note in memory.notes if "x bp's off-chip bytes" in note]
    assert len(notes) == 1 and notes[0].startswith(f"dbl:cuts=u1.out moves {ratios['dbl:cuts=u1.out']:.3f} x bp's")
    assert "at 1 KiB on chip" in notes[0] and "stage hand-offs" in notes[0]
