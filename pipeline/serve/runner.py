"""Run the scoring service under uvicorn: ``douban serve``.

Each worker process loads the run's models once; the cores are shared out between workers
(torch threads = cores // workers). On SIGTERM or Ctrl+C uvicorn stops accepting connections,
waits up to :data:`DRAIN_SECONDS` for in-flight requests to be answered, then the app finishes
whatever is still queued before the process exits.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI

from pipeline.locate import resolve_run

DRAIN_SECONDS = 30
_ENV_RUN = "DOUBAN_SERVE_RUN_DIR"
_ENV_THREADS = "DOUBAN_SERVE_THREADS"


def app_from_env() -> FastAPI:
    """The app factory uvicorn calls in each worker (settings come through the environment,
    the one channel that reaches worker processes)."""
    from pipeline.serve.app import create_app

    return create_app(Path(os.environ[_ENV_RUN]), threads=int(os.environ[_ENV_THREADS]))


def serve(
    run: str | Path | None = None,
    runs_dir: Path | str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    threads: int | None = None,
) -> None:
    """Serve ``run`` (name, directory or None: the newest trained run) until interrupted."""
    import uvicorn

    paths = resolve_run(run, Path(runs_dir) if runs_dir else None)  # fail here, not per worker
    os.environ[_ENV_RUN] = str(paths.root.resolve())
    os.environ[_ENV_THREADS] = str(threads or max(1, (os.cpu_count() or 1) // workers))
    uvicorn.run(
        "pipeline.serve.runner:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        timeout_graceful_shutdown=DRAIN_SECONDS,
        log_level="info",
    )
