"""Messages name an option as its caller passed it: the keyword for Python, the flag for the command."""

import pytest

import llcompile
from llcompile.util.option_names import option_name, options_named_as_flags


def test_keyword_by_default_flag_inside_the_command():
    assert option_name("aux_depth") == "aux_depth" and option_name("aux_head", "ema") == "aux_head='ema'"
    with options_named_as_flags():
        assert option_name("aux_depth") == "--aux-depth" and option_name("aux_head", "ema") == "--aux-head ema"
    assert option_name("blocks", 9) == "blocks=9"  # the command's naming ends with it


def test_python_and_command_line_callers_read_their_own_names(zoo_file, tmp_path, monkeypatch, capsys):
    from llcompile.cli.commands import main

    path = zoo_file("resnet20")
    with pytest.raises(llcompile.LLCompileError, match=r"^blocks=99 is more than this model allows"):
        llcompile.transform(path, "dbl", blocks=99)
    with pytest.raises(llcompile.OptionError, match=r"^aux_width must be in \(0, 1\]$"):
        llcompile.transform(path, "dbl", aux_head="dgl", aux_width=2)
    monkeypatch.setattr("sys.argv", ["llcompile", "transform", str(path), "-o", str(tmp_path / "p"), "--blocks", "99"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith("llcompile: error: --blocks 99 is more than this model allows")
