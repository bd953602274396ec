"""One writer per run. A stage that writes a run (prepare, features, a new model set) holds the
run's lock, an ``flock`` on ``runs/<run>/.lock``; a second writer stops at once with who holds
it, instead of deleting the first one's unfinished generation and writing over it. The kernel
drops the lock when its process dies, so a killed stage never leaves a run locked. Readers (the
scorer, the service, the app) take no lock: they read whole generations through ``CURRENT``.
The lock is re-entrant within a process (a workflow's stages nest)."""

from __future__ import annotations

import fcntl
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

from pipeline.errors import RunBusyError
from pipeline.terminal import printable

LOCK_FILE = ".lock"
F = TypeVar("F", bound=Callable[..., Any])
_held: dict[Path, int] = {}  # lock path -> nesting depth in this process
_guard = threading.Lock()


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return printable(f"`{info['command']}` (pid {info['pid']}, since {info['since']})")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def current_writer(root: Path) -> str | None:
    """Who holds the write lock of the run in ``root`` now (None: nobody)."""
    path = root / LOCK_FILE
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except BlockingIOError:
        return _holder(fd)
    finally:
        os.close(fd)


@contextmanager
def run_lock(root: Path, stage: str) -> Iterator[None]:
    """Hold the write lock of the run in ``root`` (created if needed) for the block; raises
    :class:`RunBusyError` naming the holder when another process holds it."""
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    path = (root / LOCK_FILE).resolve()
    with _guard:
        nested = path in _held
        if nested:
            _held[path] += 1
    if nested:
        try:
            yield
        finally:
            with _guard:
                _held[path] -= 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise RunBusyError(f"run {root.name} is being written by {holder}") from None
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "python"
    info = {"pid": os.getpid(), "stage": stage, "command": command,
            "since": time.strftime("%Y-%m-%d %H:%M:%S")}  # fmt: skip
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info, ensure_ascii=False).encode("utf-8"), 0)
    with _guard:
        _held[path] = 1
    try:
        yield
    finally:
        with _guard:
            del _held[path]
        if created and os.listdir(root) == [LOCK_FILE]:  # a stage that failed before writing
            path.unlink()  # leaves no empty run behind
            root.rmdir()
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def writes_run(stage: str) -> Callable[[F], F]:
    """Hold the run's lock for the whole of a stage function whose first argument is its
    settings: its clean-up of an earlier writer's leftovers happens under the lock too."""

    def decorate(function: F) -> F:
        @wraps(function)
        def locked(settings: Any, *args: Any, **kwargs: Any) -> Any:
            with run_lock(settings.paths.root, stage):
                return function(settings, *args, **kwargs)

        return locked  # type: ignore[return-value]

    return decorate
