"""One settings object for every stage, and the one map of where a run keeps its artifacts.

Settings come from defaults, then an optional TOML file, then CLI flags (later wins). A run
directory ``runs/<name>/`` holds everything one run produces; :class:`RunPaths` is the only place
that knows its layout, so stages, the app and reports never build paths by hand.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RESOURCES = Path(__file__).resolve().parent / "resources"
DEMO_RUN = "demo"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class PrepareSettings(_Section):
    encoding: str | None = None  # None: detect UTF-8 / UTF-8-BOM / GB18030
    chunk_rows: int = 50_000
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1)
    user_dict: Path | None = None  # extra jieba dictionary (one word per line)
    extra_stopwords: Path | None = None  # one word per line, added to the shipped list
    val_frac: float = 0.1
    test_frac: float = 0.1
    holdout_films: list[str] = Field(default_factory=list)  # these films form the test split


class FeatureSettings(_Section):
    encoder: str = "e5-small"  # embedded default; or any HF name / local directory
    pooling: Literal["mean", "cls"] | None = None  # None: the encoder's default
    prefix: str | None = None  # None: the encoder's default ("query: " for e5)
    max_length: int = 256  # tokens; Douban short reviews are capped at 350 characters
    token_budget: int | None = None  # padded tokens per batch; None: 16384 GPU, 1024 per CPU thread
    # hidden states (0 = embeddings, -1 = last) whose token states are stored, or "all"
    token_layers: list[int] | Literal["all"] = Field(default_factory=lambda: [-1])
    token_state_limit: int | None = None  # keep token states for the first N reviews only
    shard_size: int = 4096
    device: str = "auto"


class HeadSettings(_Section):
    hops: int = 4  # r in Lin et al.
    attention_dim: int = 128  # d_a
    mlp_dim: int = 256
    dropout: float = 0.2
    penalty: float = 0.1
    lr: float = 2e-3
    weight_decay: float = 1e-2
    epochs: int = 20
    patience: int = 3
    batch_size: int = 64
    class_weights: bool = False
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
    output: Literal["classification", "regression", "ordinal"] = "classification"
    # reviews (stratified sample of the train split); None or 0: all of it. The CPU default
    # (20k reviews x 1 epoch, 42 s per 1,000 on 2 quiet cores) trains in about 15 minutes and
    # evaluates in about 10 more; on a GPU use 0 (the whole split) and 2 epochs
    train_limit: int | None = 20_000
    epochs: int = 1
    lr: float = 8e-5  # one short epoch: a little above the usual 2e-5..5e-5
    warmup_frac: float = 0.1
    batch_size: int = 32
    max_length: int = 128
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


class Settings(_Section):
    run_name: str = DEMO_RUN
    runs_dir: Path = PROJECT_ROOT / "runs"
    reports_dir: Path = PROJECT_ROOT / "reports"
    seed: int = 0
    prepare: PrepareSettings = Field(default_factory=PrepareSettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    head: HeadSettings = Field(default_factory=HeadSettings)
    finetune: FinetuneSettings = Field(default_factory=FinetuneSettings)
    lab: LabSettings = Field(default_factory=LabSettings)

    @property
    def paths(self) -> RunPaths:
        return RunPaths(self.runs_dir / self.run_name)


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Defaults < TOML file < overrides. Overrides use dotted keys (``features.encoder``);
    ``None`` values are ignored so CLI options left unset do not clobber the file."""
    data: dict[str, Any] = {}
    if config is not None:
        if not config.exists():
            raise FileNotFoundError(f"config file {config} does not exist")
        data = tomllib.loads(config.read_text(encoding="utf-8"))
    for key, value in overrides.items():
        if value is None:
            continue
        section, _, leaf = key.rpartition(".")
        target = data.setdefault(section, {}) if section else data
        target[leaf] = value
    return Settings.model_validate(data)


@dataclass(frozen=True)
class RunPaths:
    """Where each artifact of one run lives."""

    root: Path

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

    # train / evaluate
    @property
    def models(self) -> Path:
        return self.root / "models"

    def model(self, name: str) -> Path:
        return self.models / name

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def predictions(self) -> Path:
        return self.root / "predictions.parquet"

    # lab
    @property
    def lab(self) -> Path:
        return self.root / "lab"

    @property
    def settings(self) -> Path:
        return self.root / "settings.json"


def latest_run(runs_dir: Path) -> Path | None:
    """The most recently modified run that has prepared data, or None."""
    runs = [p for p in runs_dir.glob("*") if (p / "prepared" / "summary.json").exists()]
    return max(runs, key=lambda p: (p / "prepared" / "summary.json").stat().st_mtime, default=None)
