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


def make_settings(
    config: Path | None, run: str | None, runs_dir: Path | None, **kw: Any
) -> Settings:
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
    from pipeline.data.ingest import DatasetError
    from pipeline.data.prepare import prepare_run

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
    try:
        prepare_run(settings, inputs, force=force)
    except (DatasetError, FileNotFoundError) as error:
        console.print(str(error), style="red", markup=False)
        raise typer.Exit(1) from error


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
    force: Annotated[bool, typer.Option(help="Recompute even if up to date.")] = False,
) -> None:
    """Extract frozen encoder features into runs/<run>/features/ (resumable, sharded)."""
    from pipeline.encoding.encode import parse_layers
    from pipeline.features.extract import extract_features

    try:
        token_layers = parse_layers(layers) if layers is not None else None
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--layers") from error
    settings = make_settings(
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
        },
    )
    extract_features(settings, force=force)


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
) -> None:
    """Train baselines and self-attentive heads side by side, then evaluate them."""
    from pipeline.encoding.encode import parse_layers
    from pipeline.training.train import train_run

    head_layers = None
    if layers is not None:
        parsed = parse_layers(layers)
        head_layers = None if parsed == "all" else parsed
    settings = make_settings(
        config, run, runs_dir,
        **{"head.layers": head_layers, "head.hops": hops, "head.epochs": epochs,
           "head.device": device},
    )  # fmt: skip
    train_run(settings, models.split(",") if models else None)


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
) -> None:
    """Evaluate the run's saved models into metrics.json and predictions.parquet."""
    from pipeline.training.evaluate import evaluate_run

    settings = make_settings(config, run, runs_dir)
    evaluate_run(settings, models.split(",") if models else None, external=external)


@app.command()
def score(
    texts: Annotated[list[str] | None, typer.Argument(help="Review text(s) to score.")] = None,
    input_path: Annotated[
        str | None,
        typer.Option("--input", "-i", help="reviews.csv, reviews.txt (one per line) or - (stdin)."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write .csv or .jsonl here.")
    ] = None,
    run: Annotated[
        str | None, typer.Option("--run", help="Run name or directory (default: latest trained).")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model (default: best on validation).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON records.")] = False,
) -> None:
    """Score reviews with a trained run: star, probabilities, regression value, top words."""
    import json

    from pipeline.predict.files import score_file
    from pipeline.predict.scorer import NoTrainedRunError, get_scorer

    if not texts and input_path is None:
        raise typer.BadParameter("give review text(s) or --input FILE")
    try:
        scorer = get_scorer(run, model)
    except NoTrainedRunError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from error
    if input_path is not None:
        fmt = "jsonl" if as_json else None
        counts = score_file(scorer, input_path, output, fmt)
        console.print(f"scored {counts['rows']:,} reviews ({counts['errors']:,} with errors)",
                      style="dim")  # fmt: skip
        return
    records = scorer.score_records(texts)
    if as_json:
        print(json.dumps(records if len(records) > 1 else records[0], ensure_ascii=False, indent=2))
        return
    for record in records:
        console.print(score_summary(record))


def score_summary(record: dict[str, Any]) -> str:
    """A review's score as a few readable lines."""
    if record["error"]:
        return f"[red]{record['text']!r}: {record['error']}[/red]"
    lines = [f"[bold]{record['text'][:80]}[/bold]", f"  predicted star: {record['pred_star']}"]
    if record["probs"]:
        probs = "  ".join(f"{s}★ {p:.0%}" for s, p in enumerate(record["probs"], 1))
        lines += [f"  probabilities: {probs}", f"  expected star: {record['expected_star']:.2f}"]
    if record["regression"] is not None:
        lines.append(f"  regression: {record['regression']:.2f}")
    if record["top_words"]:
        words = "  ".join(f"{w['word']} ({w['weight']:.2f})" for w in record["top_words"])
        lines.append(f"  attended words: {words}")
    lines += [f"  [yellow]warning: {w}[/yellow]" for w in record["warnings"]]
    lines.append(f"  [dim]model: {record['model']}[/dim]")
    return "\n".join(lines)


@app.command("app")
def app_command(
    run: Annotated[
        str | None, typer.Option("--run", help="Run to open (default: latest run, else demo).")
    ] = None,
    runs_dir: RunsDirOpt = None,
    port: Annotated[int, typer.Option(help="Local port to serve on.")] = 8501,
    headless: Annotated[bool, typer.Option(help="Do not open a browser.")] = False,
) -> None:
    """Open the Streamlit app (app/Home.py) on a run."""
    import os
    import subprocess
    import sys

    from pipeline.config import PROJECT_ROOT, RunPaths

    root = (runs_dir or Settings().runs_dir).resolve()
    if run and not RunPaths(root / run).summary.exists():
        found = sorted(p.parent.parent.name for p in root.glob("*/prepared/summary.json"))
        console.print(f"[red]no prepared run {run!r} in {root}[/red]; runs: {found or 'none'}")
        raise typer.Exit(1)
    env = dict(os.environ, DOUBAN_RUNS_DIR=str(root))
    if run:
        env["DOUBAN_RUN"] = run
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(PROJECT_ROOT / "app" / "Home.py"),
        "--server.port",
        str(port),
        "--server.headless",
        str(headless).lower(),
    ]
    console.print(f"Douban app on http://localhost:{port} (Ctrl+C stops it)")
    # cwd: streamlit reads .streamlit/config.toml from the working directory
    try:
        code = subprocess.call(command, env=env, cwd=PROJECT_ROOT)
    except KeyboardInterrupt:  # Ctrl+C reaches streamlit too, which shuts down cleanly
        code = 0
    raise typer.Exit(code)


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
        str | None, typer.Option(help="Model whose predictions to show (default: best on test).")
    ] = None,
) -> None:
    """Write self-contained HTML reports to reports/<run>/: one page per film plus index.html."""
    from pipeline.analytics import FilmNotFoundError
    from pipeline.reports.pages import write_reports

    if not films and not all_films:
        raise typer.BadParameter("give --film NAME (repeatable) or --all")
    settings = make_settings(config, run, runs_dir)
    try:
        paths = write_reports(settings, films, all_films, model)
    except (FilmNotFoundError, FileNotFoundError, ValueError) as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(1) from error
    console.print(f"wrote {len(paths)} pages; open {paths[-1]}")


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
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    evaluate: Annotated[
        bool, typer.Option(help="Evaluate into metrics.json / predictions.parquet afterwards.")
    ] = True,
    external: Annotated[
        Path | None, typer.Option(help="Another DMSC-format CSV to evaluate on (cross_corpus).")
    ] = None,
    force: Annotated[bool, typer.Option(help="Retrain even if up to date.")] = False,
) -> None:
    """Fine-tune the whole encoder with a small head: models/finetune_<cls|reg|ord>/."""
    from pipeline.training.finetune import finetune_run

    settings = make_settings(
        config, run, runs_dir,
        **{"features.encoder": encoder,
           "finetune.output": output, "finetune.train_limit": train_limit,
           "finetune.epochs": epochs, "finetune.lr": lr, "finetune.batch_size": batch_size,
           "finetune.max_length": max_length, "finetune.freeze_embeddings": freeze_embeddings,
           "finetune.device": device},
    )  # fmt: skip
    model_dir = finetune_run(settings, force=force, evaluate=evaluate, external=external)
    console.print(f"fine-tuned model in {model_dir}")


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

        settings = make_settings(config, run, runs_dir, **{"lab.model": model, "lab.words": words})
        summary = run_lab(settings, parts, force=force)
        console.print(f"lab results in {settings.paths.lab}: {', '.join(summary['parts'])}")

    command.__doc__ = doc
    return command


for _name, (_parts, _doc) in LAB_COMMANDS.items():
    lab_app.command(_name)(_lab_command(_parts, _doc))


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
    force: Annotated[bool, typer.Option(help="Regenerate and recompute every stage.")] = False,
) -> None:
    """The main job: demo corpus -> prepare -> features -> heads -> reports -> app.

    Runs on the generated demo corpus with the embedded encoder, so it works offline."""
    from pipeline.workflow import run_demo

    settings = make_settings(config, run, runs_dir)
    pages = run_demo(settings, n_reviews=reviews, force=force).pages
    console.print(f"[green]demo run ready:[/green] {settings.paths.root}; reports: {pages[-1]}")
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
    force: Annotated[bool, typer.Option(help="Recompute every stage.")] = False,
) -> None:
    """Every stage on your own CSVs: prepare -> features -> train + evaluate -> reports."""
    from pipeline.workflow import run_pipeline

    settings = make_settings(config, run, runs_dir)
    pages = run_pipeline(settings, inputs, force=force).pages
    console.print(f"[green]run ready:[/green] {settings.paths.root}; reports: {pages[-1]}")


if __name__ == "__main__":
    app()
