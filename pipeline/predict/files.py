"""Batch scoring from and to files: CSV, TXT or stdin in; CSV or JSON Lines out.

Inputs are read and checked completely before a model is loaded (a missing file or a CSV without
a review column is a one-line :class:`~pipeline.errors.InputError`, not a minute of loading and
then a traceback). Output has exactly one record per input row, in order.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from tqdm.auto import tqdm

from pipeline.artifacts import atomic_path
from pipeline.errors import InputError, InputNotFoundError
from pipeline.predict.scorer import TEXT_COLUMNS, Scorer
from pipeline.terminal import json_line, printable

log = logging.getLogger(__name__)

FORMATS = ("csv", "jsonl")
# what the first line of a one-column CSV looks like when it names the column (else it is data)
_COLUMN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,39}")
MAX_FIELD_CHARS = 10_000_000  # a huge review is scored (truncated, with a warning), not refused
# UTF-32 before UTF-16: FF FE 00 00 also starts with FF FE
_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"), (b"\xef\xbb\xbf", "utf-8"),
)  # fmt: skip


def _decode(data: bytes, encoding: str) -> str:
    """Decode UTF-8 / GB18030 line by line, as ingest decides per row (a guess from a few lines
    fails whole files), the detected encoding first; a line that is neither keeps its bad bytes
    as lone surrogates, so it is reported as such (``error: invalid UTF-8``). A byte-order mark
    wins over the detected encoding; UTF-16/32 without one is what
    :func:`~pipeline.data.ingest.detect_encoding` found by NUL pattern (UTF-16/32 cannot keep
    bad bytes: they become U+FFFD)."""
    for bom, codec in _BOMS:
        if data.startswith(bom):
            if codec == "utf-8":
                return _decode_lines(data[len(bom) :], ("utf-8", "gb18030"))
            return data[len(bom) :].decode(codec, errors="replace")
    if encoding.startswith(("utf-16", "utf-32")):
        return data.decode(encoding, errors="replace")
    order = ("gb18030", "utf-8") if encoding == "gb18030" else ("utf-8", "gb18030")
    return _decode_lines(data, order)


def _decode_lines(data: bytes, order: tuple[str, str]) -> str:
    """Line ends are the same bytes in both codecs (and never inside a GB18030 character)."""
    return "".join(_decode_line(line, order) for line in data.splitlines(keepends=True))


def _decode_line(line: bytes, order: tuple[str, str]) -> str:
    for codec in order:
        try:
            return line.decode(codec)
        except UnicodeDecodeError:
            continue
    return line.decode("utf-8", errors="surrogateescape")


def _read_bytes(path: str | Path) -> tuple[bytes, str, str, str]:
    """``(data, suffix, encoding, label)`` of a file or ``-`` (stdin, one review per line)."""
    from pipeline.data.encodings import detect_encoding

    if str(path) == "-":
        return sys.stdin.buffer.read(), ".txt", "utf-8", "stdin"
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(
            f"input file {path} does not exist", "check the path; -i - reads stdin"
        )
    if path.is_dir():
        raise InputError(f"input {path} is a directory", "pass one .csv or .txt file")
    try:
        return path.read_bytes(), path.suffix.lower(), detect_encoding(path), str(path)
    except OSError as err:
        raise InputError(f"cannot read input file {path}: {err.strerror or err}") from err


def review_lines(text: str) -> list[str]:
    """One review per line, lines ending at ``\n`` or ``\r\n`` only: form feeds, ``\x1c``,
    NEL or U+2028 inside a review stay in it (``str.splitlines`` would cut there and shift
    every row number after it); a final newline ends the last line without starting another."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def read_texts(path: str | Path) -> list[Any]:
    """Texts from a ``.csv`` (column comment / text / review / content, any case, or the only
    column: its first line is a header only when it looks like a column name), a ``.txt`` (one
    review per line) or ``-`` (stdin, one per line). A CSV row without the column gives None
    (scored as an error record, so rows stay aligned)."""
    data, suffix, encoding, label = _read_bytes(path)
    text = _decode(data, encoding)
    if suffix != ".csv":
        return review_lines(text)
    limit = csv.field_size_limit()
    csv.field_size_limit(MAX_FIELD_CHARS)
    try:
        rows = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error as err:
        raise InputError(f"{label} is not a readable CSV file: {err}", "save it as CSV") from err
    finally:
        csv.field_size_limit(limit)
    if not rows:
        return []
    header, body = rows[0], rows[1:]
    names = [h.strip().lower() for h in header]
    matches = [i for i, name in enumerate(names) if name in TEXT_COLUMNS]
    if len(matches) > 1:
        shown = printable(", ".join(header[i] for i in matches))
        raise InputError(
            f"{label} has several review columns ({shown})", "keep one, or rename the others"
        )
    col = next((names.index(c) for c in TEXT_COLUMNS if c in names), None)
    if col is None:
        if len(header) != 1:
            shown = printable(", ".join(header))[:200]
            raise InputError(
                f"{label} has no review column (its header: {shown})",
                f"name the review column one of {', '.join(TEXT_COLUMNS)}, or pass a .txt file "
                "with one review per line",
            )
        col = 0
        if not _COLUMN_NAME.fullmatch(header[0].strip()):  # a review, not a column name
            log.info("%s: one column without a header: its first line is a review", label)
            body = rows
    return [row[col] if col < len(row) else None for row in body]


def output_format(output: Path | None, as_json: bool) -> str:
    """``jsonl`` or ``csv`` for ``--output`` / ``--json`` (stdout without --json: csv)."""
    suffix = output.suffix.lower().lstrip(".") if output is not None else None
    if output is not None and suffix not in FORMATS:
        raise InputError(f"output {output} must end in .csv or .jsonl", "rename the output file")
    if as_json and suffix == "csv":
        raise InputError("--json writes JSON Lines", f"name the output {output.stem}.jsonl")
    return "jsonl" if as_json else suffix or "csv"


def _csv_row(record: dict[str, Any], safe: bool) -> dict[str, Any]:
    probs = record["probs"] or [None] * 5
    row = {k: record[k] for k in ("row", "text", "pred_star", "expected_star", "regression")}
    row |= {f"prob_{s}": p for s, p in zip(range(1, 6), probs, strict=True)}
    row["model"] = record["model"]
    row["top_words"] = " ".join(f"{w['word']}:{w['weight']:.3f}" for w in record["top_words"])
    row["warnings"] = "; ".join(record["warnings"])
    row["error"] = record["error"] or ""
    if safe:  # a terminal: its escape sequences are not the reviewer's to use
        row["text"], row["top_words"] = printable(row["text"]), printable(row["top_words"])
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
    adapt_prior: bool = False,
) -> dict[str, int]:
    """Stream ``texts`` through the scorer into ``out`` as CSV or JSONL (one record per text);
    returns row counts. Progress goes to stderr, and only when it is a terminal. ``adapt_prior``
    scores the texts as one chunk: the star mix is estimated over all of them."""
    if adapt_prior:
        texts = list(texts)
        chunk_size = max(1, len(texts))
    if fmt not in FORMATS:
        raise InputError(f"output format must be csv or jsonl, got {fmt!r}")
    safe = out.isatty()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS) if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    counts = {"rows": 0, "errors": 0}
    with tqdm(total=total, unit="review", desc="scoring", disable=None, leave=False) as bar:
        for chunk in _chunks(texts, chunk_size):
            for record in scorer.score_records(chunk, adapt_prior=adapt_prior):
                record["row"] = counts["rows"]
                counts["rows"] += 1
                counts["errors"] += record["error"] is not None
                if writer is not None:
                    writer.writerow(_csv_row(record, safe))
                else:
                    out.write(json_line(record) + "\n")
            out.flush()
            bar.update(len(chunk))
    return counts


def score_file(
    scorer: Scorer, input_path: str | Path, output: Path | None, fmt: str | None = None
) -> dict[str, int]:
    """Score a file (or ``-``) into ``output`` (atomically) or stdout."""
    fmt = fmt or output_format(output, as_json=False)
    texts = read_texts(input_path)
    return write_texts(scorer, texts, output, fmt)


def write_texts(
    scorer: Scorer, texts: list[Any], output: Path | None, fmt: str, adapt_prior: bool = False
) -> dict[str, int]:
    """Score ``texts`` into ``output`` (atomically: a half-written file never appears) or
    stdout."""
    if output is None:
        return write_records(
            scorer, texts, sys.stdout, fmt, total=len(texts), adapt_prior=adapt_prior
        )
    with atomic_path(output) as tmp, tmp.open("w", encoding="utf-8", newline="") as f:
        return write_records(scorer, texts, f, fmt, total=len(texts), adapt_prior=adapt_prior)
