"""The commands that write a run, stage by stage along the data's journey: prepare, features,
train, evaluate, report, finetune, the lab, and demo / run for all of them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from pipeline.cli.base import (
    ActorsOpt,
    AddressOpt,
    ConfigOpt,
    EncodeBudgetOpt,
    EngineOpt,
    FinetuneOpt,
    ReportsDirOpt,
    RunOpt,
    RunsDirOpt,
    SelectByOpt,
    app,
    existing_run,
    make_settings,
    run_for_inputs,
    say,
    writing_settings,
)


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
def report(
    films: Annotated[
        list[str] | None, typer.Option("--film", help="Film (Chinese or English name); repeatable.")
    ] = None,
    all_films: Annotated[bool, typer.Option("--all", help="A report for every film.")] = False,
    config: ConfigOpt = None,
    run: RunOpt = None,
    runs_dir: RunsDirOpt = None,
    reports_dir: ReportsDirOpt = None,
    model: Annotated[
        str | None,
        typer.Option(help="Model whose predictions to show (default: the run's default)."),
    ] = None,
) -> None:
    """Write self-contained HTML reports to reports/<run>/ (or --reports-dir): one page per
    film plus index.html."""
    from pipeline.reports.site import write_reports

    if not films and not all_films:
        raise typer.BadParameter("give --film NAME (repeatable) or --all")
    settings = writing_settings(config, run, runs_dir, reports_dir=reports_dir)
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
        from pipeline.cli.reading import app_command

        app_command(run=settings.run_name, runs_dir=settings.runs_dir, port=port, headless=True)


@app.command("run")
def run_all(
    inputs: Annotated[
        list[Path], typer.Option("--input", "-i", help="DMSC-format CSV file(s) or directory.")
    ],
    config: ConfigOpt = None,
    run: RunOpt = None,
    runs_dir: RunsDirOpt = None,
    reports_dir: ReportsDirOpt = None,
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
    overrides["reports_dir"] = reports_dir
    settings = make_settings(config, run, runs_dir, select_by=select_by, **overrides)
    pages = run_pipeline(settings, inputs, force=force).pages
    say(f"run ready: {settings.paths.root}; reports: {pages[-1]}", style="green")
