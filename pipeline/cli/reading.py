"""The commands that read a run: score, models, doctor, serve and the app."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from pipeline.cli.base import (
    ActorsOpt,
    AddressOpt,
    EngineOpt,
    JsonOpt,
    ReportsDirOpt,
    RunsDirOpt,
    TrainedRunOpt,
    app,
    existing_run,
    make_settings,
    say,
    stdout,
)
from pipeline.terminal import json_line, printable

if TYPE_CHECKING:
    from pipeline.run import Run


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
            help="reviews.csv or .parquet (a comment, text, review or content column), "
            "reviews.jsonl (that key, or a string, per line), reviews.txt (one review per line) "
            "or - (stdin, one per line).",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Write the records to this .csv, .jsonl or .parquet file."
        ),
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
    explain: Annotated[
        bool | None,
        typer.Option(
            "--explain/--no-explain",
            help="Add the attended words. Default: when the model's own attention head gives "
            "them at no cost; a TF-IDF or fine-tuned model loads another encoder for them.",
            show_default=False,
        ),
    ] = None,
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
                "--engine ray scores a file: --input reviews.parquet (or .jsonl, .csv) "
                "--output scored.parquet (or .csv, .jsonl)"
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
        counts = write_texts(scorer, items, output, fmt, adapt_prior=adapt_prior, explain=explain)
        where = f" into {output}" if output is not None else ""
        say(f"scored {counts['rows']:,} reviews ({counts['errors']:,} with errors){where}")
        return
    for record in scorer.score_records(items, adapt_prior=adapt_prior, explain=explain):
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
        by = f" ({record['attention_model']})" if record.get("attention_model") else ""
        out.append(f"\n  attended words{by}: {printable(words)}")
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
    from pipeline.modeling.spec import describe_choice
    from pipeline.run import Run

    opened = Run.open(run, runs_dir)
    rows = model_rows(opened)
    if as_json:
        for row in rows:
            sys.stdout.write(json_line(row) + "\n")
        return
    stdout.print(Text(models_table(rows)), soft_wrap=True)
    chosen = opened.metrics.get("default_model") or {}
    say(f"run {opened.name}; * = default model ({describe_choice(chosen)})")


@app.command()
def aspects(
    film: Annotated[
        str | None, typer.Option("--film", help="Film: Chinese or English name.")
    ] = None,
    terms: Annotated[
        bool, typer.Option("--terms", help="Print the words that name each aspect instead.")
    ] = False,
    run: TrainedRunOpt = None,
    runs_dir: RunsDirOpt = None,
    model: Annotated[
        str | None,
        typer.Option(help="Model that scores the clauses (default: tfidf_lr, else the default)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """What a film's reviews praise and complain about: per aspect (plot, acting, visuals...),
    the clauses that mention it, their mean sentiment (-1 one star .. +1 five stars) with a 95%
    interval beside the other films', and (--json) the most telling clauses both ways."""
    from pipeline.errors import InputError
    from pipeline.reports.corpus import clause_model, film_aspects, run_terms, telling_clauses
    from pipeline.run import Run

    opened = Run.open(run, runs_dir)
    if terms:
        for aspect, words in run_terms(opened).items():
            line = json_line({"aspect": aspect, "words": words}) if as_json else (
                f"{aspect:<12}{'、'.join(words)}")  # fmt: skip
            stdout.print(Text(printable(line)), soft_wrap=True)
        return
    if film is None:
        raise InputError("name the film: --film NAME", "or print the aspects' words: --terms")
    table = film_aspects(opened, film, model)
    if as_json:
        for row in table.to_dict("records"):
            row |= telling_clauses(opened, film, row["aspect"], model=model)
            sys.stdout.write(json_line(row) + "\n")
        return
    head = f"{'aspect':<20}{'clauses':>8}{'reviews':>9}{'mean':>7}{'95% interval':>16}"
    lines = [head + f"{'others':>8}{'praise':>8}{'complain':>9}"]
    for r in table.itertuples():
        others = "-" if r.corpus_mean is None else f"{r.corpus_mean:+.2f}"
        lines.append(
            f"{r.name + ' ' + r.english:<20}{r.clauses:>8,}{r.reviews:>9,}{r.mean:>+7.2f}"
            f"{f'{r.low:+.2f} .. {r.high:+.2f}':>16}{others:>8}{r.praise:>8.0%}{r.complaint:>9.0%}"
            + ("  (few clauses)" if r.small else "")
        )
    for line in lines:
        stdout.print(Text(printable(line)), soft_wrap=True)
    say(f"run {opened.name}, film {film}: clauses scored one by one by "
        f"{model or clause_model(opened)}; 'others' is the other films' mean")  # fmt: skip


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
        row: dict[str, Any] = {
            "model": name,
            "default": name == default,
            "generation": run.generation,
        }
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
    reports_dir: ReportsDirOpt = None,
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

    settings = make_settings(None, run, runs_dir, reports_dir=reports_dir)
    if run:
        existing_run(settings)
    root = settings.runs_dir.resolve()
    env = dict(os.environ, DOUBAN_RUNS_DIR=str(root))
    env["DOUBAN_REPORTS_DIR"] = str(settings.reports_dir.resolve())
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
