"""`./dev`, the entry point of a fresh checkout: without a task it prints its usage and nothing else."""

import subprocess
from pathlib import Path

DEV = Path(__file__).resolve().parents[1] / "dev"


def test_usage_lists_the_tasks_and_nothing_else():
    result = subprocess.run(["bash", str(DEV)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stdout.splitlines()
    assert lines[0].startswith("One entry point for a fresh checkout")
    assert [line.split()[1] for line in lines[1:]] == ["demo", "test", "bench", "llcompile"]
