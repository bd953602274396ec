"""`douban`: one subcommand per stage. Each command only maps flags onto Settings and calls the
stage function; all behaviour lives in the stage modules.

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
from pipeline.terminal import json_line, printable

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
    import tomllib

    if run is not None or not inputs:
        return run
    try:
        if config is not None and "run_name" in tomllib.loads(config.read_text(encoding="utf-8")):
            return None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None  # load_settings says what is wrong with the file
    first = Path(inputs[0])
    stem = first.stem if first.suffix.lower() == ".csv" else first.name
    name = re.sub(r"[^\w.-]+", "_", stem).strip("._-")[:60] or "run"
    say(f"run {name} (named after {first.name}; --run NAME to choose)")
    return name


def existing_run(settings: Settings) -> Run:
    """The settings' run, which must exist (RunNotFoundError lists the runs there are)."""
    from pipeline.run import Run

    return Run.open(settings.run_name, settings.runs_dir)


@app.command()
def prepare(
    inputs: Annotated[
        list[Path], typer.Option("--input", "-i", help="DMSC-format CSV file(s) or directory.")
    ],
    config: ConfigOpt = None,
    run: RunOpt = None,
    runs_dir: RunsDirOpt = None,
    encoding: Annotated[
        str | None,
        typer.Option(
            help="Default: detect (UTF-8, GB18030 per row, UTF-16/32); or any codec, e.g. "
            "gb18030, euc-kr, shift_jis, big5."
        ),
    ] = None,
    holdout_films: Annotated[
        list[str] | None,
        typer.Option("--holdout-films", help="Films (CN or EN name) that form the test split."),
    ] = None,
    user_dict: Annotated[Path | None, typer.Option(help="Extra jieba dictionary file.")] = None,
    workers: Annotated[int | None, typer.Option(help="Segmentation processes.")] = None,
    sample: Annotated[
        int | None,
        typer.Option(help="At most N reviews per source (input), stratified by film and star."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Recompute even if up to date.")] = False,
) -> None:
    """Ingest, clean, segment and split reviews into runs/<run>/prepared/ (the run is named after
    the input unless --run names it; a run prepared from other inputs is replaced only with
    --force)."""
    from pipeline.data.prepare import prepare_run

    settings = make_settings(
        config,
        run_for_inputs(config, run, inputs),
        runs_dir,
        **{
            "prepare.encoding": encoding,
            "prepare.holdout_films": holdout_films or None,
            "prepare.user_dict": user_dict,
            "prepare.workers": workers,
            "prepare.sample": sample,
        },
    )
    prepare_run(settings, inputs, force=force)


def _layers(text: str | None) -> list[int] | str | None:
    """``--layers`` parsed (None when not given); a bad value is a usage error."""
    from pipeline.encoding.encode import parse_layers

    try:
        return parse_layers(text) if text is not None else None
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--layers") from error


@app.command()
def features(
    config: ConfigOpt = None,
    run: RunOpt = None,
    runs_dir: RunsDirOpt = None,
    encoder: Annotated[
        str | None, typer.Option(help="Encoder: e5-small (embedded), HF name or local dir.")
    ] = None,
    layers: Annotated[
        str | None,
        typer.Option(help="Token-state layers to store: last, all, or indices like -4,-3,-2,-1."),
    ] = None,
    max_length: Annotated[int | None, typer.Option(help="Truncate reviews to N tokens.")] = None,
    token_budget: Annotated[int | None, typer.Option(help="Padded tokens per batch.")] = None,
    token_state_limit: Annotated[
        int | None, typer.Option(help="Keep token states for the first N reviews only.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    precision: Annotated[
        str | None,
        typer.Option(help="auto (int8 on CPU via ONNX Runtime, fp32/bf16 on GPU), fp32 or int8."),
    ] = None,
    encode_budget: EncodeBudgetOpt = None,
    force: Annotated[bool, typer.Option(help="Recompute even if up to date.")] = False,
    engine: EngineOpt = "local",
    address: AddressOpt = None,
    actors: ActorsOpt = None,
) -> None:
    """Extract frozen encoder features into runs/<run>/features/ (resumable, sharded)."""
    from pipeline.features.extract import extract_features

    token_layers = _layers(layers)
    settings = writing_settings(
        config,
        run,
        runs_dir,
        **{
            "features.encoder": encoder,
            "features.token_layers": token_layers,
            "features.max_length": max_length,
            "features.token_budget": token_budget,
            "features.token_state_limit": token_state_limit,
            "features.device": device,
            "features.precision": precision,
            "features.encode_budget": encode_budget,
        },
    )
    existing_run(settings)
    extract_features(settings, force=force, engine=engine, address=address, actors=actors)


@app.command()
def train(
    config: ConfigOpt = None,
    run: RunOpt = None,
    runs_dir: RunsDirOpt = None,
    models: Annotated[
        str | None,
        typer.Option(help="Comma-separated models to train (default: all baselines and heads)."),
    ] = None,
    layers: Annotated[
        str | None, typer.Option(help="Token-state layers the heads read, e.g. -4,-3,-2,-1.")
    ] = None,
    hops: Annotated[int | None, typer.Option(help="Attention hops r.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs per head.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    select_by: SelectByOpt = None,
    force: Annotated[bool, typer.Option(help="Retrain even if up to date.")] = False,
) -> None:
    """Train baselines and self-attentive heads side by side, then evaluate them."""
    from pipeline.workflow import train_run

    parsed = _layers(layers)
    head_layers = None if parsed == "all" else parsed
    settings = writing_settings(
        config, run, runs_dir,
        **{"head.layers": head_layers, "head.hops": hops, "head.epochs": epochs,
           "head.device": device, "select_by": select_by},
    )  # fmt: skip
    existing_run(settings)
    train_run(settings, models.split(",") if models else None, force=force)


@app.command()
def evaluate(
    config: ConfigOpt = None,
    run: RunOpt = None,
    runs_dir: RunsDirOpt = None,
    external: Annotated[
        Path | None,
        typer.Option(help="Another DMSC-format CSV: score it with every model (cross_corpus)."),
    ] = None,
    models: Annotated[
        str | None, typer.Option(help="Comma-separated models (default: all).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Re-evaluate even if up to date.")] = False,
    evaluation: Annotated[
        str | None,
        typer.Option(
            help="random (default: the saved models on the run's own split), film_holdout "
            "(films never seen) or source_holdout (leave one corpus out): these two refit the "
            "models per fold and report 95% bootstrap intervals, with and without prior "
            "adaptation."
        ),
    ] = None,
    folds: Annotated[int, typer.Option(min=2, help="Folds of films for film_holdout.")] = 3,
    select_by: SelectByOpt = None,
    adapt_prior: Annotated[
        bool,
        typer.Option(
            "--adapt-prior",
            help="With --external: also show the figures with each model's star mix "
            "re-estimated on that corpus (EM, Saerens et al. 2002).",
        ),
    ] = False,
) -> None:
    """Evaluate the run's saved models into metrics.json and predictions.parquet."""
    from pipeline.training.evaluations import EVALUATIONS, evaluate_named, print_section
    from pipeline.workflow import evaluate_run

    if evaluation not in (None, *EVALUATIONS):
        raise typer.BadParameter(f"choose from {', '.join(EVALUATIONS)}", param_hint="--evaluation")
    if adapt_prior and external is None:
        raise typer.BadParameter(
            "needs --external (film_holdout and source_holdout always show both)",
            param_hint="--adapt-prior",
        )
    settings = writing_settings(config, run, runs_dir, select_by=select_by)
    existing_run(settings)
    names = models.split(",") if models else None
    if evaluation in ("film_holdout", "source_holdout"):
        if external is not None:
            raise typer.BadParameter("--external is its own evaluation", param_hint="--evaluation")
        evaluate_named(settings, evaluation, names, folds)
        return
    doc = evaluate_run(settings, names, external, force=force)
    if adapt_prior:
        print_section(doc["evaluations"]["cross_corpus"], "cross_corpus")


@app.command()
def score(
    texts: Annotated[
        list[str] | None,
        typer.Argument(help="Review text(s) to score.", metavar="TEXT", show_default=False),
    ] = None,
    input_path: Annotated[
        str | None,
        typer.Option(
            "--input",
            "-i",
            help="reviews.csv (a comment, text, review or content column), reviews.txt (one "
            "review per line) or - (stdin, one per line).",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the records to this .csv or .jsonl file."),
    ] = None,
    run: TrainedRunOpt = None,
    runs_dir: RunsDirOpt = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Model to score with (default: the run's default, chosen on validation; "
            "see `douban models`)."
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="JSON Lines: one record per input, on stdout (or into --output)."
        ),
    ] = False,
    adapt_prior: Annotated[
        bool,
        typer.Option(
            "--adapt-prior",
            help="Re-weight the probabilities to the star mix of these reviews, estimated from "
            "them all (EM; for a whole new corpus, not a single review).",
        ),
    ] = False,
    engine: EngineOpt = "local",
    address: AddressOpt = None,
    actors: ActorsOpt = None,
) -> None:
    """Score reviews with a trained run: star, probabilities, regression value, top words.

    Texts print readable summaries; --input prints CSV; --json prints JSON Lines. Every input
    gives exactly one record, in order (bad text gets an error field, not a crash)."""
    from pipeline.predict.files import output_format, read_texts, write_texts
    from pipeline.run import Run

    if texts and input_path is not None:
        raise typer.BadParameter("give review texts or --input FILE, not both")
    if not texts and input_path is None:
        raise typer.BadParameter("give review text(s) or --input FILE")
    if engine == "ray":
        from pipeline.predict.ray_scoring import score_file_on_ray

        if input_path is None or output is None or as_json or adapt_prior:
            raise typer.BadParameter(
                "--engine ray scores a file: --input reviews.parquet|csv --output scored.parquet"
            )
        counts = score_file_on_ray(
            Run.open(run, runs_dir).paths, Path(input_path), output, model=model,
            address=address, actors=actors,
        )  # fmt: skip
        say(f"scored {counts['rows']:,} reviews ({counts['errors']:,} with errors) into {output}")
        return
    fmt = output_format(output, as_json)
    items = read_texts(input_path) if input_path is not None else list(texts or [])
    scorer = Run.open(run, runs_dir).scorer(model)  # after the input is known to be readable
    if output is not None or as_json or input_path is not None:
        counts = write_texts(scorer, items, output, fmt, adapt_prior=adapt_prior)
        where = f" into {output}" if output is not None else ""
        say(f"scored {counts['rows']:,} reviews ({counts['errors']:,} with errors){where}")
        return
    for record in scorer.score_records(items, adapt_prior=adapt_prior):
        stdout.print(score_summary(record), soft_wrap=True)


def score_summary(record: dict[str, Any]) -> Text:
    """A review's score as a few readable lines; the review is shown as plain, escaped text."""
    out = Text()
    if record["error"]:
        out.append(printable(record["text"])[:80] or "(empty)", style="bold")
        out.append(f"\n  error: {record['error']}", style="red")
        return out
    out.append(printable(record["text"])[:80], style="bold")
    out.append(f"\n  predicted star: {record['pred_star']}")
    if record["probs"]:
        probs = "  ".join(f"{s}★ {p:.0%}" for s, p in enumerate(record["probs"], 1))
        out.append(f"\n  probabilities: {probs}\n  expected star: {record['expected_star']:.2f}")
    if record["regression"] is not None:
        out.append(f"\n  regression: {record['regression']:.2f}")
    if record["top_words"]:
        words = "  ".join(f"{w['word']} ({w['weight']:.2f})" for w in record["top_words"])
        out.append(f"\n  attended words: {printable(words)}")
    for warning in record["warnings"]:
        out.append(f"\n  warning: {printable(warning)}", style="yellow")
    out.append(f"\n  model: {record['model']}", style="dim")
    return out


@app.command()
def models(
    run: TrainedRunOpt = None,
    runs_dir: RunsDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The run's models with their validation and test figures; * marks the default model
    (chosen on validation), which `douban score`, the app and the reports use."""
    from pipeline.modeling.spec import SELECT_BY_WORDS
    from pipeline.run import Run

    opened = Run.open(run, runs_dir)
    rows = model_rows(opened)
    if as_json:
        for row in rows:
            sys.stdout.write(json_line(row) + "\n")
        return
    stdout.print(Text(models_table(rows)), soft_wrap=True)
    chosen = opened.metrics.get("default_model") or {}
    rule = SELECT_BY_WORDS.get(chosen.get("metric", "exact"), "best exact accuracy")
    say(f"run {opened.name}; * = default model ({rule} on {chosen.get('chosen_on', 'validation')})")


@app.command()
def doctor(
    run: Annotated[str, typer.Option("--run", help="Run name under runs/.")],
    runs_dir: RunsDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check every artifact of a run with the readers the stages use: whole, missing or broken,
    and the command that rebuilds what is not whole. Exits 1 when something is broken."""
    from pipeline.doctor import BROKEN, check_run
    from pipeline.locate import locate_run

    checks = check_run(locate_run(run, runs_dir))
    if as_json:
        for check in checks:
            sys.stdout.write(json_line(check.to_dict()) + "\n")
    else:
        for c in checks:
            fix = f"  -> {c.fix}" if c.status != "ok" and c.fix else ""
            line = f"{c.status:<8}{c.stage:<10}{c.artifact:<28}{c.detail}{fix}"
            stdout.print(Text(printable(line)), soft_wrap=True)
    broken = [c for c in checks if c.status == BROKEN]
    if broken:
        say(f"run {run}: {len(broken)} broken artifact(s)", style="red")
        raise typer.Exit(1)
    say(f"run {run}: nothing broken")


MODEL_FIGURES = ("accuracy", "off_by_one", "mae", "qwk")  # exact, off-by-one, MAE, QWK


def model_rows(run: Run) -> list[dict[str, Any]]:
    """One record per model: name, whether it is the default, and the exact / off-by-one /
    MAE / QWK figures of each split of the run's random evaluation (None where not evaluated)."""
    from pipeline.errors import StageMissingError

    names = run.models
    if not names:
        raise StageMissingError(
            f"run {run.name} has no trained models", hint=f"run `douban train --run {run.name}`"
        )
    evaluated = run.metrics.get("evaluations", {}).get("random", {}).get("models", {})
    default = run.default_model
    rows = []
    for name in names:
        figures = evaluated.get(name, {})
        row: dict[str, Any] = {"model": name, "default": name == default}
        for split in ("val", "test"):
            found = figures.get(split, {})
            row[split] = (
                {"n": found.get("n"), **{k: found.get(k) for k in MODEL_FIGURES}}
                if found.get("n")
                else None
            )
        rows.append(row)
    return rows


def models_table(rows: list[dict[str, Any]]) -> str:
    """``model_rows`` as an aligned plain-text table."""
    width = max(len(r["model"]) for r in rows) + 2
    heads = ("exact", "±1", "MAE", "QWK")
    block = 7 * len(heads)
    lines = [
        f"{'':<{width}}{'validation':^{block}}{'test':^{block}}",
        f"{'model':<{width}}" + "".join(f"{h:>7}" for h in heads) * 2,
    ]
    for r in rows:
        cells = []
        for split in ("val", "test"):
            fig = r[split] or {}
            cells += [
                f"{fig[k]:7.3f}" if fig.get(k) is not None else f"{'-':>7}" for k in MODEL_FIGURES
            ]
        mark = "* " if r["default"] else "  "
        lines.append(f"{mark}{printable(r['model']):<{width - 2}}" + "".join(cells))
    return "\n".join(lines)


@app.command()
def serve(
    run: TrainedRunOpt = None,
    runs_dir: RunsDirOpt = None,
    host: Annotated[
        str, typer.Option(help="Address to listen on; 0.0.0.0 opens the service to the network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[
        int, typer.Option(min=1, help="Worker processes, each with the models loaded.")
    ] = 1,
) -> None:
    """Serve the run's models over HTTP: POST /v1/score, GET /v1/models, /healthz, /readyz;
    OpenAPI docs at /docs (see pipeline/serve)."""
    from pipeline.serve.runner import serve as run_service

    say(f"scoring service on http://{host}:{port} (docs at /docs; Ctrl+C stops it)")
    run_service(run, runs_dir, host=host, port=port, workers=workers)


@app.command("app")
def app_command(
    run: Annotated[
        str | None, typer.Option("--run", help="Run to open (default: latest run, else demo).")
    ] = None,
    runs_dir: RunsDirOpt = None,
    port: Annotated[int, typer.Option(help="Local port to serve on.")] = 8501,
    host: Annotated[
        str, typer.Option(help="Address to listen on; 0.0.0.0 opens the app to the network.")
    ] = "127.0.0.1",
    headless: Annotated[bool, typer.Option(help="Do not open a browser.")] = False,
) -> None:
    """Open the Streamlit app (app/Home.py) on a run."""
    import os
    import signal
    import subprocess

    from pipeline.config import PROJECT_ROOT

    settings = make_settings(None, run, runs_dir)
    if run:
        existing_run(settings)
    root = settings.runs_dir.resolve()
    env = dict(os.environ, DOUBAN_RUNS_DIR=str(root))
    if run:
        env["DOUBAN_RUN"] = run
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(PROJECT_ROOT / "app" / "Home.py"),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        str(headless).lower(),
    ]
    say(f"Douban app on http://{host}:{port} (Ctrl+C stops it)")
    # cwd: streamlit reads .streamlit/config.toml from the working directory
    child = subprocess.Popen(command, env=env, cwd=PROJECT_ROOT)

    def forward(signum: int, _frame: Any) -> None:  # SIGTERM / SIGHUP: stop streamlit too
        child.send_signal(signum)

    for stop in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop, forward)
    try:
        code = child.wait()
    except KeyboardInterrupt:  # Ctrl+C reaches streamlit too, which shuts down cleanly
        code = child.wait()
    raise typer.Exit(0 if code in (0, -signal.SIGTERM, -signal.SIGINT) else code)


@app.command()
def report(
    films: Annotated[
        list[str] | None, typer.Option("--film", help="Film (Chinese or English name); repeatable.")
    ] = None,
    all_films: Annotated[bool, typer.Option("--all", help="A report for every film.")] = False,
    config: ConfigOpt = None,
    run: RunOpt = None,
    runs_dir: RunsDirOpt = None,
    model: Annotated[
        str | None,
        typer.Option(help="Model whose predictions to show (default: the run's default)."),
    ] = None,
) -> None:
    """Write self-contained HTML reports to reports/<run>/: one page per film plus index.html."""
    from pipeline.reports.site import write_reports

    if not films and not all_films:
        raise typer.BadParameter("give --film NAME (repeatable) or --all")
    settings = writing_settings(config, run, runs_dir)
    existing_run(settings)
    paths = write_reports(settings, films, all_films, model)
    say(f"wrote {len(paths)} pages; open {paths[-1]}")


@app.command()
def finetune(
    config: ConfigOpt = None,
    run: RunOpt = None,
    runs_dir: RunsDirOpt = None,
    output: Annotated[
        str | None, typer.Option(help="classification, regression or ordinal.")
    ] = None,
    encoder: Annotated[
        str | None,
        typer.Option(help="Encoder to fine-tune: e5-small (embedded), HF name or local dir."),
    ] = None,
    train_limit: Annotated[
        int | None,
        typer.Option(help="Train reviews (stratified sample); 0 = the whole train split."),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Passes over the training reviews.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Reviews per step.")] = None,
    max_length: Annotated[int | None, typer.Option(help="Tokens per review.")] = None,
    freeze_embeddings: Annotated[
        bool | None,
        typer.Option(
            "--freeze-embeddings/--train-embeddings", help="Keep the word-embedding matrix fixed."
        ),
    ] = None,
    classifier: Annotated[
        str | None,
        typer.Option(help="attention (Lin et al.'s self-attentive head, default) or linear."),
    ] = None,
    train_layers: Annotated[
        int | None, typer.Option(help="Train only the top N transformer layers (default: all).")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    evaluate: Annotated[
        bool, typer.Option(help="Evaluate into metrics.json / predictions.parquet afterwards.")
    ] = True,
    external: Annotated[
        Path | None, typer.Option(help="Another DMSC-format CSV to evaluate on (cross_corpus).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Retrain even if up to date.")] = False,
) -> None:
    """Fine-tune the encoder with the self-attentive head on top: models/finetune_<cls|reg|ord>/."""
    from pipeline.workflow import finetune_run

    settings = writing_settings(
        config, run, runs_dir,
        **{"features.encoder": encoder,
           "finetune.output": output, "finetune.train_limit": train_limit,
           "finetune.epochs": epochs, "finetune.lr": lr, "finetune.batch_size": batch_size,
           "finetune.max_length": max_length, "finetune.freeze_embeddings": freeze_embeddings,
           "finetune.classifier": classifier, "finetune.train_layers": train_layers,
           "finetune.device": device},
    )  # fmt: skip
    existing_run(settings)
    model_dir = finetune_run(settings, force=force, evaluate=evaluate, external=external)
    say(f"fine-tuned model in {model_dir}")


lab_app = typer.Typer(
    help="Representation lab: frozen vs fine-tuned encoder, layer by layer (cached in "
    "runs/<run>/lab/; see docs/lab.md).",
    no_args_is_help=True,
)
app.add_typer(lab_app, name="lab")
LAB_COMMANDS = {
    "all": (("probes", "geometry", "projection", "words", "heads"), "Every lab view."),
    "probes": (("probes",), "Linear star probe per layer, frozen vs fine-tuned."),
    "geometry": (("geometry",), "Star separation, silhouette and CKA per layer."),
    "projection": (("projection",), "PCA / t-SNE maps of every layer."),
    "word": (("words",), "One word in many reviews (lab.words), before and after."),
    "heads": (("heads",), "Attention-head patterns, head views, encoder vs attentive head."),
}


def _lab_command(parts: tuple[str, ...], doc: str) -> Any:
    def command(
        config: ConfigOpt = None,
        run: RunOpt = None,
        runs_dir: RunsDirOpt = None,
        model: Annotated[
            str | None, typer.Option(help="Fine-tuned model to compare (default: first saved).")
        ] = None,
        words: Annotated[
            list[str] | None, typer.Option("--word", help="Word to follow; repeatable.")
        ] = None,
        force: Annotated[bool, typer.Option(help="Recompute even if cached.")] = False,
    ) -> None:
        from pipeline.lab.run import run_lab

        lab = {"lab.model": model, "lab.words": words}
        settings = writing_settings(config, run, runs_dir, **lab)
        existing_run(settings)
        summary = run_lab(settings, parts, force=force)
        say(f"lab results in {settings.paths.lab}: {', '.join(summary['parts'])}")

    command.__doc__ = doc
    return command


for _name, (_parts, _doc) in LAB_COMMANDS.items():
    lab_app.command(_name)(_lab_command(_parts, _doc))


FinetuneOpt = Annotated[
    bool | None,
    typer.Option(
        "--finetune/--no-finetune",
        help="Fine-tune the encoder with the self-attentive head after the frozen-feature models "
        "(default: finetune.in_run, on).",
    ),
]


@app.command()
def demo(
    config: ConfigOpt = None,
    run: RunOpt = None,
    runs_dir: RunsDirOpt = None,
    reviews: Annotated[int, typer.Option(help="Size of the generated demo corpus.")] = 6000,
    open_app: Annotated[
        bool, typer.Option("--app/--no-app", help="Open the app when the reports are written.")
    ] = True,
    port: Annotated[int, typer.Option(help="App port.")] = 8501,
    finetune: FinetuneOpt = None,
    force: Annotated[bool, typer.Option(help="Regenerate and recompute every stage.")] = False,
) -> None:
    """The main job: demo corpus -> prepare -> features -> heads -> fine-tune -> reports -> app.

    Runs on the generated demo corpus with the embedded encoder, so it works offline."""
    from pipeline.workflow import run_demo

    settings = make_settings(config, run, runs_dir, **{"finetune.in_run": finetune})
    pages = run_demo(settings, n_reviews=reviews, force=force).pages
    say(f"demo run ready: {settings.paths.root}; reports: {pages[-1]}", style="green")
    if open_app:
        app_command(run=settings.run_name, runs_dir=settings.runs_dir, port=port, headless=True)


@app.command("run")
def run_all(
    inputs: Annotated[
        list[Path], typer.Option("--input", "-i", help="DMSC-format CSV file(s) or directory.")
    ],
    config: ConfigOpt = None,
    run: RunOpt = None,
    runs_dir: RunsDirOpt = None,
    select_by: SelectByOpt = None,
    finetune: FinetuneOpt = None,
    encode_budget: EncodeBudgetOpt = None,
    force: Annotated[bool, typer.Option(help="Recompute every stage.")] = False,
) -> None:
    """Every stage on your own CSVs: prepare -> features -> train + evaluate -> fine-tune ->
    reports."""
    from pipeline.workflow import run_pipeline

    overrides = {"finetune.in_run": finetune, "features.encode_budget": encode_budget}
    run = run_for_inputs(config, run, inputs)
    settings = make_settings(config, run, runs_dir, select_by=select_by, **overrides)
    pages = run_pipeline(settings, inputs, force=force).pages
    say(f"run ready: {settings.paths.root}; reports: {pages[-1]}", style="green")


if __name__ == "__main__":
    app()
