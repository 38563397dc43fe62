"""What `llcompile inspect` shows: a model's layers, cut points and segments, or a program's stages."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import onnx_ir as ir

from llcompile.analysis.structure import analyze
from llcompile.errors import LLCompileError
from llcompile.frontend.importer import load
from llcompile.passes.inner_cuts import INNER_CUT_PREFIX, JoinInnerCutsPass
from llcompile.util.paths import inside
from llcompile.program.program import Program, is_program_dir
from llcompile.train.progress import epoch_changes
from llcompile.util.terminal import printable, printable_data


RUN_FILE, METRICS_FILE = "run.json", "metrics.jsonl"
UNBALANCED = 1.1  # a rank busier than this x the mean is named in a parallel run's description


def describe(path: str | os.PathLike) -> dict:
    """A JSON-ready description of a model file, a program directory or a run directory."""
    if Path(path).is_dir() and is_program_dir(path):
        return describe_program(Program.load(path))
    if Path(path).is_dir() and (Path(path) / RUN_FILE).is_file():
        return describe_run(Path(path))
    if Path(path).is_dir():
        raise LLCompileError(f"{path} is a directory but neither a program (no program.json) nor a run "
                             f"(no {RUN_FILE}); inspect takes an ONNX model file, a program directory or a run "
                             "directory")
    model = load(path)
    description = {"kind": "model", "path": os.fspath(path), **analyze(model).to_dict()}
    JoinInnerCutsPass()(model)
    description["inner_cut_points"] = [c for c in analyze(model).cut_points if c.startswith(INNER_CUT_PREFIX)]
    return description


def stage_code(path: str | os.PathLike) -> str:
    """The forward the torch backend runs for each stage of the program at ``path``, annotated."""
    from llcompile.backends.base import OptimizerConfig
    from llcompile.backends.torch.backend import TorchBackend

    if not is_program_dir(path):
        raise LLCompileError(f"{path}: --code needs a program directory")
    program = Program.load(path)
    stages = TorchBackend().build(program, OptimizerConfig())
    return "\n\n".join(f"# stage {printable(stage.name)}\n{stage.module.annotated_code().strip()}" for stage in stages)


def describe_program(program: Program) -> dict:
    analysis = analyze(ir.from_proto(program.eval_model))
    layers = {layer.name: layer for layer in analysis.layers}
    stages = []
    for stage in program.stages:
        stage_layers = [layers[name] for name in stage.layers]
        sizes = {tensor.name: math.prod(tensor.dims) for tensor in stage.model.graph.initializer}
        stages.append({**stage.to_json(), "macs": sum(layer.macs for layer in stage_layers),
                       "param_count": sum(sizes[name] for name in stage.params),
                       "layer_ops": [layer.op for layer in stage_layers]})
    return {"kind": "program", **program.to_json(), "stages": stages, "macs": analysis.macs,
            "params": analysis.params}


def describe_run(run_dir: Path) -> dict:
    """A training run: its program and settings, and per epoch its metrics and what moved."""
    try:
        run = json.loads(inside(run_dir, RUN_FILE, "the run file").read_text())
        program = json.loads(run["program_json"])
        metrics_file = inside(run_dir, METRICS_FILE, "the metrics file")
        metrics = metrics_file.read_text().splitlines() if metrics_file.exists() else []
        epochs = [json.loads(line) for line in metrics]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LLCompileError(f"{run_dir}: not a readable run directory ({exc})") from None
    return {"kind": "run", "path": os.fspath(run_dir), "program": run.get("program"), "strategy": program["strategy"],
            "options": program["options"], "config": run.get("config", {}), "epochs": epochs}


def render_text(description: dict) -> str:
    """For a terminal: names from the model or program are shown with their control characters escaped."""
    renderers = {"program": _render_program, "run": _render_run, "model": _render_model}
    return renderers[description["kind"]](printable_data(description))


def _render_run(d: dict) -> str:
    config = d["config"]
    out = [f"run {d['path']}: strategy {d['strategy']}, program {d['program']}",
           f"  data {config.get('data')}, {config.get('epochs')} epochs, batch {config.get('batch_size')}, "
           f"backend {config.get('backend')}, lr {config.get('lr')} {config.get('lr_schedule')}", ""]
    rows, changes = [], []
    for e in d["epochs"]:
        # the blocks trained by gradient: every stage with a loss (a Hebbian prefix has none)
        rows.append([e["epoch"], f"{e['train_loss']:.4f}", f"{e['test_acc']:.4f}", f"{e['epoch_time_s']:.1f}",
                     f"{e['peak_memory_mb']:.0f}", e.get("prefix", "-"), len(e["stages"])])
        changes += [f"  epoch {e['epoch']}: {change}" for change in epoch_changes(e, cuts=True)]
    out += _table(["epoch", "train loss", "test acc", "s", "peak MiB", "prefix", "blocks"], rows)
    out += ["", "changes:"] + (changes or ["  (none)"])
    out += _render_placement(d["epochs"])
    return "\n".join(out)


def _render_placement(epochs: list[dict]) -> list[str]:
    """A parallel run: per epoch, which rank held which stages and its busy share of the epoch."""
    rows = [[e["epoch"], p["mode"], r["rank"], ", ".join(r["stages"]) or "(passes on)", f"{r['busy_share']:.0%}",
             f"{r['busy_s']:.1f}", f"{r['idle_s']:.1f}", f"{r['bytes_sent'] / 2**20:.1f}"]
            for e in epochs if "parallel" in e for p in [e["parallel"]] for r in p["ranks"]]
    if not rows:
        return []
    out = ["", "ranks:"] + _table(["epoch", "mode", "rank", "stages", "busy", "busy s", "idle s", "sent MiB"], rows)
    last = next(e["parallel"] for e in reversed(epochs) if "parallel" in e)
    busy = [r["busy_s"] for r in last["ranks"] if r["stages"]]
    if last["mode"] == "stages" and len(busy) > 1 and max(busy) > UNBALANCED * sum(busy) / len(busy):
        out.append(f"  the last epoch's busiest rank worked {max(busy) / (sum(busy) / len(busy)):.2f} x the ranks' mean: "
                   "the pipeline goes at the pace of its slowest rank; cuts nearer the balance (inspect MODEL; "
                   "dbl --inner-cuts adds cuts inside residual units) or --placement would even it")
    return out


def _table(headers: list[str], rows: list[list]) -> list[str]:
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    right = [all(_is_number(row[i]) for row in cells[1:]) for i in range(len(headers))]
    lines = []
    for row in cells:
        lines.append("  ".join(c.rjust(w) if r else c.ljust(w) for c, w, r in zip(row, widths, right)).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def _is_number(text: str) -> bool:
    return text.replace(",", "").replace(".", "").isdigit()


def _shape(shape: list) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _render_model(d: dict) -> str:
    out = [f"model {d['path']}",
           f"  input {d['input']} {_shape(d['input_shape'])} -> output {d['output']} "
           f"(logits {d['logits']}, {d['num_classes'] or 'no'} classes)",
           f"  {len(d['layers'])} layers, {d['params']:,} parameters, {d['macs']:,} forward MACs per sample", "",
           "layers:"]
    rows = [[i, layer["name"], layer["op"], _shape(layer["output_shape"]), f"{layer['params']:,}",
             f"{layer['macs']:,}", layer["segment"], "+".join(dict.fromkeys(layer["trailing_ops"]))]
            for i, layer in enumerate(d["layers"])]
    out += ["  " + line for line in _table(["#", "name", "op", "output", "params", "MACs", "seg", "then"], rows)]
    out += ["", f"cut points ({len(d['cut_points'])}): the tensors a block boundary can sit on"]
    out += [f"  {name}" for name in d["cut_points"]] or ["  (none)"]
    out += ["", f"inner cut points ({len(d['inner_cut_points'])}): inside residual units, with --inner-cuts"]
    out += [f"  {name}" for name in d["inner_cut_points"]] or ["  (none)"]
    out += ["", "segments:"]
    rows = [[s["index"], s["input"], s["output"], _shape(s["output_shape"]), len(s["layers"]),
             f"{s['params']:,}", f"{s['macs']:,}"] for s in d["segments"]]
    out += ["  " + line for line in _table(["#", "from", "to", "shape", "layers", "params", "MACs"], rows)]
    return "\n".join(out)


def _render_program(d: dict) -> str:
    opts = ", ".join(f"{k}={v}" for k, v in d["options"].items())
    out = [f"program: strategy {d['strategy']}{f' ({opts})' if opts else ''}, {len(d['stages'])} stage(s), "
           f"{d['num_classes']} classes, format {d['format_version']}, llcompile {d['llcompile_version']}",
           f"  source {d['source']['path']} sha256 {str(d['source']['sha256'])[:12]}",
           f"  input {d['input']['name']} {_shape(d['input']['shape'])}; cuts: {', '.join(d['cuts']) or '(none)'}", ""]
    rows = []
    for i, s in enumerate(d["stages"]):
        if s["updates"] is not None:
            trained_by = f"{d['options'].get('hebbian_rule', 'hebbian')} rule"
        else:
            trained_by = s["head"]["kind"] + " head" if s["head"] else "model head"
        rows.append([i, s["name"], s["kind"], s["input"], s["output"], len(s["layers"]), f"{s['macs']:,}",
                     f"{s['param_count']:,}", trained_by, s["loss"] or "-"])
    out += _table(["#", "stage", "kind", "input", "output", "layers", "MACs", "params", "trained by", "loss"], rows)
    out.append("(params: the parameters each stage trains, its aux head's included)")
    for s in d["stages"]:
        ops = ", ".join(f"{name} ({op})" for name, op in zip(s["layers"], s["layer_ops"]))
        out += ["", f"{s['name']}: {s['graph']}", f"  layers: {ops}"]
        if s["head"] and "segments" in s["head"]:  # augmented: the copies' parameters are many; say what they copy
            segments = ", ".join(map(str, s["head"]["segments"])) or "none"
            out.append(f"  aux head {s['head']['kind']}: copies of segments {segments}, logits {s['head']['logits']}, "
                       f"{len(s['head']['params'])} parameter tensors aux@{s['output']}.*")
        elif s["head"]:
            out.append(f"  aux head {s['head']['kind']}: logits {s['head']['logits']}, "
                       f"params {', '.join(s['head']['params'])}")
        if s["head"] and "subsample" in s["head"]:
            out.append(f"  aux head trained on one sample in {s['head']['subsample']} of each batch (aux_subsample)")
        if s["head"] and {"ce", "contrast", "recon"} & set(s["head"]):  # weighted terms (aux_*_weight)
            terms = [f"{s['head'].get('ce', 1):g} x the head's cross-entropy"]
            if "contrast" in s["head"]:
                terms.append(f"{s['head']['contrast']:g} x the supervised contrastive loss of its projection "
                             f"(temperature {d['options']['aux_temperature']:g})")
            if "recon" in s["head"]:
                terms.append(f"{s['head']['recon']:g} x the error of the decoder's reconstruction of {s['input']}")
            out.append(f"  loss: {' + '.join(terms)}")
        if s["head"] and "aux_pool" in d["options"] and "pool" not in s["head"]:
            out.append(f"  aux_pool={d['options']['aux_pool']} does not apply here: the head reads a token tensor "
                       f"or a vector, reduced whole")
        if s["updates"] is not None:
            out.append(f"  feeds: {s['input']}, {s['lr_input']} -> outputs: {s['output']} and the new value of "
                       f"{len(s['updates'])} weight(s) (forward-only, no loss)")
        else:
            out.append(f"  feeds: {s['input']}, {s['labels']} -> outputs: {s['loss']}, {s['output']}")
    return "\n".join(out)
