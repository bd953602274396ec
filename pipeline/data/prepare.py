"""The prepare stage: CSV(s) -> ``runs/<name>/prepared/`` (reviews, rejects, summary, manifest).

Two passes keep memory bounded on the 2.1M-row DMSC: ingest streams the CSVs into a temporary
parquet (clean, validate, deduplicate); then the text column alone decides the splits, and a
second streaming pass segments each chunk (a process pool over the cores) and writes the final
``reviews.parquet``. Segmentation waits for the second pass because every film title has to be in
jieba's dictionary before the first review is cut.

Everything is written into a temporary directory that replaces ``prepared/`` only on success;
its manifest fingerprints the inputs (size + mtime), the settings that change the output and
:data:`CODE_VERSION`, so an identical re-run is a no-op. The manifest also lists the files prepare
wrote: a ``prepared/`` holding anything else is never replaced (a stage never deletes what it did
not create), and the temporaries of a killed prepare are removed when the next one starts.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table
from rich.text import Text
from tqdm import tqdm

from pipeline.artifacts import (
    MANIFEST,
    atomic_dir,
    clean_leftovers,
    file_fingerprint,
    fingerprint,
    is_current,
    parquet_file,
    read_json,
    read_manifest,
    read_table,
    write_json,
    write_manifest,
)
from pipeline.config import Settings
from pipeline.data.ingest import (
    INGEST_SCHEMA,
    REJECT_MEANINGS,
    IngestStats,
    ingest,
    is_demo_input,
    resolve_inputs,
)
from pipeline.data.names import discover_names, sample_step
from pipeline.data.sources import sample_ingested, source_summary
from pipeline.data.splits import SPLITS, assign_splits, resolve_holdout, split_counts
from pipeline.data.text import (
    USER_DICT,
    Segmenter,
    film_words,
    load_stopwords,
    require_user_dict,
    segment_chunks,
)
from pipeline.errors import DatasetError, InputError
from pipeline.locking import run_lock
from pipeline.terminal import printable

log = logging.getLogger(__name__)

CODE_VERSION = "prepare-3"  # bump when a change alters prepared output for the same input
_INGESTED = ".ingested.parquet"
POOL_MIN_REVIEWS = 20_000  # below this a process pool's start-up costs more than it saves

# the ingested row (INGEST_SCHEMA) numbered, segmented and split; the hash that grouped equal
# texts for the splits is dropped
_ORIGIN = ("source", "row_number")
REVIEWS_SCHEMA = pa.schema(
    [
        pa.field("review_id", pa.int64()),
        *(f for f in INGEST_SCHEMA if f.name not in (*_ORIGIN, "text_key")),
        pa.field("tokens", pa.list_(pa.string())),
        pa.field("split", pa.string()),
        *(INGEST_SCHEMA.field(name) for name in _ORIGIN),
    ]
)


def prepare_fingerprint(settings: Settings, files: list[Path]) -> str:
    """What the prepared output depends on: not the worker count or chunk size (the output is the
    same whatever they are). The stopwords only through name discovery (tokens keep them), which
    is recorded only when off, so runs prepared before it existed stay current."""
    p = settings.prepare
    return fingerprint(
        CODE_VERSION,
        [file_fingerprint(f) for f in files],
        {
            "encoding": p.encoding,
            "val_frac": p.val_frac,
            "test_frac": p.test_frac,
            "holdout_films": sorted(p.holdout_films),
            # only when set, so runs prepared before sampling existed stay current
            **({"sample": p.sample} if p.sample else {}),
            "user_dict": file_fingerprint(p.user_dict) if p.user_dict else None,
            **({"discover_names": False} if not p.discover_names else {}),
            **({"extra_stopwords": file_fingerprint(p.extra_stopwords)}
               if p.discover_names and p.extra_stopwords else {}),  # fmt: skip
        },
        settings.seed,
    )


def prepare_run(
    settings: Settings, inputs: list[Path], force: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Prepare ``inputs`` into ``settings.paths.prepared``; returns the summary."""
    paths = settings.paths
    console = Console(stderr=True, quiet=not progress)  # a summary, not data: stderr
    files = resolve_inputs(inputs)
    require_user_dict(settings.prepare.user_dict)
    fp = prepare_fingerprint(settings, files)
    outputs = (paths.reviews, paths.rejects, paths.summary)
    if not force and is_current(paths.prepared, fp) and all(p.exists() for p in outputs):
        log.info("prepared data is up to date: %s (use --force to redo)", paths.prepared)
        write_json(paths.settings, settings)
        return read_json(paths.summary)

    with run_lock(paths.root, "prepare"):  # one writer per run
        _check_same_inputs(paths.prepared, files, force)
        for leftover in clean_leftovers(paths.root, only=paths.prepared.name):
            log.info("removed %s, left by an interrupted prepare", leftover)
        names = [p.name for p in outputs]
        _check_replaceable(paths.prepared, names)
        start = time.perf_counter()
        with atomic_dir(paths.prepared) as tmp:
            ingested = tmp / _INGESTED
            stats = ingest(
                files,
                ingested,
                tmp / paths.rejects.name,
                encoding=settings.prepare.encoding,
                chunk_rows=settings.prepare.chunk_rows,
                progress=progress,
            )
            if stats.kept == 0:
                read = "no rows after the header"
                if stats.rows_read:
                    read = f"{stats.rows_read} rows read"
                raise DatasetError(
                    f"no usable reviews in {', '.join(map(str, files))}: {read}, "
                    f"rejected {stats.rejected or 'none'}; check the file is a DMSC-format CSV "
                    f"(the reasons per row are in the rejects)"
                )
            sample = None
            if settings.prepare.sample:
                sample = sample_ingested(ingested, stats, settings.prepare.sample, settings.seed)
            try:
                holdout = resolve_holdout(
                    settings.prepare.holdout_films,
                    {film: (v["en"], v["cn"]) for film, v in stats.films.items()},
                )
            except ValueError as err:
                raise DatasetError(
                    f"{err} (settings.prepare.holdout_films / --holdout-films)"
                ) from err
            codes, split_summary = _splits(ingested, settings, holdout)
            # film titles and names for jieba: the summary's film keys and run_words, which is
            # what later stages pass to pipeline.text.Segmenter to segment new text the same way
            run_words = _run_names(ingested, stats.films, settings)
            words = tuple(sorted({*film_words(stats.films), *run_words}))
            _write_reviews(ingested, tmp / paths.reviews.name, codes, words, settings, progress)
            ingested.unlink()
            summary = _summary(stats, files, split_summary, holdout, words)
            summary["run_words"] = run_words
            summary["sample"] = sample
            summary["sources"] = source_summary(tmp / paths.reviews.name)
            summary["seconds"] = round(time.perf_counter() - start, 1)
            write_json(tmp / paths.summary.name, summary)
            written = list(names)
            if settings.prepare.user_dict:  # new text is segmented with this copy, not the original
                shutil.copyfile(settings.prepare.user_dict, tmp / USER_DICT)
                written.append(USER_DICT)
            write_manifest(
                tmp,
                "prepare",
                fp,
                code_version=CODE_VERSION,
                inputs=[file_fingerprint(f) for f in files],
                settings=settings.prepare,
                seed=settings.seed,
                files=sorted([*written, MANIFEST]),
            )
            # again: files may have appeared while this ran
            _check_replaceable(paths.prepared, names)
        write_json(paths.settings, settings)
    console.print(summary_table(summary))
    console.print(Text(printable(f"prepared {summary['kept']:,} reviews into {paths.prepared}")))
    return summary


def _run_names(ingested: Path, films: Iterable[str], settings: Settings) -> list[str]:
    """Names the reviews use that jieba would split (pipeline/data/names.py), logged so the user
    sees what the run's segmenter learnt."""
    if not settings.prepare.discover_names:
        return []
    columns = read_table(ingested, columns=["text", "film"])
    every = sample_step(columns.num_rows)  # only the sample becomes Python strings
    columns = columns.take(np.arange(0, columns.num_rows, every))
    segmenter = Segmenter(films, settings.prepare.user_dict)
    names = discover_names(
        columns["text"].to_pylist(),
        columns["film"].to_pylist(),
        segmenter.tokens,
        load_stopwords(settings.prepare.extra_stopwords),
        every=every,
    )
    if names:
        shown = "、".join(printable(n) for n in names[:12])
        log.info("jieba learns %d names from the reviews: %s%s", len(names), shown,
                 " …" if len(names) > 12 else "")  # fmt: skip
    return names


def _check_same_inputs(prepared: Path, files: list[Path], force: bool) -> None:
    """Refuse to replace a run prepared from other input files unless ``force``: a forgotten
    ``--run`` must not silently turn one run (the demo, say) into another."""
    manifest = read_manifest(prepared)
    if force or manifest is None:
        return
    before = sorted(str(Path(f["path"])) for f in manifest.get("inputs", []))
    now = sorted(str(f.resolve()) for f in files)
    if before and before != now:
        kept = (read_json(prepared / "summary.json") if (prepared / "summary.json").exists()
                else {}).get("kept")  # fmt: skip
        held = f"{kept:,} reviews of " if kept else ""
        shown = ", ".join(printable(Path(b).name) for b in before[:3])
        run = prepared.parent.name
        raise InputError(
            f"run {run} holds {held}{shown}; preparing {printable(files[0].name)} into it "
            "would replace them",
            f"name a new run with --run NAME, or pass --force to replace run {run}",
        )


def _check_replaceable(prepared: Path, names: list[str]) -> None:
    """Refuse to replace a ``prepared/`` that holds files prepare did not write (its manifest
    lists them; ``names`` for manifests from before the list): replacing would delete them."""
    if not prepared.exists():
        return
    manifest = read_manifest(prepared) or {}
    ours = set(manifest.get("files", names)) | {MANIFEST}
    if manifest.get("stage") != "prepare":
        ours = set()
    foreign = sorted(p.name for p in prepared.iterdir() if p.name not in ours)
    if foreign:
        more = f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        raise InputError(
            f"{prepared} holds files prepare did not write ({', '.join(foreign[:5])}{more}); "
            "replacing the folder would delete them",
            hint="move them elsewhere, or prepare into another run with --run NAME",
        )


def _splits(
    ingested: Path, settings: Settings, holdout: list[str]
) -> tuple[np.ndarray, dict[str, Any]]:
    columns = read_table(ingested, columns=["text_key", "star", "film"])
    stars = columns["star"].to_numpy()
    codes = assign_splits(
        columns["text_key"].to_numpy(),
        stars,
        columns["film"],
        val_frac=settings.prepare.val_frac,
        test_frac=settings.prepare.test_frac,
        seed=settings.seed,
        holdout=holdout,
    )
    return codes, split_counts(codes, stars, columns["film"], holdout)


def _write_reviews(
    ingested: Path,
    out: Path,
    codes: np.ndarray,
    words: tuple[str, ...],
    settings: Settings,
    progress: bool,
) -> None:
    """Segment the ingested reviews chunk by chunk and write the final file."""
    chunk_rows = settings.prepare.chunk_rows
    with parquet_file(ingested) as source:
        pending: deque[pa.RecordBatch] = deque()

        def texts() -> Iterator[list[str]]:
            for batch in source.iter_batches(batch_size=chunk_rows):
                pending.append(batch)  # kept until its tokens come back
                yield batch.column("text").to_pylist()

        small = source.metadata.num_rows < POOL_MIN_REVIEWS
        workers = 1 if small else max(1, settings.prepare.workers)
        tokens_per_chunk = segment_chunks(texts(), words, settings.prepare.user_dict, workers)
        bar = tqdm(
            total=source.metadata.num_rows, unit="review", desc="segmenting", disable=not progress
        )
        offset = 0
        with pq.ParquetWriter(out, REVIEWS_SCHEMA) as writer:
            for tokens in tokens_per_chunk:
                table = pa.Table.from_batches([pending.popleft()])
                n = table.num_rows
                table = table.append_column("review_id", pa.array(np.arange(offset, offset + n)))
                table = table.append_column("tokens", pa.array(tokens, pa.list_(pa.string())))
                split = np.asarray(SPLITS, dtype=object)[codes[offset : offset + n]]
                table = table.append_column("split", pa.array(split, pa.string()))
                writer.write_table(table.select(REVIEWS_SCHEMA.names).cast(REVIEWS_SCHEMA))
                offset += n
                bar.update(n)
        bar.close()


def _summary(
    stats: IngestStats,
    files: list[Path],
    splits: dict[str, Any],
    holdout: list[str],
    words: tuple[str, ...],
) -> dict[str, Any]:
    return {
        "rows_read": stats.rows_read,
        "kept": stats.kept,
        "duplicates": stats.duplicates,
        "rejected": stats.rejected,
        "blank_lines": stats.blank_lines,
        "lines_read": stats.lines_read,
        "lines": stats.lines,
        "films": dict(sorted(stats.films.items())),
        "stars": {str(s): stats.stars[s] for s in range(1, 6)},
        "splits": splits,
        "holdout_films": holdout,
        "files": [
            {
                "name": Path(f.path).name,
                "path": f.path,
                "encoding": f.encoding_used,
                "row_encodings": dict(f.row_encodings),
                "delimiter": f.delimiter,
                "rows_read": f.rows_read,
                "kept": f.kept,
                "duplicates": f.duplicates,
                "rejected": dict(f.rejected),
                "lines_read": f.lines_read,
                "lines": dict(f.lines),
            }
            for f in stats.files
        ],
        "encodings": {Path(f.path).name: f.encoding_used for f in stats.files},
        "is_demo": any(is_demo_input(f) for f in files),
        "jieba_words": list(words),
    }


def summary_table(summary: dict[str, Any]) -> Table:
    """The summary as a rich table (counts, rejects by reason, splits, stars); names from the
    data are plain text, never markup."""
    table = Table(title="prepared reviews" + (" (demo corpus)" if summary["is_demo"] else ""))
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("lines read", f"{summary['lines_read']:,}")
    table.add_row("rows read", f"{summary['rows_read']:,}")
    table.add_row("kept", f"{summary['kept']:,}")
    table.add_row("duplicates dropped", f"{summary['duplicates']:,}")
    for reason, n in summary["rejected"].items():
        table.add_row(f"rejected: {REJECT_MEANINGS.get(reason, reason)}", f"{n:,}")
    if summary["blank_lines"]:
        table.add_row("blank lines skipped", f"{summary['blank_lines']:,}")
    table.add_row("films", f"{len(summary['films'])}")
    table.add_row("names jieba learnt", f"{len(summary.get('run_words', []))}")
    for name in SPLITS:
        table.add_row(f"split: {name}", f"{summary['splits'][name]:,}")
    if summary["holdout_films"]:
        table.add_row("held-out films", Text(printable(", ".join(summary["holdout_films"]))))
    for star, n in summary["stars"].items():
        table.add_row(f"star {star}", f"{n:,}")
    for name, enc in summary["encodings"].items():
        table.add_row(Text(printable(f"encoding of {name}")), enc)
    return table
