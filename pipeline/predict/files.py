"""Batch scoring from and to files: CSV, TXT or stdin in; CSV or JSON Lines out."""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from tqdm.auto import tqdm

from pipeline.artifacts import atomic_path
from pipeline.predict.scorer import TEXT_COLUMNS, Scorer

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------- batch I/O


def _decode(data: bytes, encoding: str) -> str:
    """Decode with bad bytes kept as lone surrogates, so a broken row is reported as such
    (``error: invalid UTF-8``) instead of failing the whole file."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    codec = "gb18030" if encoding == "gb18030" else "utf-8"
    return data.decode(codec, errors="surrogateescape")


def read_texts(path: str | Path) -> Iterator[Any]:
    """Texts from a ``.csv`` (column Comment / comment / text / review / content, or the only
    column), a ``.txt`` (one review per line) or ``-`` (stdin, one per line)."""
    from pipeline.data.ingest import detect_encoding

    if str(path) == "-":
        data, suffix, encoding = sys.stdin.buffer.read(), ".txt", "utf-8"
    else:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"input {path} does not exist")
        data, suffix, encoding = path.read_bytes(), path.suffix.lower(), detect_encoding(path)
    text = _decode(data, encoding)
    if suffix != ".csv":
        yield from text.splitlines()
        return
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        return
    names = [h.strip().lower() for h in header]
    col = next((names.index(c) for c in TEXT_COLUMNS if c in names), None)
    if col is None:
        if len(header) != 1:
            raise ValueError(
                f"{path}: no review column; name one of {TEXT_COLUMNS} (found {header})"
            )
        col = 0
    for row in reader:
        yield row[col] if col < len(row) else None


def _csv_row(record: dict[str, Any]) -> dict[str, Any]:
    probs = record["probs"] or [None] * 5
    row = {k: record[k] for k in ("row", "text", "pred_star", "expected_star", "regression")}
    row |= {f"prob_{s}": p for s, p in zip(range(1, 6), probs, strict=True)}
    row["model"] = record["model"]
    row["top_words"] = " ".join(f"{w['word']}:{w['weight']:.3f}" for w in record["top_words"])
    row["warnings"] = "; ".join(record["warnings"])
    row["error"] = record["error"] or ""
    return row


CSV_FIELDS = (
    "row", "text", "pred_star", "expected_star", "regression",
    *(f"prob_{s}" for s in range(1, 6)), "model", "top_words", "warnings", "error",
)  # fmt: skip


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def write_records(
    scorer: Scorer,
    texts: Iterable[Any],
    out: TextIO,
    fmt: str,
    chunk_size: int = 256,
    total: int | None = None,
) -> dict[str, int]:
    """Stream ``texts`` through the scorer into ``out`` as CSV or JSONL; returns row counts."""
    if fmt not in ("csv", "jsonl"):
        raise ValueError(f"output format must be csv or jsonl, got {fmt!r}")
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS) if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    counts = {"rows": 0, "errors": 0}
    with tqdm(total=total, unit="review", desc="scoring") as bar:
        for chunk in _chunks(texts, chunk_size):
            for record in scorer.score_records(chunk):
                record["row"] = counts["rows"]
                counts["rows"] += 1
                counts["errors"] += record["error"] is not None
                if writer is not None:
                    writer.writerow(_csv_row(record))
                else:
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
            bar.update(len(chunk))
    return counts


def score_file(
    scorer: Scorer, input_path: str | Path, output: Path | None, fmt: str | None = None
) -> dict[str, int]:
    """Score a file (or ``-``) into ``output`` (atomically) or stdout."""
    fmt = fmt or ("jsonl" if output is not None and output.suffix.lower() == ".jsonl" else "csv")
    texts = list(read_texts(input_path))
    if output is None:
        return write_records(scorer, texts, sys.stdout, fmt, total=len(texts))
    with atomic_path(output) as tmp, tmp.open("w", encoding="utf-8", newline="") as f:
        return write_records(scorer, texts, f, fmt, total=len(texts))
