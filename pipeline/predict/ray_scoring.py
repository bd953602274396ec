"""Batch scoring on Ray: ``douban score -i reviews.parquet -o scored.parquet --engine ray``.

Ray Data reads the input (Parquet, or a UTF-8 / GB18030 CSV) in blocks and streams them through
a pool of scoring actors, each holding the run's :class:`~pipeline.predict.scorer.Scorer` (its
encoder and model loaded once); the driver writes the records to one Parquet file as they come
back, in input order, so its memory stays flat however many reviews there are. The records are
the local engine's (:func:`pipeline.predict.files.write_records`) with the same columns as its
CSV output: one per input row, bad rows as error records, never dropped.

On a multi-node cluster the run directory must be readable at the same path on every node.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from pipeline.artifacts import atomic_path
from pipeline.cluster import cause_of, plan_actors, ray_runtime
from pipeline.config import RunPaths
from pipeline.errors import DoubanError, InputError, InputNotFoundError
from pipeline.predict.files import CSV_FIELDS, _csv_row
from pipeline.predict.scorer import TEXT_COLUMNS, Scorer, resolve_run

_TYPES = {"row": pa.int64(), "pred_star": pa.int64()} | {
    name: pa.float64()
    for name in ("expected_star", "regression", *(f"prob_{s}" for s in range(1, 6)))
}
SCHEMA = pa.schema([(name, _TYPES.get(name, pa.string())) for name in CSV_FIELDS])
TEXT = "text"  # the input's review column, renamed
_READ_CPUS = 0  # reading is I/O beside the scoring (and see plan_actors' spare_cpus)


class BatchScorer:
    """A Ray actor: one :class:`Scorer` for the whole run, scoring a block of texts per call."""

    def __init__(self, run_dir: str, model: str, device: str, threads: int) -> None:
        if device == "cpu":
            torch.set_num_threads(threads)
        self.scorer = Scorer(RunPaths(Path(run_dir)), model, device)

    def __call__(self, batch: pa.Table) -> pa.Table:
        records = self.scorer.score_records(batch.column(TEXT).to_pylist())
        return pa.Table.from_pylist([_csv_row(r, safe=False) for r in records], schema=SCHEMA)


def _review_column(names: list[str], label: str) -> str:
    """The input's review column: the first of :data:`TEXT_COLUMNS` (any case), else the only
    column (the local reader's rule)."""
    lowered = [name.strip().lower() for name in names]
    for wanted in TEXT_COLUMNS:
        if wanted in lowered:
            return names[lowered.index(wanted)]
    if len(names) == 1:
        return names[0]
    raise InputError(
        f"{label} has no review column (its columns: {', '.join(names)[:200]})",
        f"name the review column one of {', '.join(TEXT_COLUMNS)}",
    )


def _read_input(ray: Any, path: Path) -> tuple[Any, int | None]:
    """A Ray dataset with the review column as ``text``, and its row count when known."""
    from pipeline.data.encodings import detect_encoding

    if not path.is_file():
        raise InputNotFoundError(f"input file {path} does not exist", "check the path")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        column = _review_column(pq.read_schema(path).names, str(path))
        rows = pq.ParquetFile(path).metadata.num_rows
        data = ray.data.read_parquet(str(path), columns=[column], num_cpus=_READ_CPUS)
    elif suffix == ".csv":
        import pyarrow.csv as pacsv

        encoding = detect_encoding(path)
        with path.open(encoding=encoding, errors="replace", newline="") as f:
            header = next(csv.reader(f), [])
        column = _review_column(header, str(path))
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
            f"--engine ray reads .parquet or .csv, not {path.name}",
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
    """Score ``input_path`` into the Parquet file ``output`` (written atomically) on a Ray
    cluster (``address``: see :func:`pipeline.cluster.ray_runtime`); returns row counts."""
    if output.suffix.lower() != ".parquet":
        raise InputError(f"--engine ray writes Parquet, not {output.name}", "name it .parquet")
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
            },
            udf_modifying_row_count=False,
            **pool.map_batches_args(),
        )
        with (
            atomic_path(output) as tmp,
            pq.ParquetWriter(tmp, SCHEMA) as writer,
            tqdm(total=total, unit="review", desc="scoring", disable=None) as bar,
        ):
            try:
                for batch in scored.iter_batches(batch_size=None, batch_format="pyarrow"):
                    n = batch.num_rows
                    rows = pa.array(range(counts["rows"], counts["rows"] + n), pa.int64())
                    writer.write_table(batch.set_column(0, "row", rows))
                    counts["rows"] += n
                    counts["errors"] += int(pc.sum(pc.not_equal(batch["error"], "")).as_py() or 0)
                    bar.update(n)
            except ray.exceptions.RayError as error:
                if isinstance(cause_of(error), DoubanError):
                    raise cause_of(error) from error
                raise InputError(
                    f"scoring {input_path} on Ray failed: {error}".splitlines()[0],
                    "check the input file (a CSV must be valid UTF-8 or GB18030), or use the "
                    "local engine",
                ) from error
    return counts
