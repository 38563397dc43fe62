"""The programs a report costs: a model compiled in memory with each requested strategy, or a
compiled program directory (plus `bp`, and any other strategy asked for, compiled from its eval model).

A strategy is asked for as ``NAME`` or ``NAME:OPTION=VALUE,...`` (``dbl:blocks=8``,
``local-sgd:prefix=5``; a list of cut tensors as ``cuts=A|B``). Options given as command-line flags
(``--blocks``, ``--prefix``, ...) apply to every requested strategy that takes them and does not set
them itself. ``bp`` is always costed: every ratio is taken against it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import onnx_ir as ir

from llcompile.analysis.structure import ModelAnalysis, analyze
from llcompile.errors import LLCompileError
from llcompile.frontend.importer import ModelSource, load
from llcompile.program.program import EVAL_MODEL_FILE, Program, is_program_dir
from llcompile.compiler.strategies import get_strategy

BASELINE = "bp"
PREFIX_OPTION = "prefix"  # the Hebbian prefix length of local-sgd / dbl-hebbian, in leading segments
# option -> smallest value allowed
INT_OPTIONS = {"blocks": 1, "prefix": 0, "seed": 0, "aux_pool": 1, "aux_subsample": 1}
FLOAT_OPTIONS = {"aux_depth", "aux_width", "aux_temperature"}  # range-checked by the pass that reads them


@dataclass
class StrategySpec:
    name: str
    options: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        if not self.options:
            return self.name
        return self.name + ":" + ",".join(f"{k}={_format_value(v)}" for k, v in self.options.items())


@dataclass
class CostedProgram:
    label: str  # the key of the strategy in the report
    program: Program


@dataclass
class ReportInput:
    source: str | None  # the model file or program directory; None for a model given in memory
    kind: str  # model | program
    model: ir.Model  # the canonical model every program is compiled from
    analysis: ModelAnalysis
    programs: list[CostedProgram]
    notes: list[str]


def parse_spec(text: str) -> StrategySpec:
    """``NAME`` or ``NAME:key=value,...`` -> StrategySpec (values checked, strategy not yet)."""
    name, _, rest = text.partition(":")
    name = name.strip()
    if not name:
        raise LLCompileError(f"--strategy {text!r}: no strategy name")
    options: dict = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or not value.strip():
            raise LLCompileError(f"--strategy {text!r}: expected OPTION=VALUE, got {item!r}")
        options[key] = _convert(key, value.strip(), text)
    return StrategySpec(name, options)


def _convert(key: str, value: str, text: str):
    if key in INT_OPTIONS:
        try:
            number = int(value)
        except ValueError:
            raise LLCompileError(f"--strategy {text!r}: {key} must be an integer, got {value!r}") from None
        if number < INT_OPTIONS[key]:
            raise LLCompileError(f"--strategy {text!r}: {key} must be >= {INT_OPTIONS[key]}, got {number}")
        return number
    if key in FLOAT_OPTIONS:
        try:
            return float(value)
        except ValueError:
            raise LLCompileError(f"--strategy {text!r}: {key} must be a number, got {value!r}") from None
    if key == "cuts":
        return [c for c in value.split("|") if c]
    return value


def _format_value(value) -> str:
    return "|".join(value) if isinstance(value, list) else str(value)


def resolve(source: ModelSource, specs: list[StrategySpec], flags: dict) -> ReportInput:
    """Load the model or program at ``source`` (a model file or program directory, or a model in memory:
    its bytes, an onnx.ModelProto or an onnx_ir.Model) and compile/load every program to cost.

    ``flags``: options given on the command line (None when not given), applied to every requested
    strategy that takes them.
    """
    path = Path(source) if isinstance(source, (str, os.PathLike)) else None
    notes: list[str] = []
    for spec in specs:  # unknown names fail before any work
        get_strategy(spec.name)
    given_flags = {k: v for k, v in flags.items() if v is not None}
    for key in given_flags:
        takers = [s.name for s in specs if key in get_strategy(s.name).options]
        if not takers:
            asked = ", ".join(s.name for s in specs) or BASELINE
            raise LLCompileError(f"--{key.replace('_', '-')} applies to none of the strategies asked for ({asked})")
    for spec in specs:
        takes = get_strategy(spec.name).options
        foreign = sorted(set(spec.options) - set(takes))
        if foreign:
            raise LLCompileError(f"strategy {spec.name!r} takes no option {foreign[0]!r}"
                                 f" (it takes: {', '.join(takes) or 'none'})")
        for key, value in given_flags.items():
            if key in takes and key not in spec.options:
                spec.options[key] = value

    programs: list[CostedProgram] = []
    if path is not None and path.is_dir():
        if not is_program_dir(path):
            raise LLCompileError(f"{path}: not a program directory (no program.json) and not an ONNX file")
        program = Program.load(path)
        model = load(path / EVAL_MODEL_FILE)  # the canonical model again: BN back in training form
        kind = "program"
        most = program.options.get("max_prefix")
        if most is not None and program.options.get("prefix", 0) < most:  # the prefix grows while it trains
            from llcompile.compiler.transform import recompile

            program = recompile(program, prefix=most)
            notes.append(f"{program.strategy}: costed at its largest Hebbian prefix ({most} segments), which "
                         "its learning mode grows to during training")
        own = CostedProgram(label=_program_label(program), program=program)
    else:
        model = load(source)
        kind = "model"
        own = None
    try:
        analysis = analyze(model)
    except ValueError as exc:
        raise LLCompileError(f"{path or 'the model'}: cannot analyse the model: {exc}") from None

    wanted = [StrategySpec(BASELINE)] if own is None or own.program.strategy != BASELINE else []
    wanted += specs
    seen: dict[str, StrategySpec] = {}
    for spec in wanted:
        takes = get_strategy(spec.name).options
        if PREFIX_OPTION in takes and PREFIX_OPTION not in spec.options:
            spec.options[PREFIX_OPTION] = len(analysis.segments) // 2
            notes.append(f"{spec.name}: no --prefix given; the Hebbian prefix is the first "
                         f"{spec.options[PREFIX_OPTION]} of {len(analysis.segments)} segments (half)")
        if own is not None and spec.label == own.label:
            raise LLCompileError(f"--strategy {spec.label} is the program's own strategy; give it options "
                                 "to tell the two apart")
        seen.setdefault(spec.label, spec)
    if own is not None:
        programs.append(own)
    for label, spec in seen.items():
        programs.append(CostedProgram(label=label, program=_compile(model, spec)))
    programs.sort(key=lambda p: p.label != BASELINE)  # the baseline first
    return ReportInput(source=os.fspath(path) if path is not None else None, kind=kind, model=model, analysis=analysis, programs=programs,
                       notes=notes)


def add_program(resolved: ReportInput, spec: StrategySpec, label: str | None = None) -> CostedProgram:
    """Compile ``spec`` from the report's model and cost it too, under ``label`` (its own by default)."""
    costed = CostedProgram(label=label or spec.label, program=_compile(resolved.model, spec))
    resolved.programs.append(costed)
    return costed


def _program_label(program: Program) -> str:
    """A program directory's key: its strategy, with its aux head when that is not the default ``fc``
    (an augmented head costs far more) and its aux loss when that is not cross-entropy alone."""
    head = {}
    if program.options.get("aux_head", "fc") != "fc":
        head = {k: program.options[k] for k in ("aux_head", "aux_depth") if k in program.options}
    if program.options.get("aux_loss", "ce") != "ce":
        head["aux_loss"] = program.options["aux_loss"]
    return StrategySpec(program.strategy, head).label


def _compile(model: ir.Model, spec: StrategySpec) -> Program:
    from llcompile.compiler.transform import transform

    try:
        return transform(model, spec.name, **spec.options)
    except TypeError as exc:  # an option this llcompile's transform does not accept yet
        raise LLCompileError(f"strategy {spec.label}: {exc}") from None
