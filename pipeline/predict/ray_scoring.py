"""Batch scoring on Ray: ``douban score -i reviews.parquet -o scored.parquet --engine ray``.

Ray Data reads the input (Parquet, JSON Lines, or a UTF-8 / GB18030 CSV) in blocks and streams
them through a pool of scoring actors, each holding the run's
:class:`~pipeline.predict.scorer.Scorer` (its encoder and model loaded once); the driver writes
the records to one file (Parquet, CSV or JSON Lines) as they come back, in input order, so its
memory stays flat however many reviews there are. The records and the file formats are the
local engine's (:func:`pipeline.predict.files.record_writer`): one per input row, bad rows as
error records, never dropped.

On a multi-node cluster the run directory must be readable at the same path on every node.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from pipeline.artifacts import atomic_path
from pipeline.cluster import cause_of, plan_actors, ray_runtime
from pipeline.config import RunPaths
from pipeline.errors import DoubanError, InputError, InputNotFoundError
from pipeline.locate import resolve_run
from pipeline.predict.files import (
    jsonl_text,
    numbered,
    open_output,
    output_format,
    record_writer,
    review_column,
)
from pipeline.predict.scorer import Scorer
from pipeline.terminal import json_line

TEXT = "text"  # the input's review column, renamed
RECORD = "record"  # an actor's answer: each record as one JSON line
_READ_CPUS = 0  # reading is I/O beside the scoring (and see plan_actors' spare_cpus)


class BatchScorer:
    """A Ray actor: one :class:`Scorer` for the whole run, scoring a block of texts per call."""

    def __init__(self, run_dir: str, model: str, device: str, threads: int, lines: bool) -> None:
        if device == "cpu":
            torch.set_num_threads(threads)
        self.scorer = Scorer(RunPaths(Path(run_dir)), model, device)
        self.lines = lines  # JSON Lines read as text: each line parsed as the local reader does

    def __call__(self, batch: pa.Table) -> pa.Table:
        texts = batch.column(TEXT).to_pylist()
        if self.lines:
            texts = [jsonl_text(line) for line in texts]
        records = self.scorer.score_records(texts)
        return pa.table({RECORD: [json_line(r) for r in records]})


def _read_input(ray: Any, path: Path) -> tuple[Any, int | None]:
    """A Ray dataset with the review column as ``text``, and its row count when known."""
    from pipeline.data.encodings import detect_encoding

    if not path.is_file():
        raise InputNotFoundError(f"input file {path} does not exist", "check the path")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        data = ray.data.read_text(str(path), drop_empty_lines=False, num_cpus=_READ_CPUS)
        return data, None
    if suffix == ".parquet":
        column = review_column(pq.read_schema(path).names, str(path))
        rows = pq.ParquetFile(path).metadata.num_rows
        data = ray.data.read_parquet(str(path), num_cpus=_READ_CPUS).select_columns([column])
    elif suffix == ".csv":
        import pyarrow.csv as pacsv

        encoding = detect_encoding(path)
        with path.open(encoding=encoding, errors="replace", newline="") as f:
            header = next(csv.reader(f), [])
        column = review_column(header, str(path))
        data, rows = (
            ray.data.read_csv(
                str(path),
                num_cpus=_READ_CPUS,
                read_options=pacsv.ReadOptions(encoding=encoding),
                parse_options=pacsv.ParseOptions(newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(
                    include_columns=[column], column_types={column: pa.string()}
                ),
            ),
            None,
        )
    else:
        raise InputError(
            f"--engine ray reads .parquet, .jsonl or .csv, not {path.name}",
            "convert the file, or score it with the local engine",
        )
    return data.rename_columns({column: TEXT}) if column != TEXT else data, rows


def score_file_on_ray(
    run: str | Path | RunPaths | None,
    input_path: Path,
    output: Path,
    *,
    model: str | None = None,
    runs_dir: Path | None = None,
    address: str | None = None,
    actors: int | None = None,
    batch_size: int = 256,
    device: str = "auto",
) -> dict[str, int]:
    """Score ``input_path`` into ``output`` (.parquet, .csv or .jsonl, written atomically) on
    a Ray cluster (``address``: see :func:`pipeline.cluster.ray_runtime`); returns row counts."""
    fmt = output_format(output, as_json=False)
    scorer = Scorer(resolve_run(run, runs_dir), model)  # a bad run or model fails here, fast
    counts = {"rows": 0, "errors": 0}
    with ray_runtime(address) as ray:
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        pool = plan_actors(actors, device, spare_cpus=1)
        data, total = _read_input(ray, Path(input_path))
        # a file is read as a few big blocks, and one block goes to one actor: cut them
        # (streaming) into blocks of a few batches, so every actor gets work
        scored = data.repartition(target_num_rows_per_block=4 * batch_size).map_batches(
            BatchScorer,
            batch_size=batch_size,
            batch_format="pyarrow",
            fn_constructor_kwargs={
                "run_dir": str(scorer.paths.root.resolve()),
                "model": scorer.model_name,
                "device": pool.device,
                "threads": pool.threads,
                "lines": Path(input_path).suffix.lower() == ".jsonl",
            },
            udf_modifying_row_count=False,
            **pool.map_batches_args(),
        )
        with (
            atomic_path(output) as tmp,
            open_output(tmp, fmt) as out,
            tqdm(total=total, unit="review", desc="scoring", disable=None) as bar,
        ):
            write, closing = record_writer(out, fmt)
            try:
                for batch in scored.iter_batches(batch_size=None, batch_format="pyarrow"):
                    records = [json.loads(line) for line in batch[RECORD].to_pylist()]
                    write(numbered(records, counts))
                    bar.update(len(records))
                if closing is not None:
                    closing.close()
            except ray.exceptions.RayError as error:
                if isinstance(cause_of(error), DoubanError):
                    raise cause_of(error) from error
                raise InputError(
                    f"scoring {input_path} on Ray failed: {error}".splitlines()[0],
                    "check the input file (a CSV must be valid UTF-8 or GB18030), or use the "
                    "local engine",
                ) from error
    return counts
