"""The README's walkthrough and its Python section run as written, on digits, in a fresh folder; what
they print is what the README says a user sees."""

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(language: str, after: str) -> list[str]:
    """The fenced code blocks of ``language`` in the README section titled ``after``."""
    text = README.read_text()
    section = text[text.index(f"## {after}"):]
    section = section[:section.find("\n## ", 1)]
    return re.findall(rf"```{language}\n(.*?)```", section, re.S)


def walkthrough_commands() -> list[str]:
    """Each command line of the walkthrough, its trailing ``# comment`` removed."""
    return [re.sub(r"\s+#.*$", "", line) for block in blocks("text", "Walkthrough")
            for line in block.splitlines() if line.startswith("llcompile ")]


def test_the_walkthrough_and_the_python_section_run_as_written(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    commands = walkthrough_commands()
    assert [c.split()[1] for c in commands] == ["models", "inspect", "transform", "inspect", "verify", "train",
                                                "transform", "report"]
    outputs = []
    for command in commands:
        done = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}: {done.stderr}"
        outputs.append(done.stdout)
    assert "cut points" in outputs[1] and "block4" in outputs[3]
    report = outputs[-1]
    assert "Accuracy against cost" in report
    rows = {line.split()[0] for line in report.splitlines() if "torch/cpu" in line}
    assert rows == {"bp", "dbl"}  # the two runs, each beside its strategy

    (python,) = blocks("python", "From Python")
    done = subprocess.run([sys.executable, "-c", python], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    accuracy = float(done.stdout.strip().splitlines()[-1])
    assert 0 <= accuracy <= 1 and (tmp_path / "prog" / "program.json").is_file()
