"""`douban`: one subcommand per stage. Each command only maps flags onto Settings and calls the
stage function; all behaviour lives in the stage modules."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from pipeline.config import Settings, load_settings

app = typer.Typer(
    help="Douban sentiment studio: prepare reviews, extract encoder features, train heads, "
    "evaluate, score, report, and explore it all in an app.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console()

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML settings file.")]
RunOpt = Annotated[str | None, typer.Option("--run", help="Run name under runs/ (default: demo).")]
RunsDirOpt = Annotated[Path | None, typer.Option("--runs-dir", help="Where runs live.")]


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def make_settings(config: Path | None, run: str | None, runs_dir: Path | None, **kw: Any) -> Settings:
    return load_settings(config, run_name=run, runs_dir=runs_dir, **kw)


@app.command()
def prepare(
    inputs: Annotated[
        list[Path], typer.Option("--input", "-i", help="DMSC-format CSV file(s) or directory.")
    ],
    config: ConfigOpt = None,
    run: RunOpt = None,
    runs_dir: RunsDirOpt = None,
    encoding: Annotated[
        str | None, typer.Option(help="utf-8, utf-8-sig or gb18030 (default: detect).")
    ] = None,
    holdout_films: Annotated[
        list[str] | None,
        typer.Option("--holdout-films", help="Films (CN or EN name) that form the test split."),
    ] = None,
    user_dict: Annotated[Path | None, typer.Option(help="Extra jieba dictionary file.")] = None,
    workers: Annotated[int | None, typer.Option(help="Segmentation processes.")] = None,
    force: Annotated[bool, typer.Option(help="Recompute even if up to date.")] = False,
) -> None:
    """Ingest, clean, segment and split reviews into runs/<run>/prepared/."""
    from pipeline.prepare import prepare_run

    settings = make_settings(
        config,
        run,
        runs_dir,
        **{
            "prepare.encoding": encoding,
            "prepare.holdout_films": holdout_films or None,
            "prepare.user_dict": user_dict,
            "prepare.workers": workers,
        },
    )
    prepare_run(settings, inputs, force=force)


if __name__ == "__main__":
    app()
