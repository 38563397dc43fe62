"""The `llcompile` command: a thin click layer over the Python API."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from llcompile import __version__
from llcompile.errors import LLCompileError

FORMATS = click.Choice(["text", "json"])


def _csv(_ctx, _param, value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _shape(_ctx, _param, value: str | None) -> tuple[int, ...] | None:
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
@click.option("-k", "--blocks", type=click.IntRange(min=1), help="dbl: number of blocks [default: 4].")
@click.option("--cuts", callback=_csv, help="dbl: comma-separated cut-point tensors (see `inspect MODEL`).")
@click.option("--aux-head", type=click.Choice(["fc", "conv"]), help="dbl: aux head kind [default: fc].")
@click.option("--seed", type=int, help="dbl: seed of the aux-head initialisation [default: 0].")
@click.option("--force", is_flag=True, help="Replace an existing output directory.")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
def transform(model, out_dir, strategy, blocks, cuts, aux_head, seed, force, fmt) -> None:
    """Compile MODEL.onnx into a training program directory."""
    from llcompile.compiler import transform as compile_model
    from llcompile.inspection import describe_program, render_text

    if out_dir.exists() and not force:
        raise LLCompileError(f"{out_dir} already exists (use --force to replace it)")
    program = compile_model(model, strategy, blocks=blocks, cuts=cuts, aux_head=aux_head, seed=seed)
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
def inspect(path, fmt) -> None:
    """Show a model's layers, cut points and segments, or a program's stages."""
    from llcompile.inspection import describe, render_text

    description = describe(path)
    click.echo(json.dumps(description, indent=2) if fmt == "json" else render_text(description))


@cli.command()
@click.argument("program_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--model", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="Source model to compare with [default: the path recorded in program.json].")
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(min=1))
@click.option("--tolerance", default=1e-4, show_default=True, help="Largest relative error accepted.")
def verify(program_dir, model, batch_size, tolerance) -> None:
    """Check that a program's stages, chained, compute what the source model computes."""
    from llcompile.verify import verify_program

    result = verify_program(program_dir, model, batch_size=batch_size)
    for check, error in result.items():
        click.echo(f"{check:<40} relative error {error:.2e}")
    worst = max(result.values())
    if worst > tolerance:
        raise LLCompileError(f"program differs from its source model: relative error {worst:.2e} > {tolerance:g}")
    click.echo("ok")


@cli.command()
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
def strategies(fmt) -> None:
    """List the strategies `transform` knows."""
    from llcompile.strategies import STRATEGIES

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
@click.option("--input-shape", callback=_shape, help="C,H,W of one sample [default: 3,32,32].")
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
    torch.manual_seed(seed)
    export(name, output, num_classes=num_classes, input_shape=input_shape or (3, 32, 32), mode=mode, opset=opset)
    click.echo(f"wrote {output}")


def main() -> None:
    """Entry point: user errors are one line on stderr with exit code 2, never a traceback."""
    try:
        cli.main(standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except LLCompileError as exc:
        click.echo(f"llcompile: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug in llcompile, not in the input: one line unless asked
        if os.environ.get("LLCOMPILE_DEBUG"):
            raise
        click.echo(f"llcompile: internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                   "(set LLCOMPILE_DEBUG=1 for the traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
