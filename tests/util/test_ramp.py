"""Per-block values: InfoPro's linear ramp from the first block to the last, by hand."""

import pytest

from llcompile.util.ramp import ramp_at, ramp_ends, ramp_text


def test_infopro_resnet32_k4_weights_by_hand():
    """InfoPro's ResNet-32 K=4 run (ixx 6 -> 1, ixy 0 -> 2) over its three local blocks."""
    assert [ramp_at("6:1", i, 3) for i in range(3)] == [6.0, 3.5, 1.0]
    assert [ramp_at((0, 2), i, 3) for i in range(3)] == [0.0, 1.0, 2.0]
    assert [ramp_at(2.5, i, 3) for i in range(3)] == [2.5, 2.5, 2.5]
    assert ramp_at("5:0", 0, 1) == 5.0  # one local block (K=2): the first end, as InfoPro's ratio 0


@pytest.mark.parametrize("value, ends", [
    (1, (1.0, 1.0)), (0.5, (0.5, 0.5)), ("3", (3.0, 3.0)), ("6:1", (6.0, 1.0)), ([0, 2], (0.0, 2.0)),
    ("1:x", None), ("1:2:3", None), ("", None), ("nan", None), (True, None), ((1, "2"), None), (None, None),
])
def test_ends(value, ends):
    assert ramp_ends(value) == ends


def test_text_as_the_command_line_writes_it_every_digit_kept():
    assert (ramp_text(6.0), ramp_text("6:1"), ramp_text((2, 2)), ramp_text("0.5:2")) == ("6", "6:1", "2", "0.5:2")
    assert ramp_ends(ramp_text((0.1234567, 1234567.0))) == (0.1234567, 1234567.0)
