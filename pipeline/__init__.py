"""Douban sentiment studio: the importable pipeline and its public API.

``Run.open("demo")`` reads one run; ``Scorer.load("demo")("剧情拖沓")`` scores text with its
default model; ``pipeline.score(texts)`` does the same in one call. Every error a user can fix is a
:class:`DoubanError`. Names are imported on first use (module ``__getattr__``), so ``import
pipeline`` stays light: no torch, transformers or streamlit until something needs them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pipeline.version import __version__

# public name -> module that defines it
_EXPORTS = {
    "Run": "pipeline.run",
    "Scorer": "pipeline.predict.scorer",
    "ScoreRecord": "pipeline.predict.records",
    "Explanation": "pipeline.predict.records",
    "score": "pipeline.run",
    "DoubanError": "pipeline.errors",
    "InputError": "pipeline.errors",
    "RunNameError": "pipeline.errors",
    "RunNotFoundError": "pipeline.errors",
    "StageMissingError": "pipeline.errors",
    "StaleArtifactError": "pipeline.errors",
    "CorruptArtifactError": "pipeline.errors",
    "ModelNotFoundError": "pipeline.errors",
    "FilmNotFoundError": "pipeline.errors",
    "EncoderNotAvailable": "pipeline.errors",
    # what the app and notebooks read a run's analytics and reports through
    "Settings": "pipeline.config",
    "REJECT_MEANINGS": "pipeline.data.ingest",
    "default_runs_dir": "pipeline.config",
    "douban_command": "pipeline.config",
    "run_names": "pipeline.locate",
    "charts": "pipeline.reports",
    "FilmReport": "pipeline.reports.film",
    "film_report": "pipeline.reports.store",
    "corpus_map": "pipeline.reports.store",
    "write_reports": "pipeline.reports.site",
    "film_file_names": "pipeline.reports.names",
    "model_name": "pipeline.reports.names",
    "glossary": "pipeline.reports.names",
    "column_help": "pipeline.reports.names",
    "styled_table": "pipeline.reports.names",
    "describe_choice": "pipeline.modeling.spec",
    "highlight_html": "pipeline.markup",
    "words_html": "pipeline.markup",
    "embeddable_page": "pipeline.markup",
    "top_attention_words": "pipeline.analytics.attention",
    "film_aspects": "pipeline.reports.corpus",
    "telling_clauses": "pipeline.reports.corpus",
    "clause_model": "pipeline.reports.corpus",
    "aspect_table": "pipeline.analytics.aspects",
    "aspect_labels": "pipeline.analytics.aspects",
    "run_terms": "pipeline.reports.corpus",
    "read_texts": "pipeline.predict.files",
    "write_records": "pipeline.predict.files",
    "read_lab": "pipeline.lab.run",
}
__all__ = [  # noqa: RUF022 (grouped as in _EXPORTS)
    "__version__",
    "Run",
    "Scorer",
    "ScoreRecord",
    "Explanation",
    "score",
    "DoubanError",
    "InputError",
    "RunNameError",
    "RunNotFoundError",
    "StageMissingError",
    "StaleArtifactError",
    "CorruptArtifactError",
    "ModelNotFoundError",
    "FilmNotFoundError",
    "EncoderNotAvailable",
    "Settings",
    "REJECT_MEANINGS",
    "default_runs_dir",
    "douban_command",
    "run_names",
    "charts",
    "FilmReport",
    "film_report",
    "corpus_map",
    "write_reports",
    "film_file_names",
    "model_name",
    "glossary",
    "column_help",
    "styled_table",
    "describe_choice",
    "highlight_html",
    "words_html",
    "embeddable_page",
    "top_attention_words",
    "film_aspects",
    "telling_clauses",
    "clause_model",
    "aspect_table",
    "aspect_labels",
    "run_terms",
    "read_texts",
    "write_records",
    "read_lab",
]

if TYPE_CHECKING:
    from pipeline.analytics.attention import top_attention_words
    from pipeline.config import Settings, default_runs_dir, douban_command
    from pipeline.data.ingest import REJECT_MEANINGS
    from pipeline.errors import (
        CorruptArtifactError,
        DoubanError,
        EncoderNotAvailable,
        FilmNotFoundError,
        InputError,
        ModelNotFoundError,
        RunNameError,
        RunNotFoundError,
        StageMissingError,
        StaleArtifactError,
    )
    from pipeline.lab.run import read_lab
    from pipeline.locate import run_names
    from pipeline.markup import embeddable_page, highlight_html, words_html
    from pipeline.modeling.spec import describe_choice
    from pipeline.predict.files import read_texts, write_records
    from pipeline.predict.records import Explanation, ScoreRecord
    from pipeline.predict.scorer import Scorer, score
    from pipeline.reports import charts
    from pipeline.reports.film import FilmReport
    from pipeline.reports.names import (
        column_help,
        film_file_names,
        glossary,
        model_name,
        styled_table,
    )
    from pipeline.reports.site import write_reports
    from pipeline.reports.store import corpus_map, film_report
    from pipeline.run import Run


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
