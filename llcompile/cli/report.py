"""`llcompile report`: the click command over ``llcompile.report``."""

from __future__ import annotations

from pathlib import Path

import click

from llcompile.cli.parsing import parse_csv
from llcompile.errors import LLCompileError
from llcompile.report.formats import FORMATS
from llcompile.report.parallel_projection import DEFAULT_LINK_GBPS
from llcompile.report.report import DEFAULT_BATCH_SIZE, DEFAULT_ONCHIP_KIB
from llcompile.report.tables import DETAILS


def _parse_workers(_ctx, _param, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        counts = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected worker counts separated by commas, got {value!r}") from None
    if not counts or min(counts) < 1:
        raise click.BadParameter(f"expected worker counts >= 1, got {value!r}")
    return counts


@click.command("report")
@click.argument("source", metavar="MODEL.onnx|PROGRAM_DIR", type=click.Path(path_type=Path))
@click.option("-s", "--strategy", "strategies", multiple=True, metavar="NAME[:OPT=V,...]",
              help="Strategy to cost beside bp; repeatable. Options inline, e.g. dbl:blocks=8 or "
                   "local-sgd:prefix=5 (cuts as cuts=A|B).")
@click.option("-k", "--blocks", type=click.IntRange(min=1), help="Blocks, for every strategy that takes them.")
@click.option("--prefix", type=click.IntRange(min=0),
              help="Leading segments in the Hebbian prefix (local-sgd, dbl-hebbian) [default: half the segments].")
@click.option("--cuts", callback=parse_csv, help="Comma-separated cut-point tensors (dbl).")
@click.option("--aux-head", help="Aux head kind (dbl) [default: fc].")
@click.option("--aux-depth", type=float,
              help="Fraction of the later segments an augmented aux head copies [default: 0.1].")
@click.option("--seed", type=click.IntRange(min=0), help="Aux-head initialisation seed (dbl).")
@click.option("--batch-size", default=DEFAULT_BATCH_SIZE, show_default=True, type=click.IntRange(min=1),
              help="Batch of the memory and traffic figures (MACs are per sample).")
@click.option("--onchip-kib", default=DEFAULT_ONCHIP_KIB, show_default=True, type=click.IntRange(min=0),
              help="On-chip buffer of the off-chip traffic model, KiB.")
@click.option("--optimizer", type=click.Choice(["sgd", "adamw"]), default="sgd", show_default=True,
              help="Optimizer state: sgd with momentum keeps 1 slot per parameter, adamw 2.")
@click.option("--measured", "measured", multiple=True, type=click.Path(path_type=Path), metavar="RUN_DIR",
              help="A training run (llcompile train's run dir) to show beside its strategy; repeatable.")
@click.option("--workers", callback=_parse_workers, metavar="N[,N...]",
              help="Project the throughput of dbl stage-parallel, GPipe/1F1B bp and DDP bp on N workers "
                   "(modelled; docs/cost-model.md).")
@click.option("--link-gbps", type=float, default=DEFAULT_LINK_GBPS, show_default=True,
              help="--workers: bandwidth of each link between workers, gigabits per second.")
@click.option("--mac-rate", type=float, metavar="MAC/S",
              help="--workers: MACs per second of one worker [default: calibrated from --measured, else "
                   "the documented default].")
@click.option("--micro-batches", type=click.IntRange(min=1),
              help="--workers: micro-batches per step of GPipe/1F1B bp [default: 4 x stages].")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--detail", type=click.Choice(DETAILS), default="summary", show_default=True,
              help="table/markdown/html: strategy summary only, plus stages, plus layers.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write to FILE (markdown also writes FILE's .png beside it) instead of stdout.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
def report(source, strategies, blocks, prefix, cuts, aux_head, aux_depth, seed, batch_size, onchip_kib, optimizer,
           measured, workers, link_gbps, mac_rate, micro_batches, fmt, detail, output, force) -> None:
    """Predict the cost of training MODEL.onnx (or a compiled PROGRAM_DIR) with bp and each --strategy:
    MACs (forward, backward dX/dW, Hebbian, aux heads), activation memory and off-chip traffic, per
    layer, per stage and per strategy, with ratios to bp. See docs/cost-model.md."""
    from llcompile.report.parallel_projection import ProjectionSettings, attach_projection
    from llcompile.report.measured import read_run
    from llcompile.report.programs import parse_spec, resolve
    from llcompile.report.render import render, write_outputs
    from llcompile.report.report import report_of

    if output is not None:
        _check_writable(output, force, fmt)
    specs = [parse_spec(text) for text in strategies]
    flags = {"blocks": blocks, "prefix": prefix, "cuts": cuts, "aux_head": aux_head, "aux_depth": aux_depth,
             "seed": seed}
    runs = [read_run(run_dir) for run_dir in measured]  # a bad RUN_DIR fails before the compile work
    resolved = resolve(source, specs, flags)
    data = report_of(resolved, batch_size=batch_size, onchip_kib=onchip_kib, optimizer=optimizer, runs=runs)
    if workers:
        dbl_options = {k: flags[k] for k in ("aux_head", "aux_depth", "seed") if flags[k] is not None}
        attach_projection(data, resolved.model, resolved.analysis,
                          ProjectionSettings(workers, link_gbps, mac_rate, micro_batches, dbl_options))
    if output is None:
        click.echo(render(data, fmt, detail), nl=False)
        return
    written = write_outputs(data, fmt, detail, output)
    for path in written:
        click.echo(f"wrote {path}", err=True)


def _check_writable(output: Path, force: bool, fmt: str) -> None:
    from llcompile.report.render import outputs_for

    for path in outputs_for(output, fmt):
        if path.exists() and not force:
            raise LLCompileError(f"{path} already exists (use --force to overwrite it)")
        if path.exists() and not path.is_file():
            raise LLCompileError(f"{path} exists and is not a file")
    if not output.parent.exists():
        raise LLCompileError(f"{output.parent}: no such directory")
