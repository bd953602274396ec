"""One settings object for every stage, and the one map of where a run keeps its artifacts.

Settings come from defaults, then an optional TOML file, then CLI flags (later wins). A run
directory ``runs/<name>/`` holds everything one run produces; :class:`RunPaths` is the only place
that knows its layout, so stages, the app and reports never build paths by hand.
"""

from __future__ import annotations

import os
import re
import shlex
import tomllib
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.artifacts import current_generation, new_generation
from pipeline.errors import InputError, InputNotFoundError, RunNameError
from pipeline.locking import run_lock
from pipeline.terminal import printable

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RESOURCES = Path(__file__).resolve().parent / "resources"
DEMO_RUN = "demo"
RUNS_DIR_ENV = "DOUBAN_RUNS_DIR"
REPORTS_DIR_ENV = "DOUBAN_REPORTS_DIR"


def default_runs_dir() -> Path:
    """``$DOUBAN_RUNS_DIR`` when set, else the project's runs/: one default for every stage,
    the scorer and the app (which `douban app` starts with the variable set)."""
    return Path(os.environ.get(RUNS_DIR_ENV) or PROJECT_ROOT / "runs")


def default_reports_dir() -> Path:
    """``$DOUBAN_REPORTS_DIR`` when set, else the project's reports/ (``douban app
    --reports-dir`` sets it for the app, so the app writes where the CLI does)."""
    return Path(os.environ.get(REPORTS_DIR_ENV) or PROJECT_ROOT / "reports")


def douban_command(words: str, run: str) -> str:
    """``douban <words> --run <run>``, with ``--runs-dir`` (and, for ``report``,
    ``--reports-dir``) when the folders in force are not the project's: a command the app or an
    error message suggests must reach the same run."""
    command = f"douban {words} --run {run}"
    runs, reports = default_runs_dir(), default_reports_dir()
    if runs.resolve() != (PROJECT_ROOT / "runs").resolve():
        command += f" --runs-dir {shlex.quote(str(runs))}"
    if words.split()[0] == "report" and reports.resolve() != (PROJECT_ROOT / "reports").resolve():
        command += f" --reports-dir {shlex.quote(str(reports))}"
    return command


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PrepareSettings(_Section):
    encoding: str | None = None  # None: detect UTF-8 / UTF-8-BOM / GB18030
    chunk_rows: int = Field(default=50_000, ge=1)
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    user_dict: Path | None = None  # extra jieba dictionary (one word per line)
    # teach jieba the names the reviews use and its dictionary splits (pipeline/data/names.py)
    discover_names: bool = True
    extra_stopwords: Path | None = None  # one word per line, added to the shipped list
    val_frac: float = Field(default=0.1, ge=0, lt=1)
    test_frac: float = Field(default=0.1, ge=0, lt=1)
    holdout_films: list[str] = Field(default_factory=list)  # these films form the test split
    # at most N reviews per source (corpus), stratified by film and star; None: every review
    sample: int | None = Field(default=None, ge=1)


class FeatureSettings(_Section):
    encoder: str = "e5-small"  # embedded default; or any HF name / local directory
    pooling: Literal["mean", "cls"] | None = None  # None: the encoder's default
    prefix: str | None = None  # None: the encoder's default ("query: " for e5)
    # tokens; Douban short reviews are capped at 350 characters
    max_length: int = Field(default=256, ge=2)
    token_budget: int | None = None  # padded tokens per batch; None: 16384 GPU, 1024 per CPU thread
    # hidden states (0 = embeddings, -1 = last) whose token states are stored, or "all"
    token_layers: list[int] | Literal["all"] = Field(default_factory=lambda: [-1])
    token_state_limit: int | None = None  # keep token states for the first N reviews only
    shard_size: int = Field(default=4096, ge=1)
    device: str = "auto"
    # the encoder's arithmetic: "auto" = int8 on a CPU (ONNX Runtime), fp32 (bf16 autocast) on a
    # GPU; int8 agrees with fp32 (benchmarks/extract.py) at about twice its speed
    precision: Literal["auto", "fp32", "int8"] = "auto"
    # wall time the encoder may take on a CPU ("30m", "2h", "none"): beyond it a stratified sample
    # is encoded (pipeline/features/sample.py); no limit on a GPU or a Ray cluster
    encode_budget: float | None = 1800.0

    @field_validator("encode_budget", mode="before")
    @classmethod
    def _budget_is_a_duration(cls, value: Any) -> float | None:
        return parse_duration(value)


class HeadSettings(_Section):
    hops: int = Field(default=4, ge=1)  # r in Lin et al.
    attention_dim: int = 128  # d_a
    mlp_dim: int = 256
    dropout: float = 0.2
    penalty: float = 0.1
    lr: float = 2e-3
    weight_decay: float = 1e-2
    epochs: int = Field(default=20, ge=1)
    patience: int = Field(default=3, ge=0)
    batch_size: int = Field(default=64, ge=1)
    class_weights: bool = False
    tfidf_balanced: bool = True  # tfidf_lr weighs stars as equals: travels better (docs/heads.md)
    layer_mix: bool = True  # learned softmax-weighted mix of the stored layers
    layers: list[int] | None = None  # token-state layers the heads read; None: all stored
    pooled_input: bool = False  # also feed the last layer's mean-pooled vector to the MLP
    outputs: list[Literal["classification", "regression", "ordinal"]] = Field(
        default_factory=lambda: ["classification", "regression", "ordinal"]
    )
    baseline_pooled_layers: list[int] = Field(default_factory=lambda: [-4, -3, -2, -1])
    ensemble: bool = True  # also save head_cls + tfidf_lr probability averaging
    device: str = "auto"


class FinetuneSettings(_Section):
    # `douban run` and `douban demo` fine-tune after training the frozen-feature models (the
    # run's default model is then chosen among all of them on validation)
    in_run: bool = True
    output: Literal["classification", "regression", "ordinal"] = "classification"
    # "attention": Lin et al.'s self-attentive head on the last layer (head.hops, attention_dim,
    # mlp_dim, dropout and penalty), so the studio's attention explains the tuned model too;
    # "linear": dropout + one linear layer on the pooled vector
    classifier: Literal["attention", "linear"] = "attention"
    # transformer layers trained, counted from the top; None: all of them; "auto": the top 4
    # on a CPU (17 s per 1,000 reviews on 2 cores instead of 31, and better when it starts from
    # the frozen head: docs/heads.md), all of them on a GPU. The rest (and the word embeddings)
    # stay frozen, so backpropagation stops below them
    train_layers: int | Literal["auto"] | None = "auto"
    # reviews (stratified sample of the train split); None or 0: all of it. The CPU default
    # (20k reviews x 1 epoch, 42 s per 1,000 on 2 quiet cores) trains in about 15 minutes and
    # evaluates in about 10 more; on a GPU use 0 (the whole split) and 2 epochs
    train_limit: int | None = 20_000
    epochs: int = Field(default=1, ge=1)
    lr: float = 8e-5  # one short epoch: a little above the usual 2e-5..5e-5
    # the classifier's own learning rate: a self-attentive head starts from the run's frozen
    # head_cls when their shapes match (warm start), else from scratch, and learns faster than
    # the encoder under it
    head_lr: float = 1e-3
    warmup_frac: float = 0.1
    batch_size: int = Field(default=32, ge=1)
    max_length: int = Field(default=128, ge=2)
    grad_clip: float = 1.0
    patience: int = 1
    eval_every: int = 200  # steps between validation checks
    val_limit: int | None = 1_000  # validation reviews per check (stratified); None: all
    dropout: float = 0.1
    weight_decay: float = 0.01
    freeze_embeddings: bool = True  # word-embedding matrix (80% of e5-small's parameters)
    device: str = "auto"


class LabSettings(_Section):
    eval_reviews: int = 1_500  # held-out test reviews (stratified) every view is computed on
    probe_train_reviews: int = 3_000  # train reviews the layer probes learn from
    model: str | None = None  # fine-tuned model to compare; None: the first finetune_* saved
    words: list[str] = Field(default_factory=lambda: ["好看", "失望", "一般", "无聊", "感动"])
    word_reviews: int = 150  # occurrences per word (balanced over stars where possible)
    tsne: bool = True  # t-SNE maps beside the PCA ones (slower)
    head_reviews: int = 300  # reviews for the attention-head statistics
    device: str = "auto"


class AspectSettings(_Section):
    # words per aspect key, added to the shipped taxonomy (pipeline/data/aspects.py); a new key
    # is a new aspect, e.g. terms = { plot = ["脑洞"], costume = ["服装", "造型"] }
    terms: dict[str, list[str]] = Field(default_factory=dict)
    extend: bool = True  # add the words of the run that keep each aspect's company


class Settings(_Section):
    run_name: str = DEMO_RUN
    runs_dir: Path = Field(default_factory=default_runs_dir)
    reports_dir: Path = Field(default_factory=default_reports_dir)
    seed: int = 0
    # the run's default model: the best on the validation split by this (never on test)
    select_by: Literal["exact", "qwk"] = "exact"
    prepare: PrepareSettings = Field(default_factory=PrepareSettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    head: HeadSettings = Field(default_factory=HeadSettings)
    finetune: FinetuneSettings = Field(default_factory=FinetuneSettings)
    lab: LabSettings = Field(default_factory=LabSettings)
    aspects: AspectSettings = Field(default_factory=AspectSettings)

    @field_validator("run_name")
    @classmethod
    def _run_name_is_a_name(cls, value: str) -> str:
        return check_run_name(value)

    @property
    def paths(self) -> RunPaths:
        return RunPaths(self.runs_dir / self.run_name)


def parse_duration(value: Any) -> float | None:
    """Seconds from ``90``, ``"90s"``, ``"30m"``, ``"1.5h"``; None from None, ``"none"`` or
    ``"all"`` (no limit)."""
    if value is None or isinstance(value, (int, float)):
        return None if value is None else float(value)
    text = str(value).strip().lower()
    if text in ("", "none", "all", "unlimited"):
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smh]?)", text)
    if match is None:
        raise ValueError(f"{value!r} is not a duration: use e.g. 90s, 30m, 2h or none")
    return float(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2) or "s"]


def check_run_name(name: str) -> str:
    """``name`` if it is one plain path segment, else :class:`RunNameError`: a run name becomes
    ``runs_dir / name``, and a separator, ``..`` or an absolute path would put (and later replace)
    a run's files outside the runs directory."""
    problem = None
    if not name or not name.strip():
        problem = "is empty"
    elif name != name.strip():
        problem = "starts or ends with white space"
    elif name.startswith("."):
        problem = "starts with '.' (`.`, `..` and hidden folders are not runs)"
    elif name.startswith(("/", "\\")):
        problem = "is an absolute path"
    elif any(sep in name for sep in "/\\:"):
        problem = "contains a path separator (/, \\ or :)"
    elif any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in name):
        problem = "contains control or invisible characters"
    elif len(name.encode("utf-8")) > 200:
        problem = "is longer than 200 bytes"
    if problem:
        shown = printable(name if len(name) <= 60 else name[:60] + "...")
        raise RunNameError(f"run name '{shown}' {problem}")
    return name


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Defaults < TOML file < overrides. Overrides use dotted keys (``features.encoder``);
    ``None`` values are ignored so CLI options left unset do not clobber the file.

    A missing or invalid file and invalid values are :class:`InputError` (a bad run name:
    :class:`RunNameError`), not pydantic's report, so the CLI shows them as one line."""
    data: dict[str, Any] = {}
    source = f"config file {config}" if config is not None else "settings"
    if config is not None:
        try:
            data = tomllib.loads(config.read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise InputNotFoundError(f"{source} does not exist", "check the --config path") from err
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
            raise InputError(f"{source} cannot be read: {err}", "fix it or drop --config") from err
    for key, value in overrides.items():
        if value is None:
            continue
        section, _, leaf = key.rpartition(".")
        target = data.setdefault(section, {}) if section else data
        target[leaf] = value
    try:
        return Settings.model_validate(data)
    except ValidationError as err:
        raise _settings_error(err, source) from None


def _settings_error(err: ValidationError, source: str) -> InputError:
    """The first problem of a validation report as one line (its RunNameError if it is one)."""
    first = err.errors()[0]
    cause = first.get("ctx", {}).get("error")
    if isinstance(cause, RunNameError):
        return cause
    where = ".".join(str(part) for part in first["loc"])
    hint = "see pipeline/config.py for the settings"
    return InputError(f"{source}: {where}: {first['msg']}", hint)


@dataclass(frozen=True)
class RunPaths:
    """Where each artifact of one run lives."""

    root: Path
    generation: Path | None = None  # the model set of a pinned() RunPaths

    @property
    def name(self) -> str:
        return self.root.name

    # prepare
    @property
    def prepared(self) -> Path:
        return self.root / "prepared"

    @property
    def reviews(self) -> Path:
        return self.prepared / "reviews.parquet"

    @property
    def rejects(self) -> Path:
        return self.prepared / "rejects.parquet"

    @property
    def summary(self) -> Path:
        return self.prepared / "summary.json"

    # features
    @property
    def features(self) -> Path:
        return self.root / "features"

    # train / evaluate: models, metrics and predictions change together, as one generation under
    # trained/ that a retrain switches with one rename; these properties follow that pointer
    @property
    def trained(self) -> Path:
        return self.root / "trained"

    @property
    def model_set(self) -> ModelSet:
        """The current generation (a run from before generations keeps its set in its root);
        for pinned paths, the one they pinned."""
        return ModelSet(self.generation or current_generation(self.trained) or self.root)

    def pinned(self) -> RunPaths:
        """These paths with the current generation resolved once, so that a reader's models,
        metrics and predictions come from one set even when a retrain switches the pointer
        between two reads (a retrain keeps the generation before it)."""
        if self.generation is not None:
            return self
        return replace(self, generation=current_generation(self.trained))

    @contextmanager
    def new_model_set(self) -> Iterator[ModelSet]:
        """A new generation started from the current set; it becomes current when the block
        succeeds, all at once (see :func:`pipeline.artifacts.new_generation`). The run's write
        lock is held meanwhile, so two trainers never share a generation."""
        with (
            run_lock(self.root, "models"),
            new_generation(self.trained, self.model_set.root, ModelSet.ENTRIES) as root,
        ):
            yield ModelSet(root)

    @property
    def models(self) -> Path:
        return self.model_set.models

    def model(self, name: str) -> Path:
        return self.models / name

    @property
    def metrics(self) -> Path:
        return self.model_set.metrics

    @property
    def default_model(self) -> Path:
        return self.model_set.default_model

    @property
    def predictions(self) -> Path:
        return self.model_set.predictions

    # lab
    @property
    def lab(self) -> Path:
        return self.root / "lab"

    @property
    def settings(self) -> Path:
        return self.root / "settings.json"


@dataclass(frozen=True)
class ModelSet:
    """One generation of a run's trained models with the metrics and predictions made from
    them: written together, read together."""

    root: Path
    ENTRIES: ClassVar[tuple[str, ...]] = (
        "models", "metrics.json", "default_model.json", "predictions.parquet",
    )  # fmt: skip

    @property
    def models(self) -> Path:
        return self.root / "models"

    def model(self, name: str) -> Path:
        return self.models / name

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def default_model(self) -> Path:
        """metrics.json's ``default_model`` alone, written after it: a scorer learns the
        default without parsing every evaluation (tens of MB on a run of many films)."""
        return self.root / "default_model.json"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions.parquet"


def latest_run(runs_dir: Path) -> Path | None:
    """The most recently modified run that has prepared data, or None."""
    runs = [p for p in runs_dir.glob("*") if (p / "prepared" / "summary.json").exists()]
    return max(runs, key=lambda p: (p / "prepared" / "summary.json").stat().st_mtime, default=None)
