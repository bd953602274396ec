"""Display names and a glossary for models and metrics, shared by the app and the reports.

Model ids (``pooled_lr_layers``) are stable keys in files; people read the display name. An id
the table does not know (a new model kind) is shown as itself rather than hidden.
"""

from __future__ import annotations

import hashlib
import numbers
import re
import unicodedata
from typing import Any

import pandas as pd

MODEL_NAMES = {
    "majority": "Majority star",
    "tfidf_lr": "TF-IDF + logistic",
    "tfidf_ridge": "TF-IDF + ridge",
    "pooled_lr": "Encoder + logistic",
    "pooled_lr_layers": "Encoder layers + logistic",
    "head_cls": "Attention head (classes)",
    "head_reg": "Attention head (regression)",
    "head_ord": "Attention head (ordinal)",
    "ensemble_head_tfidf": "Ensemble: head + TF-IDF",
    "finetune_cls": "Fine-tuned (classes)",
    "finetune_reg": "Fine-tuned (regression)",
    "finetune_ord": "Fine-tuned (ordinal)",
    "ensemble_finetune_tfidf": "Ensemble: fine-tuned + TF-IDF",
}
MODEL_GLOSSARY = {
    "majority": "always predicts the most common training star; the floor to beat",
    "tfidf_lr": "logistic regression on TF-IDF word and character n-grams (no encoder)",
    "tfidf_ridge": "ridge regression on TF-IDF n-grams, rounded to a star",
    "pooled_lr": "logistic regression on the encoder's mean-pooled last layer",
    "pooled_lr_layers": "logistic regression on several encoder layers, mean-pooled",
    "head_cls": "self-attentive head over the frozen encoder's token states, five classes; "
    "its attention shows which words it used",
    "head_reg": "self-attentive head predicting a continuous star",
    "head_ord": "self-attentive head with an ordinal (CORAL) output",
    "ensemble_head_tfidf": "averages the attention head's and TF-IDF model's probabilities",
    "finetune_cls": "the encoder itself fine-tuned on the run's reviews, five classes",
    "finetune_reg": "the encoder fine-tuned to predict a continuous star",
    "finetune_ord": "the encoder fine-tuned with an ordinal output",
    "ensemble_finetune_tfidf": "averages the fine-tuned model's and TF-IDF model's probabilities",
}
METRIC_NAMES = {
    "n": "Reviews",
    "accuracy": "Exact",
    "exact": "Exact",
    "exact_low": "Exact (95% CI low)",
    "exact_high": "Exact (95% CI high)",
    "off_by_one": "Off by ≤1",
    "mae": "MAE",
    "rmse": "RMSE",
    "qwk": "QWK",
    "macro_f1": "Macro-F1",
    "expected_star_mae": "E[star] MAE",
    "median_star_accuracy": "Median-star exact",
    "median_star_mae": "Median-star MAE",
    "ece": "ECE",
    "log_loss": "Log loss",
    "mean_star": "Mean star",
    "mean_pred": "Mean predicted",
    "mean_true": "Mean true",
    "evaluated": "Evaluated",
    "error": "Error (pred − true)",
    "rank_true": "Rank (true)",
    "rank_pred": "Rank (predicted)",
    "reviews": "Reviews",
    "model": "Model",
    "film": "Film",
    "word": "Word",
    "count": "Count",
    "score": "Score",
}
METRIC_GLOSSARY = {
    "Exact": "share of reviews whose predicted star equals the true star",
    "Off by ≤1": "share of reviews predicted within one star of the truth",
    "MAE": "mean absolute error, in stars (lower is better)",
    "RMSE": "root mean squared error, in stars; punishes large misses",
    "QWK": "quadratic weighted kappa: agreement beyond chance, 1 = perfect, 0 = chance",
    "Macro-F1": "F1 averaged over the five stars equally, so rare stars count as much",
    "E[star] MAE": "MAE of the probability-weighted star instead of the most likely one",
    "Median-star exact": "exact accuracy of the median of the predicted star distribution (the "
    "star with half the probability below it)",
    "Median-star MAE": "MAE of that median star, in stars",
    "ECE": "expected calibration error: gap between confidence and accuracy (lower is better)",
    "Log loss": "cross-entropy of the predicted probabilities (lower is better)",
    "95% CI": "bootstrap interval over the evaluated reviews (1,000 resamples)",
    "Exact (95% CI low)": "lower end of the bootstrap 95% interval of exact accuracy",
    "Exact (95% CI high)": "upper end of the bootstrap 95% interval of exact accuracy",
    "Evaluated": "reviews of the film the model was evaluated on (its test split)",
    "Error (pred − true)": "mean predicted star minus mean true star, over the evaluated reviews",
    "Rank (true)": "the film's place by mean true star (films with at least 5 evaluated reviews)",
    "Rank (predicted)": "the film's place by mean predicted star (same films)",
}
PERCENT_METRICS = frozenset(
    {"Exact", "Off by ≤1", "Macro-F1", "Median-star exact", "Exact (95% CI low)",
     "Exact (95% CI high)"}
)  # fmt: skip
COUNT_COLUMNS = frozenset({"Reviews", "Count", "Evaluated", "Rank (true)", "Rank (predicted)"})
MISSING = "-"


def model_name(model: str | None) -> str:
    """The display name of a model id (the id itself when unknown; ``-`` for none)."""
    if not model:
        return MISSING
    return MODEL_NAMES.get(model, model)


def metric_name(column: str) -> str:
    return METRIC_NAMES.get(column, column.replace("_", " ").capitalize())


def glossary(models: list[str] | None = None) -> pd.DataFrame:
    """``term, meaning`` rows: the given models (all known ones by default) then the metrics."""
    ids = models if models is not None else list(MODEL_NAMES)
    rows = [(model_name(m), m, MODEL_GLOSSARY.get(m, "")) for m in ids]
    rows += [(term, "", meaning) for term, meaning in METRIC_GLOSSARY.items()]
    return pd.DataFrame(rows, columns=["Term", "Id", "Meaning"])


def column_help(columns: list[str]) -> dict[str, str]:
    """What each human column header means, for the ones the glossary explains (the app shows
    it when the pointer rests on the header)."""
    return {c: METRIC_GLOSSARY[c] for c in columns if c in METRIC_GLOSSARY}


def format_value(value: Any, column: str) -> str:
    """One cell as text: ``-`` for missing, one percentage format, two decimals otherwise."""
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return MISSING
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value)
    if column in PERCENT_METRICS:
        return f"{value:.1%}"
    if isinstance(value, numbers.Integral) or column in COUNT_COLUMNS:
        return f"{int(value):,}"
    return f"{value:.2f}"


def human(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with human headers and model display names (values untouched, so it sorts)."""
    table = df.copy()
    if "model" in table.columns:
        table["model"] = table["model"].map(model_name)
    table.columns = [metric_name(str(c)) for c in table.columns]
    return table


def styled_table(df: pd.DataFrame) -> Any:
    """:func:`human` as a pandas Styler that shows :func:`format_value` text: the app's tables
    sort on the numbers and show the formatted text, ``-`` for missing."""
    table = human(df)
    return table.style.format({c: (lambda v, c=c: format_value(v, c)) for c in table.columns})


RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)),
            *(f"lpt{i}" for i in range(10))}  # fmt: skip
MAX_NAME = 80  # characters: well inside every file system's 255-byte limit, even in UTF-8 CJK


def film_file_names(films: list[str]) -> dict[str, str]:
    """A safe, unique ``.html`` file name per film: letters, digits and CJK kept, anything else
    (separators, dots, control characters) replaced, never empty, hidden or reserved, so a page
    always lands inside ``reports/<run>/``."""
    safe = {}
    for film in films:
        name = unicodedata.normalize("NFKC", str(film))
        name = re.sub(r"[^\w\-]+", "_", name).strip("_-")[:MAX_NAME] or "film"
        if name.split(".")[0].casefold() in RESERVED:
            name = f"{name}_film"
        safe[film] = name
    counts = pd.Series(list(safe.values()), dtype=object).value_counts()
    return {
        f: (f"{name}-{hashlib.sha1(f.encode()).hexdigest()[:6]}" if counts[name] > 1 else name)
        + ".html"
        for f, name in safe.items()
    }
