"""The `llcompile` command: a thin click layer over the Python API."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from llcompile.version import __version__
from llcompile.backends import BACKENDS
from llcompile.cli.spec_options import declared_options
from llcompile.compiler.options import TRANSFORM_OPTIONS
from llcompile.compiler.verify import DEFAULT_TOLERANCE
from llcompile.train.config import DEFAULT_PRECISE_BN
from llcompile.errors import LLCompileError
from llcompile.cli.report import report as report_command
from llcompile.util.option_names import options_named_as_flags
from llcompile.util.terminal import printable

FORMATS = click.Choice(["text", "json"])


def _parse_placement(_ctx, _param, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected stage counts per rank like 2,1, got {value!r}") from None


def _parse_input_shape(_ctx, _param, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        dims = tuple(int(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"expected integers like 3,32,32, got {value!r}") from None
    if len(dims) != 3 or min(dims) < 1:
        raise click.BadParameter(f"expected C,H,W with positive sizes, got {value!r}")
    return dims


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="llcompile")
def cli() -> None:
    """Compile an ONNX model into a cheaper training program (block-local, Hebbian) and inspect it.

    \b
    Typical use:
      llcompile models export resnet20 -o resnet20.onnx
      llcompile transform resnet20.onnx -o out/ --strategy dbl --blocks 4
      llcompile inspect out/
    """


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(path_type=Path),
              help="Program directory to write (refused if it exists, unless --force).")
@click.option("-s", "--strategy", default="dbl", show_default=True, help="See `llcompile strategies`.")
@declared_options(*TRANSFORM_OPTIONS)
@click.option("--force", is_flag=True, help="Replace an existing output directory.")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
def transform(model, out_dir, strategy, force, fmt, **options) -> None:
    """Compile MODEL.onnx into a training program directory."""
    from llcompile.compiler.transform import transform as compile_model
    from llcompile.cli.inspection import describe_program, render_text
    from llcompile.program.program import check_output_dir

    check_output_dir(out_dir, force)  # before compiling, which can take a while
    program = compile_model(model, strategy, **options)
    program.save(out_dir, force=force)
    description = describe_program(program)
    if fmt == "json":
        click.echo(json.dumps({"program_dir": os.fspath(out_dir), **description}, indent=2))
    else:
        click.echo(render_text(description))
        click.echo(f"\nwrote {out_dir}")


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.option("--code", is_flag=True, help="For a program: the torch backend's forward of each stage, "
              "each line with its ONNX node.")
def inspect(path, fmt, code) -> None:
    """Show a model's layers, cut points and segments, or a program's stages."""
    from llcompile.cli.inspection import describe, render_text, stage_code

    if code:
        click.echo(stage_code(path))
        return
    description = describe(path)
    click.echo(json.dumps(description, indent=2) if fmt == "json" else render_text(description))


@cli.command()
@click.argument("program_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--model", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Source model to compare with [default: the path recorded in program.json].")
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(min=1))
@click.option("--tolerance", default=DEFAULT_TOLERANCE, show_default=True, help="Largest relative error accepted.")
def verify(program_dir, model, batch_size, tolerance) -> None:
    """Check that a program's stages, chained, compute what the source model computes."""
    from llcompile.compiler.verify import verify as verify_program  # the command shares the function's name

    result = verify_program(program_dir, model, batch_size=batch_size, tolerance=tolerance)
    for check, error in result.errors.items():
        click.echo(f"{check:<40} relative error {error:.2e}")
    if not result.ok:
        raise LLCompileError(f"program differs from its source model: relative error {result.worst:.2e} > "
                             f"{tolerance:g}")
    click.echo("ok")


@cli.command()
@click.argument("program_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--data", required=True, help="cifar10:PATH | digits | mnist1d | synthetic[:N].")
@click.option("--epochs", default=10, show_default=True, type=click.IntRange(min=1))
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Peak learning rate [default: 0.1 sgd, 1e-3 adamw].")
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default="sgd", show_default=True)
@click.option("--momentum", default=0.9, show_default=True, type=click.FloatRange(0, 1))
@click.option("--nesterov/--no-nesterov", default=True, show_default=True)
@click.option("--weight-decay", default=5e-4, show_default=True, type=click.FloatRange(min=0))
@click.option("--lr-schedule", type=click.Choice(["cosine", "step", "constant"]), default="cosine", show_default=True)
@click.option("--warmup-epochs", default=0.0, show_default=True, type=click.FloatRange(min=0),
              help="Raise the lr linearly over the first W epochs (may be a fraction), then follow --lr-schedule.")
@click.option("--precise-bn", default=DEFAULT_PRECISE_BN, show_default=True, type=click.IntRange(min=0),
              help="Recompute BatchNorm's running statistics over N training batches, forward only, before each "
                   "evaluation and before the trained model is written; 0: keep the running averages.")
@click.option("--backend", type=click.Choice(BACKENDS), default="torch", show_default=True)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--torch-mode", type=click.Choice(["eager", "script", "compile"]), default="eager", show_default=True)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for torch, and for each onnxruntime session with --backend ort "
                   "[default: the library's; with --nproc, the cores shared among the ranks].")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where metrics, checkpoints and the trained model go [default: PROGRAM_DIR/run].")
@click.option("--resume", is_flag=True, help="Continue the run in --run-dir from its last checkpoint.")
@click.option("--force", is_flag=True, help="Replace an existing run in --run-dir.")
@click.option("--data-limit", type=click.IntRange(min=1), help="Use at most N samples per split (smoke tests).")
@click.option("--quiet", is_flag=True, help="No progress bars or per-epoch lines.")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True, help="Format of the final summary.")
@click.option("--nproc", default=1, show_default=True, type=click.IntRange(min=1),
              help="Local worker processes (torch.distributed); on several machines use torchrun instead.")
@click.option("--parallel", "parallel_mode", type=click.Choice(["stages", "data"]),
              help="stages: a pipeline of consecutive stages per rank; data: every rank on a share of each batch, "
                   "gradients averaged (DistributedDataParallel on torch) "
                   "[default: stages for programs with several stages].")
@click.option("--placement", callback=_parse_placement, metavar="N,N,...",
              help="stages: consecutive stages per rank, e.g. 2,1 [default: balanced by measured step time].")
@click.option("--max-in-flight", default=2, show_default=True, type=click.IntRange(min=1),
              help="stages: batches sent on but not yet taken by the next rank.")
@click.option("--timeout", default=300, show_default=True, type=click.IntRange(min=1),
              help="Seconds a silent peer may take before the parallel run ends.")
def train(program_dir, data, epochs, batch_size, lr, optimizer, momentum, nesterov, weight_decay, lr_schedule,
          warmup_epochs, precise_bn, backend, device, torch_mode, seed, threads, run_dir, resume, force, data_limit,
          quiet, fmt, nproc, parallel_mode, placement, max_in_flight, timeout) -> None:
    """Train a compiled program (from `transform`) on a data set.

    \b
    Under torchrun (RANK, WORLD_SIZE, ... set) this process is one rank of a parallel run:
      torchrun --nnodes M --nproc-per-node N ... -m llcompile train PROG ...
    """
    from llcompile.backends.base import OptimizerConfig
    from llcompile.train import TrainConfig
    from llcompile.train import train as run_training
    from llcompile.train.loop import TRAINED_MODEL, RunResult
    from llcompile.train.parallel import ParallelOptions, launch, launched_by_torchrun, run_worker

    config = TrainConfig(
        data=data, epochs=epochs, batch_size=batch_size, lr=lr, lr_schedule=lr_schedule, warmup_epochs=warmup_epochs,
        optimizer=OptimizerConfig(name=optimizer, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay),
        backend=backend, device=device, torch_mode=torch_mode, seed=seed, threads=threads, data_limit=data_limit,
        precise_bn=precise_bn)
    run_dir = run_dir or program_dir / "run"
    options = ParallelOptions(nproc=nproc, mode=parallel_mode, placement=placement, max_in_flight=max_in_flight,
                              timeout_s=timeout)
    if launched_by_torchrun():
        outcome = run_worker(program_dir, config, run_dir, resume, force, not quiet, options)
        if "error" in outcome:
            raise LLCompileError(outcome["error"])
        if "history" not in outcome:  # not rank 0: rank 0 reports
            return
        result = RunResult(run_dir=run_dir, history=outcome["history"], trained_model=run_dir / TRAINED_MODEL)
    elif nproc > 1:
        result = launch(program_dir, config, run_dir, resume, force, not quiet, options)
    else:
        if parallel_mode or placement:
            raise LLCompileError("--parallel and --placement need --nproc 2 or more (or torchrun)")
        result = run_training(program_dir, config, run_dir, resume=resume, force=force, show_progress=not quiet)
    summary = {"run_dir": str(result.run_dir), "test_acc": result.test_accuracy,
               "trained_model": str(result.trained_model), "epochs": result.history}
    if fmt == "json":
        click.echo(json.dumps(summary, indent=2))
    else:
        last = result.history[-1]
        click.echo(f"test accuracy {last['test_acc']:.4f} after {last['epoch']} epochs; "
                   f"trained model {result.trained_model}; metrics {result.run_dir / 'metrics.jsonl'}")


@cli.command()
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
def strategies(fmt) -> None:
    """List the strategies `transform` knows."""
    from llcompile.compiler.strategies import STRATEGIES

    if fmt == "json":
        click.echo(json.dumps({s.name: {"description": s.description, "options": list(s.options)}
                               for s in STRATEGIES.values()}, indent=2))
        return
    width = max(len(name) for name in STRATEGIES)
    for s in STRATEGIES.values():
        click.echo(f"{s.name:<{width}}  {s.description}")


@cli.group()
def models() -> None:
    """The model zoo: reference networks exported to ONNX."""


@models.command("list")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
def models_list(fmt) -> None:
    """List the zoo's models."""
    from llcompile.models import list_models

    zoo = list_models()
    if fmt == "json":
        click.echo(json.dumps(zoo, indent=2))
        return
    width = max(len(name) for name in zoo)
    for name, description in zoo.items():
        click.echo(f"{name:<{width}}  {description}")


@models.command("export")
@click.argument("name")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--num-classes", default=10, show_default=True, type=click.IntRange(min=2))
@click.option("--input-shape", callback=_parse_input_shape, help="C,H,W of one sample [default: 3,32,32].")
@click.option("--mode", type=click.Choice(["training", "eval", "eval-unfolded", "dynamo"]), default="training",
              show_default=True, help="Export form; `training` keeps BatchNormalization trainable.")
@click.option("--opset", default=17, show_default=True, type=click.IntRange(14, 21))
@click.option("--seed", default=0, show_default=True, help="Weight initialisation seed.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def models_export(name, output, num_classes, input_shape, mode, opset, seed, force) -> None:
    """Export zoo model NAME to an ONNX file."""
    import torch

    from llcompile.models import export, list_models

    if name not in list_models():
        raise LLCompileError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    if output.exists() and not force:
        raise LLCompileError(f"{output} already exists (use --force to overwrite it)")
    if mode == "dynamo" and opset < 18:
        raise LLCompileError(f"--mode dynamo exports opset 18 or newer, not {opset}")
    torch.manual_seed(seed)
    try:
        export(name, output, num_classes=num_classes, input_shape=input_shape or (3, 32, 32), mode=mode, opset=opset)
    except OSError as exc:
        raise LLCompileError(f"cannot write {output}: {exc.strerror or exc}") from None
    click.echo(f"wrote {output}")


def main() -> None:
    """Entry point: user errors are one line on stderr with exit code 2, never a traceback."""
    try:
        with options_named_as_flags():
            cli.main(standalone_mode=False)
    except click.ClickException as exc:  # usage errors included: one line, like every other error
        click.echo(f"llcompile: error: {printable(exc.format_message())}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except LLCompileError as exc:
        click.echo(f"llcompile: error: {printable(exc)}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug in llcompile, not in the input: one line unless asked
        if os.environ.get("LLCOMPILE_DEBUG"):
            raise
        while exc.__cause__ is not None:  # the pass manager wraps errors: report the innermost
            exc = exc.__cause__
        message = str(exc).splitlines()[0] if str(exc) else ""
        click.echo(f"llcompile: internal error: {type(exc).__name__}: {printable(message)} "
                   "(set LLCOMPILE_DEBUG=1 for the traceback)", err=True)
        sys.exit(1)


cli.add_command(report_command)


if __name__ == "__main__":
    main()
