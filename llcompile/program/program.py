"""The compiled training program: stage graphs, the eval model and ``program.json``.

A program directory::

    program.json        format version, strategy, options, stages and their interfaces
    stages/NN_name.onnx one ONNX graph per stage, in execution order
    eval_model.onnx     the plain inference model (BatchNormalization in inference form)

It is written atomically: built in a temporary sibling directory, then renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import onnx

from llcompile.version import __version__
from llcompile.errors import ProgramError
from llcompile.frontend.importer import read_model_proto
from llcompile.program.plan import StagePlan
from llcompile.util.paths import inside

FORMAT_VERSION = 1
PROGRAM_FILE = "program.json"
EVAL_MODEL_FILE = "eval_model.onnx"


# A stage's keys in program.json, in the order format 1 writes them.
STAGE_JSON_KEYS = ("name", "kind", "graph", "input", "output", "labels", "loss", "params", "buffers", "layers",
                   "head", "updates", "lr_input")


@dataclass(kw_only=True)
class Stage(StagePlan):
    """A plan's stage as ``emit`` cut it out: its graph and what the graph holds."""

    graph: str  # path of the stage's ONNX file, relative to the program directory
    labels: str
    params: list[str]
    buffers: list[str]
    layers: list[str]
    model: onnx.ModelProto | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict:
        data = super().to_json()
        return {key: data[key] for key in STAGE_JSON_KEYS}


@dataclass
class Program:
    strategy: str
    options: dict
    source: dict  # path and sha256 of the model it was compiled from
    input: dict  # name and shape of the model input
    output: str
    logits: str
    num_classes: int
    cuts: list[str]
    stages: list[Stage]
    eval_model: onnx.ModelProto | None = field(default=None, repr=False, compare=False)
    format_version: int = FORMAT_VERSION
    llcompile_version: str = __version__

    def to_json(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if k not in ("stages", "eval_model")}
        data["stages"] = [s.to_json() for s in self.stages]
        data["eval_model"] = EVAL_MODEL_FILE
        return data

    def save(self, out_dir: str | os.PathLike, force: bool = False) -> Path:
        """Write the program directory; refuse an existing one unless ``force``."""
        out = Path(out_dir)
        check_output_dir(out, force)
        tmp = None
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
            (tmp / "stages").mkdir()
            for stage in self.stages:
                onnx.save_model(stage.model, tmp / stage.graph)
            onnx.save_model(self.eval_model, tmp / EVAL_MODEL_FILE)
            (tmp / PROGRAM_FILE).write_text(json.dumps(self.to_json(), indent=2) + "\n")
            _replace_dir(tmp, out)
        except OSError as exc:
            raise ProgramError(f"cannot write {out}: {exc.strerror or exc}") from None
        finally:
            if tmp is not None and tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return out

    @classmethod
    def load(cls, program_dir: str | os.PathLike, with_graphs: bool = True) -> Program:
        root = Path(program_dir)
        try:
            data = json.loads(inside(root, PROGRAM_FILE, "the program file").read_text())
        except (OSError, ValueError, RecursionError) as exc:
            raise ProgramError(f"{root}: not a program directory ({exc})") from None
        if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
            version = data.get("format_version") if isinstance(data, dict) else None
            raise ProgramError(
                f"{root}: program format {version} is not supported "
                f"(this llcompile reads format {FORMAT_VERSION}); re-run transform")
        try:
            data.pop("eval_model")
            stages = [Stage.from_json(s) for s in data.pop("stages")]
            program = cls(stages=stages, **data)
            graphs = [inside(root, stage.graph, f"stage {stage.name!r}'s graph") for stage in stages]
            if with_graphs:
                for stage, graph in zip(stages, graphs):  # external data only from the graph's own folder
                    stage.model = read_model_proto(graph)
                program.eval_model = read_model_proto(inside(root, EVAL_MODEL_FILE, "the eval model"))
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise ProgramError(f"{root}: damaged program directory ({type(exc).__name__}: {exc})") from None
        return program


def check_output_dir(out: Path, force: bool) -> None:
    """Refuse to replace an existing directory without ``force``, a file, or the working directory
    (or one of its parents)."""
    if out.exists() and not out.is_dir():
        raise ProgramError(f"{out} exists and is not a directory")
    if out.exists() and not force:
        raise ProgramError(f"{out} already exists (use --force to replace it)")
    if out.exists() and Path.cwd().resolve().is_relative_to(out.resolve()):
        raise ProgramError(f"{out} is the working directory or contains it; choose another output directory")


def is_program_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / PROGRAM_FILE).is_file()


def _replace_dir(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; an existing target is swapped out, then removed."""
    if not target.exists():
        os.replace(new, target)
        return
    backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
    try:
        os.replace(target, backup / "old")
        try:
            os.replace(new, target)
        except BaseException:
            os.replace(backup / "old", target)
            raise
    finally:
        shutil.rmtree(backup, ignore_errors=True)
