"""Several corpora in one run: each review keeps its ``source`` (the file name, or the CSV's
Source column). ``douban prepare --sample N`` keeps at most N reviews of each source, stratified
by film and star, so a run can learn from several crawls within a CPU budget without one big
crawl drowning the others, and every film keeps its star mix; the summary counts each source."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.artifacts import atomic_path, parquet_file, read_table
from pipeline.data.ingest import IngestStats


def stratified_keep(
    sources: np.ndarray, films: np.ndarray, stars: np.ndarray, per_source: int, seed: int
) -> np.ndarray:
    """Boolean mask keeping at most ``per_source`` rows of each source: each (film, star) cell
    gets its proportional share (largest remainders round, so the total is exact), the rows of a
    cell are a seeded random draw. Sources at or under the cap are kept whole."""
    if per_source < 1:
        raise ValueError(f"the sample size per source must be at least 1, got {per_source}")
    table = pd.DataFrame({"source": sources, "cell": pd.Series(films).astype(str) + "\x1f"
                          + pd.Series(stars).astype(str)})  # fmt: skip
    keep = np.zeros(len(table), dtype=bool)
    rng = np.random.default_rng(seed)
    for _, part in table.groupby("source", sort=True):
        if len(part) <= per_source:
            keep[part.index] = True
            continue
        sizes = part.groupby("cell").size()
        quota = sizes.to_numpy() * per_source / len(part)
        take = np.floor(quota).astype(np.int64)
        short = per_source - take.sum()
        take[np.argsort(-(quota - take), kind="stable")[:short]] += 1
        for (cell, rows), k in zip(part.groupby("cell").groups.items(), take, strict=True):
            assert cell is not None
            keep[rng.choice(np.asarray(rows), size=int(k), replace=False)] = True
    return keep


def sample_ingested(path: Path, stats: IngestStats, per_source: int, seed: int) -> dict[str, Any]:
    """Cut the ingested parquet at ``path`` down to :func:`stratified_keep` in place (streamed
    batch by batch) and make ``stats``' film and star counts those of the sample; returns the
    summary's ``sample`` entry (the cap, reviews kept, reviews dropped per source)."""
    cols = read_table(path, columns=["source", "film", "star"])
    keep = stratified_keep(
        cols["source"].to_numpy(zero_copy_only=False),
        cols["film"].to_numpy(zero_copy_only=False),
        cols["star"].to_numpy(),
        per_source,
        seed,
    )
    sources = cols["source"].to_numpy(zero_copy_only=False)
    dropped = pd.Series(sources[~keep]).value_counts()
    out = {
        "per_source": per_source,
        "reviews": int(keep.sum()),
        "dropped": {str(k): int(v) for k, v in dropped.sort_index().items()},
    }
    if dropped.empty:
        return out
    with (
        parquet_file(path) as source,
        atomic_path(path) as tmp,
        pq.ParquetWriter(tmp, source.schema_arrow) as writer,
    ):
        offset = 0
        for batch in source.iter_batches():
            mask = pa.array(keep[offset : offset + batch.num_rows])
            writer.write_table(pa.Table.from_batches([batch]).filter(mask))
            offset += batch.num_rows
    kept = pd.DataFrame({"film": cols["film"].to_numpy(zero_copy_only=False)[keep],
                         "star": cols["star"].to_numpy()[keep]})  # fmt: skip
    per_film = kept["film"].value_counts()
    stats.films = {f: v | {"reviews": int(per_film[f])} for f, v in stats.films.items()
                   if f in per_film.index}  # fmt: skip
    stats.stars = Counter({int(s): int(n) for s, n in kept["star"].value_counts().items()})
    return out


def source_summary(path: Path) -> dict[str, dict[str, Any]]:
    """Per source of the ingested (or prepared) parquet at ``path``: reviews, films and the
    count of each star, for the summary and the app."""
    cols = read_table(path, columns=["source", "film", "star"]).to_pandas()
    out = {}
    for source, part in cols.groupby("source", sort=True):
        stars = part["star"].value_counts()
        out[str(source)] = {
            "reviews": len(part),
            "films": int(part["film"].nunique()),
            "stars": {str(s): int(stars.get(s, 0)) for s in range(1, 6)},
        }
    return out
