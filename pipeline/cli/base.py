"""What every `douban` command shares: the app, its error handling, the options, and how a
command turns its flags into Settings (and which run it writes).

Contracts every command keeps: data (scores, tables) goes to stdout, everything else (progress,
summaries, logs, errors) to stderr; a :class:`~pipeline.errors.DoubanError` is caught once, in
:class:`_Commands`, and printed as one line with a non-zero exit (the traceback only with
``-v``); user text (reviews, film and run names) reaches the terminal as plain text, with
control characters escaped, never as Rich markup.
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from pipeline.config import Settings, load_settings
from pipeline.errors import DoubanError, InputError
from pipeline.terminal import printable

if TYPE_CHECKING:
    from pipeline.run import Run

stdout = Console(highlight=False)
stderr = Console(stderr=True, highlight=False)


class _Commands(TyperGroup):
    """Runs a subcommand and turns what it raises into one line on stderr: a DoubanError exits
    with its ``exit_code``, anything else with 1. Typer's own exits and usage errors pass."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException, BrokenPipeError):
            raise
        except DoubanError as error:
            _fail(ctx, str(error), error.exit_code)
        except Exception as error:
            _fail(ctx, f"unexpected {type(error).__name__}: {error}", 1, unexpected=True)


def _fail(ctx: Any, message: str, code: int, unexpected: bool = False) -> NoReturn:
    verbose = bool(ctx.params.get("verbose"))
    if verbose:
        traceback.print_exc()
    line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    if unexpected and not verbose:
        line += " (run with -v for the traceback)"
    say(f"error: {line}", style="red")
    raise typer.Exit(code)


def say(message: str, style: str | None = None) -> None:
    """A message for the user on stderr, on one line, never interpreted as markup."""
    stderr.print(Text(printable(message), style=style or ""), soft_wrap=True)


app = typer.Typer(
    cls=_Commands,
    help="Douban sentiment studio: prepare reviews, extract encoder features, train heads, "
    "evaluate, score, report, and explore it all in an app.",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help: flags without a `<bool>` type column
    pretty_exceptions_enable=False,  # errors are caught in _Commands
)

ConfigOpt = Annotated[Path | None, typer.Option("--config", help="TOML settings file.")]
RunOpt = Annotated[
    str | None,
    typer.Option("--run", help="Run under runs/ (prepare and run: named after the input)."),
]
RunsDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--runs-dir", help="Folder the runs live in (default: $DOUBAN_RUNS_DIR or runs/)."
    ),
]
ReportsDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--reports-dir",
        help="Folder the HTML reports go to, as <folder>/<run>/ (default: $DOUBAN_REPORTS_DIR "
        "or reports/).",
    ),
]
TrainedRunOpt = Annotated[
    str | None, typer.Option("--run", help="Run name (default: the newest run with models).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="JSON Lines on stdout: one record per line.")]
EngineOpt = Annotated[
    Literal["local", "ray"],
    typer.Option(
        help="local (this process) or ray (a pool of model actors on a Ray cluster; needs "
        'pip install -e ".[ray]").'
    ),
]
AddressOpt = Annotated[
    str | None,
    typer.Option(help="Ray cluster: auto, HOST:PORT, or none for a local runtime (--engine ray)."),
]
ActorsOpt = Annotated[
    int | None,
    typer.Option(help="Ray actors (default: one per GPU, else one per CPU; --engine ray)."),
]


EncodeBudgetOpt = Annotated[
    str | None,
    typer.Option(
        "--encode-budget",
        help="Encoder wall time on a CPU, e.g. 30m, 2h or none; beyond it a stratified sample "
        "(by split, film and star) is encoded (default: features.encode_budget, 30m).",
    ),
]
SelectByOpt = Annotated[
    str | None,
    typer.Option(
        "--select-by",
        help="How the run's default model is chosen on validation: exact (accuracy, the default) "
        "or qwk (ordinal agreement: the model that travels best to new films, docs/heads.md).",
    ),
]


@app.callback()
def _main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Debug logs, and tracebacks with errors.")
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def make_settings(
    config: Path | None, run: str | None, runs_dir: Path | None, **kw: Any
) -> Settings:
    """Settings from the config file and the command's flags (run names validated)."""
    return load_settings(config, run_name=run, runs_dir=runs_dir, **kw)


def writing_settings(
    config: Path | None, run: str | None, runs_dir: Path | None, **kw: Any
) -> Settings:
    """:func:`make_settings` for a command that writes into an existing run: the run must be
    named (--run, or the config file's run_name): writing into the demo by default is how a
    forgotten flag replaced it."""
    settings = make_settings(config, run, runs_dir, **kw)
    if run is None and not _config_names_run(config):
        from pipeline.locate import run_names

        runs = run_names(settings.runs_dir) if settings.runs_dir.is_dir() else []
        raise InputError(
            "name the run to write: --run NAME",
            f"runs in {settings.runs_dir}: {', '.join(runs) or 'none yet (douban prepare)'}",
        )
    return settings


def _config_names_run(config: Path | None) -> bool:
    import tomllib

    try:
        return config is not None and "run_name" in tomllib.loads(config.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return False


def run_for_inputs(config: Path | None, run: str | None, inputs: list[Path]) -> str | None:
    """The run a command that reads inputs writes: ``--run``, else the config file's
    ``run_name``, else one named after the first input (``my.csv`` -> ``my``), said aloud; never
    a silent default that would replace the demo."""
    import re

    if run is not None or not inputs or _config_names_run(config):
        return run
    first = Path(inputs[0])
    stem = first.stem if first.suffix.lower() == ".csv" else first.name
    name = re.sub(r"[^\w.-]+", "_", stem).strip("._-")[:60] or "run"
    say(f"run {name} (named after {first.name}; --run NAME to choose)")
    return name


def existing_run(settings: Settings) -> Run:
    """The settings' run, which must exist (RunNotFoundError lists the runs there are)."""
    from pipeline.run import Run

    return Run.open(settings.run_name, settings.runs_dir)


FinetuneOpt = Annotated[
    bool | None,
    typer.Option(
        "--finetune/--no-finetune",
        help="Fine-tune the encoder with the self-attentive head after the frozen-feature models "
        "(default: finetune.in_run, on).",
    ),
]
