"""What is derived from a run, computed once: in memory while it is open (:meth:`Kept.memo`),
and on disk under ``runs/<run>/analytics/`` for the next one, fingerprinted (film reports,
maps, the run's aspect clauses and star-mix estimates: :meth:`Kept.analytics`; t-SNE
coordinates: :meth:`Kept.array`). The one cache of
derived results; :class:`pipeline.run.Run` holds one as ``run.kept``."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from pipeline.artifacts import (
    atomic_dir,
    is_current,
    read_arrays,
    read_manifest,
    read_parts,
    write_arrays,
    write_manifest,
    write_parts,
)

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Kept:
    """The derived results of the run at ``root``."""

    root: Path
    _memo: dict[Any, Any] = field(default_factory=dict, repr=False)
    _locks: dict[Any, threading.Lock] = field(default_factory=dict, repr=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def memo(self, key: Any, compute: Callable[[], Any]) -> Any:
        """Compute once per opened run: corpus-wide results shared by every film's report (and
        the run's scorers). Thread-safe: a second caller of the same key waits for the first."""
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            if key not in self._memo:
                self._memo[key] = compute()
            return self._memo[key]

    def memoised(self, kind: str) -> list[Any]:
        """The names memoised under ``(kind, name)`` keys so far, sorted."""
        return sorted(k[1] for k in list(self._memo) if isinstance(k, tuple) and k[0] == kind)

    def analytics_dir(self, model: str | None) -> Path:
        """Where the run's analytics derived with one model (its reports, maps) are kept."""
        return self.root / "analytics" / (model or "no-model")

    def analytics(
        self,
        model: str | None,
        where: Path,
        fp: str,
        build: Callable[[], T],
        to_parts: Callable[[T], dict[str, Any]],
        from_parts: Callable[[dict[str, Any]], T],
        /,
        **manifest: Any,
    ) -> T:
        """The one fingerprinted cache of derived artifacts (film reports, maps): ``where``
        under :meth:`analytics_dir`, read while its manifest holds ``fp``, else built and kept
        atomically as parts (:func:`~pipeline.artifacts.write_parts`) with that manifest plus
        ``manifest`` (a damaged one is rebuilt; a read-only run computes without keeping)."""
        folder = self.analytics_dir(model) / where
        if is_current(folder, fp):
            try:
                return from_parts(read_parts(folder))
            except (OSError, KeyError, ValueError, TypeError) as err:  # damaged: rebuild it
                log.warning("rebuilding the cached %s: %s", folder, err)
        value = build()
        try:
            with atomic_dir(folder) as tmp:
                write_parts(tmp, to_parts(value))
                write_manifest(tmp, "analytics", fp, **manifest)
        except OSError as err:  # a read-only run (someone else's folder): computed, not kept
            log.warning("cannot keep %s: %s", folder, err)
        return value

    def analytics_like(self, where: Path, /, **manifest: Any) -> dict[str, Any] | None:
        """The parts of any model's kept ``where`` whose manifest records ``manifest`` (what
        another model's report shares with this one's), or None."""
        for model_dir in sorted(p for p in (self.root / "analytics").glob("*") if p.is_dir()):
            found = read_manifest(model_dir / where) or {}
            if all(found.get(k) == v for k, v in manifest.items()):
                try:
                    return read_parts(model_dir / where)
                except (OSError, KeyError, ValueError, TypeError):  # damaged or vanished
                    continue
        return None

    def array(self, name: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """:meth:`memo` that also keeps the array in ``analytics/arrays/`` for the next process
        (the app's server after the reports stage). ``name`` must say everything the array
        depends on (a digest of its input): it is never recomputed while the file exists."""
        path = self.root / "analytics" / "arrays" / f"{name}.npz"

        def load_or_compute() -> np.ndarray:
            if path.is_file():
                try:
                    return read_arrays(path)["array"]
                except (OSError, ValueError, KeyError):  # torn or foreign: computed again below
                    pass
            array = np.asarray(compute())
            with contextlib.suppress(OSError):  # a read-only run: computed, not kept
                write_arrays(path, array=array)
            return array

        return self.memo(("array", name), load_or_compute)
