"""The same model and options give byte-identical program files, within one process and across
processes (content-hash caches and diffs of program directories rely on it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import llcompile

OPTIONS = ["--strategy", "dbl-hebbian", "--prefix", "1", "--blocks", "2", "--aux-head", "conv"]


def files(directory: Path) -> dict[str, bytes]:
    return {str(path.relative_to(directory)): path.read_bytes() for path in sorted(directory.rglob("*"))
            if path.is_file()}


def test_two_transforms_write_the_same_bytes_in_one_process_and_in_another(zoo_file, tmp_path):
    model = zoo_file("small_cnn", input_shape=(1, 8, 8))
    for name in ("first", "second"):
        llcompile.transform(model, "dbl-hebbian", prefix=1, blocks=2, aux_head="conv").save(tmp_path / name)
    subprocess.run([sys.executable, "-m", "llcompile", "transform", str(model), "-o", str(tmp_path / "cli"),
                    *OPTIONS], check=True, capture_output=True)
    first = files(tmp_path / "first")
    assert len(first) >= 4  # program.json, the eval model and the stages
    assert files(tmp_path / "second") == first
    assert files(tmp_path / "cli") == first
