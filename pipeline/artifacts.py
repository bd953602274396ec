"""Atomic writes, fingerprints, stage manifests, generations, and the readers of a run's files.

Every stage writes into a temporary sibling and renames it into place, so an interrupted stage
never leaves a half-written artifact that a later stage could read. Each stage directory carries a
``manifest.json`` with the fingerprint of what produced it; a stage whose fingerprint matches is
skipped, one whose fingerprint differs recomputes (the one caching rule). Artifacts that must change
together (a run's models, metrics and predictions) are written as a new *generation* directory and
switched to with one ``os.replace`` of a pointer file, so a kill leaves the old set or the new one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import CorruptArtifactError

if TYPE_CHECKING:  # imported where used: every stage imports this module, few read parquet
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

MANIFEST = "manifest.json"
MODEL_WEIGHTS = "model.safetensors"  # a saved model: its weights (never pickle) ...
MODEL_CONFIG = "config.json"  # ... and its manifest (kind, encoder, settings, fingerprint)
POINTER = "CURRENT"  # names the current generation of a generations directory
GENERATION_PREFIX = "gen-"
WEIGHTS_SHA256 = "weights_sha256"  # config.json key: the checksum of model.safetensors
CHECK_HINT = "`douban doctor --run RUN` checks the whole run and says which stage to re-run"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def to_json(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True, default=_json_default)


def fingerprint(*parts: Any) -> str:
    """A stable hash of JSON-serialisable parts (settings, input fingerprints, versions)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=_json_default)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def file_fingerprint(path: Path) -> dict[str, Any]:
    """Cheap identity of an input file: path, size and mtime (hashing 390 MB each run is not)."""
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@cache
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(Path(path))


def file_sha256(path: Path) -> str:
    """sha256 of a file, computed once per process per (path, size, mtime)."""
    st = path.stat()
    return _sha256_of(str(path.resolve()), st.st_size, st.st_mtime_ns)


def verify_checksum(path: Path, expected: str | None, hint: str) -> None:
    """Refuse a weights file whose bytes changed since it was written (a bad copy, a flipped
    bit): its answers would change silently. ``expected`` None (older files): nothing to check."""
    if expected is not None and file_sha256(path) != expected:
        raise CorruptArtifactError(
            f"{path} does not match the checksum recorded when it was written ({WEIGHTS_SHA256} "
            "in its config.json): the file changed on disk",
            hint,
        )


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; it replaces ``path`` only on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        tmp_path.chmod(0o666 & ~_UMASK)  # mkstemp makes 0600; artifacts are meant to be shared
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; it replaces ``path`` only on success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        tmp.chmod(0o777 & ~_UMASK)  # mkdtemp makes 0700
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, obj: Any) -> None:
    write_text(path, to_json(obj))


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object written by a stage; a file that is not one is a
    :class:`CorruptArtifactError` naming it (a ValueError, as before)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CorruptArtifactError(f"{path} is not valid JSON ({err})", CHECK_HINT) from err
    if not isinstance(doc, dict):
        raise CorruptArtifactError(
            f"{path} holds a JSON {type(doc).__name__}, not the object its stage writes",
            CHECK_HINT,
        )
    return doc


def write_manifest(stage_dir: Path, stage: str, fp: str, **extra: Any) -> None:
    write_json(
        stage_dir / MANIFEST,
        {"stage": stage, "fingerprint": fp, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra},
    )


def read_manifest(stage_dir: Path) -> dict[str, Any] | None:
    path = stage_dir / MANIFEST
    if not path.exists():
        return None
    try:
        return read_json(path)
    except (OSError, ValueError):  # unreadable: the stage is incomplete, and runs again
        return None


def is_current(stage_dir: Path, fp: str) -> bool:
    """True when the stage's artifacts exist and were produced from the same fingerprint."""
    manifest = read_manifest(stage_dir)
    return manifest is not None and manifest.get("fingerprint") == fp


def clean_leftovers(directory: Path, only: str | None = None) -> list[Path]:
    """Remove the temporaries that killed writers left in ``directory`` (``.<name>.*.tmp`` of
    :func:`atomic_path` / :func:`atomic_dir`, ``.<name>.old-*`` of a replaced directory); with
    ``only``, just those of the artifact of that name. Returns what was removed. Call it when a
    stage starts, before it writes there."""
    if not directory.is_dir():
        return []
    removed = []
    for child in directory.iterdir():
        name = child.name
        if only is not None and not name.startswith(f".{only}."):
            continue
        if name.startswith(".") and (name.endswith(".tmp") or ".old-" in name):
            _remove(child)
            removed.append(child)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def current_generation(parent: Path) -> Path | None:
    """The generation the pointer file of ``parent`` names, or None before the first one."""
    try:
        name = (parent / POINTER).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    if not name.startswith(GENERATION_PREFIX) or "/" in name or not (parent / name).is_dir():
        sets = sorted(p.name for p in parent.glob(f"{GENERATION_PREFIX}*") if p.is_dir())
        raise CorruptArtifactError(
            f"{parent / POINTER} names no model set ({name[:40]!r}; there are: "
            f"{', '.join(sets) or 'none'})",
            f"write the newest of them into it, or retrain: `douban train --run "
            f"{parent.parent.name} --force`",
        )
    return parent / name


def clean_generations(parent: Path) -> Path | None:
    """Remove the leftovers of killed writers under ``parent`` and the generations before the
    previous one; keep the pointer, the generation it names (returned) and the one before it,
    which a reader that resolved the pointer a moment ago may still be reading."""
    current = current_generation(parent)
    keep = {POINTER}
    if current is not None:
        number = int(current.name.removeprefix(GENERATION_PREFIX))
        keep |= {current.name, f"{GENERATION_PREFIX}{number - 1}"}
    if parent.is_dir():
        for child in parent.iterdir():
            if child.name not in keep:
                _remove(child)
    return current


@contextmanager
def new_generation(parent: Path, base: Path | None, entries: tuple[str, ...]) -> Iterator[Path]:
    """Yield a new generation directory under ``parent`` that starts as a copy of ``entries`` of
    ``base`` (hard links: artifacts are replaced, never edited in place); when the block succeeds
    the pointer file switches to it in one ``os.replace``, so a reader only ever sees a complete
    set. Leftovers are removed first (:func:`clean_generations`)."""
    parent.mkdir(parents=True, exist_ok=True)
    current = clean_generations(parent)
    number = 0 if current is None else int(current.name.removeprefix(GENERATION_PREFIX))
    new = parent / f"{GENERATION_PREFIX}{number + 1}"
    new.mkdir()
    try:
        for entry in entries:
            source = base / entry if base is not None else None
            if source is None or not source.exists():
                continue
            if source.is_dir():
                shutil.copytree(source, new / entry, copy_function=os.link)
            else:
                os.link(source, new / entry)
        yield new
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    write_text(parent / POINTER, new.name)


# ------------------------------------------------------------------ opening a run's files
# The one place a run's files are opened: tests/unit/test_readers.py holds every other module
# to these (and the app, reports, service and CLI to pipeline.run.Run). Errors pass through as
# the libraries raise them: each caller says what a damaged file means for it.


def read_frame(path: Path, columns: list[str] | None = None, **options: Any) -> pd.DataFrame:
    import pandas as pd

    return pd.read_parquet(path, columns=columns, **options)


def read_table(path: Path, columns: list[str] | None = None, **options: Any) -> pa.Table:
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=columns, **options)


def parquet_file(path: Path) -> pq.ParquetFile:
    """A parquet artifact opened for streaming its row groups or reading its metadata."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(path)


def read_array(path: Path, mmap: bool = False) -> np.ndarray:
    import numpy as np

    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` artifact, read whole."""
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def write_arrays(path: Path, fp: str | None = None, **arrays: np.ndarray) -> None:
    """Arrays as one ``.npz`` artifact, with the fingerprint ``fp`` of what produced them
    (:func:`cached_arrays` reads them back only for that fingerprint)."""
    import numpy as np

    if fp is not None:
        arrays["fingerprint"] = np.array(fp)
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.savez(f, **arrays)


def read_tensors(path: Path, torch: bool = False) -> dict[str, Any]:
    """The tensors of a safetensors file (numpy arrays, or torch tensors with ``torch``)."""
    if torch:
        from safetensors.torch import load_file
    else:
        from safetensors.numpy import load_file
    return load_file(str(path))


def cached_json(path: Path, fp: str) -> dict[str, Any] | None:
    """The JSON artifact at ``path`` if it was produced from fingerprint ``fp``."""
    if not path.exists():
        return None
    doc = read_json(path)
    return doc if doc.get("fingerprint") == fp else None


def cached_arrays(path: Path, fp: str) -> dict[str, np.ndarray] | None:
    """The arrays :func:`write_arrays` kept at ``path`` with ``fingerprint=fp``, else None."""
    if not path.exists():
        return None
    arrays = read_arrays(path)
    if str(arrays.pop("fingerprint", "")) != fp:
        return None
    return arrays


_PART = re.compile(r"p[0-9]+(-[0-9]+)*\.(parquet|bin)")  # the names write_parts gives files


def write_parts(folder: Path, parts: dict[str, Any]) -> None:
    """A document of DataFrames, bytes and JSON values into ``folder``: ``parts.json`` with one
    parquet or binary file per frame or blob (named by position, never by a user's words)."""
    import pandas as pd

    def encode(value: Any, name: str) -> Any:
        if isinstance(value, pd.DataFrame):
            value.to_parquet(folder / f"{name}.parquet")
            return {"$frame": f"{name}.parquet"}
        if isinstance(value, bytes):
            (folder / f"{name}.bin").write_bytes(value)
            return {"$bytes": f"{name}.bin"}
        if isinstance(value, dict):
            return {str(k): encode(v, f"{name}-{i}") for i, (k, v) in enumerate(value.items())}
        if isinstance(value, list | tuple):
            return [encode(v, f"{name}-{i}") for i, v in enumerate(value)]
        return value

    write_json(
        folder / "parts.json", {k: encode(v, f"p{i}") for i, (k, v) in enumerate(parts.items())}
    )


def read_parts(folder: Path) -> dict[str, Any]:
    """The document :func:`write_parts` wrote (dict keys come back as strings)."""

    def decode(value: Any) -> Any:
        if isinstance(value, dict):
            kind, name = next(iter(value.items())) if len(value) == 1 else (None, None)
            if kind in ("$frame", "$bytes") and isinstance(name, str) and _PART.fullmatch(name):
                path = folder / name
                return read_frame(path) if kind == "$frame" else path.read_bytes()
            return {k: decode(v) for k, v in value.items()}
        if isinstance(value, list):
            return [decode(v) for v in value]
        return value

    return decode(read_json(folder / "parts.json"))
