"""The scoring service: FastAPI routes over one run's models, with OpenAPI docs at ``/docs``.

``POST /v1/score`` answers one record per text, in order (the records of
:meth:`pipeline.predict.scorer.Scorer.score`; ``explain`` adds every word's attention).
``GET /v1/models`` lists the run's models and the default; ``/healthz`` answers while the
process lives, ``/readyz`` once the default model is loaded and warmed up.

Every failure is a JSON answer ``{"error", "message", "hint"?, "detail"?}`` with a 4xx status:
malformed or oversized requests 413/422, a body that is not UTF-8 JSON 400, an unknown model
404, a :class:`~pipeline.errors.DoubanError` by its kind (:data:`ERROR_STATUS`), a full queue or
a service still loading 503 with ``Retry-After``. Bad text inside a valid request (empty, only
markup) is a per-record ``error``, as in batch scoring.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException

from pipeline.config import RunPaths
from pipeline.errors import (
    DoubanError,
    FilmNotFoundError,
    InputError,
    ModelNotFoundError,
    RunNotFoundError,
    StageMissingError,
)
from pipeline.locate import resolve_run
from pipeline.predict.scorer import Scorer
from pipeline.run import Run
from pipeline.serve.batcher import MicroBatcher, Overloaded
from pipeline.serve.schemas import (
    MAX_BODY_BYTES,
    ErrorResponse,
    ModelInfo,
    ModelsResponse,
    ScoreRequest,
    ScoreResponse,
)

log = logging.getLogger(__name__)

SCORE_BATCH = 256  # texts per scorer call inside one micro-batch
WARM_UP_TEXT = "这部电影的剧情很好看"
ERROR_STATUS: tuple[tuple[type[DoubanError], int], ...] = (
    (ModelNotFoundError, 404),
    (FilmNotFoundError, 404),
    (RunNotFoundError, 404),
    (InputError, 422),
    (StageMissingError, 409),
    (DoubanError, 409),
)


class ScoringService:
    """A run's scorers, loaded on the inference thread when first asked for, behind the
    micro-batcher. They come from one model set (generation), and the service follows the
    run's ``CURRENT``: after a retrain the next batch is scored by the new set (batches already
    running finish on the old one, which a retrain keeps), so cleanup never pulls a set from
    under it."""

    def __init__(self, paths: RunPaths, threads: int | None = None, **batcher: Any) -> None:
        self.run = Run(paths)  # one pinned model set; its scorers are the Run's own
        self.threads = threads
        self.default: str | None = None
        self.load_error: DoubanError | None = None
        self.batcher = MicroBatcher(self._run_batch, **batcher)

    @property
    def paths(self) -> RunPaths:
        return self.run.paths

    @property
    def available(self) -> list[str]:
        return self.run.saved_models

    @property
    def loaded(self) -> list[str]:
        return self.run.loaded_scorers()

    def _follow_current(self) -> None:
        """Switch to the run's current model set when a retrain replaced it."""
        current = replace(self.paths, generation=None).pinned()
        if current.generation == self.paths.generation:
            return
        log.info("run %s has a new model set (%s): serving it", current.name, current.generation)
        self.run = Run(current)
        self.default = self._scorer(None).model_name

    def _scorer(self, model: str | None) -> Scorer:
        return self.run.scorer(model or self.default)

    def _load_default(self) -> None:
        """Load the default model and score once (builds jieba, touches the encoder's weights),
        so the first request is as fast as the rest; torch's threads are set only where a model
        loaded torch (ONNX Runtime and numpy heads need none of its memory)."""
        scorer = self._scorer(None)
        self.default = scorer.model_name
        scorer.score([WARM_UP_TEXT], explain=False)
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(self.threads or max(1, os.cpu_count() or 1))

    async def start(self) -> None:
        self.batcher.start()
        try:
            await self.batcher.call(self._load_default)
        except Exception as error:  # kept for /readyz and every request to report
            log.error("cannot load the default model: %s", error)
            self.load_error = (
                error
                if isinstance(error, DoubanError)
                else DoubanError(f"cannot load the default model ({type(error).__name__}: {error})")
            )

    def _run_batch(self, key: Hashable, texts: list[str]) -> list[dict[str, Any]]:
        model, explain = key  # type: ignore[misc]
        self._follow_current()
        scorer = self._scorer(model)
        records = scorer.score(texts, batch_size=SCORE_BATCH, explain=explain)
        return [r.explanation().to_dict() if explain else r.to_dict() for r in records]

    def check_model(self, model: str | None) -> None:
        if model is not None and model not in self.available:
            raise ModelNotFoundError(
                f"run {self.paths.name} has no model {model!r}; it has: "
                f"{', '.join(self.available)}",
                hint="GET /v1/models lists them",
            )

    def aspects(self, model: str, texts: list[str]) -> list[list[dict[str, Any]]]:
        """Each text's aspect-bearing clauses, scored by ``model`` (:meth:`Scorer.aspects`)
        with the run's words per aspect, as the CLI, the app and the reports use them."""
        from pipeline.reports.corpus import run_terms

        return self._scorer(model).aspects(texts, run_terms(self.run))

    def adapt(
        self, records: list[dict[str, Any]], adapt_prior: str | list[float], model: str
    ) -> tuple[list[float], bool]:
        """Adapt the records to ``adapt_prior`` the way every surface does
        (:meth:`Scorer.adapt_records`): the mix, and whether each review was re-weighted."""
        return self._scorer(model).adapt_records(records, adapt_prior, say=False)


def _error(status: int, error: str, message: str, **extra: Any) -> JSONResponse:
    body = {"error": error, "message": message, **{k: v for k, v in extra.items() if v}}
    headers = {"Retry-After": str(extra["retry_after"])} if "retry_after" in extra else None
    body.pop("retry_after", None)
    return JSONResponse(body, status_code=status, headers=headers)


_BODY_ERRORS = (  # why FastAPI could not parse a body, for its generic 400
    (UnicodeDecodeError, "the request body is not valid UTF-8"),
    (RecursionError, "the request body's JSON nests too deeply"),
)
_MESSAGES = {  # pydantic's wording where a user would not recognise the problem
    "string_unicode": "not valid UTF-8 text (a lone surrogate escape such as \\udc80)",
    "json_invalid": "the request body is not valid JSON",
}


def _printable(value: Any) -> Any:
    """Request fragments echoed in an error, safe to encode (no lone surrogates)."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _validation_detail(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {
            "loc": [_printable(x) for x in e.get("loc", ())],
            "msg": _MESSAGES.get(e.get("type", ""), _printable(e.get("msg", ""))),
            "type": e.get("type", ""),
        }
        for e in exc.errors()
    ]


DOCS_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'"
)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = _validation_detail(exc)
        first = detail[0] if detail else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(x) for x in first["loc"] if x != "body")
        message = f"{where}: {first['msg']}" if where else first["msg"]
        return _error(422, "invalid_request", message, detail=detail)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        cause = next((m for t, m in _BODY_ERRORS if isinstance(exc.__cause__, t)), None)
        message = cause or str(exc.detail)
        response = _error(exc.status_code, "http_error", message)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(DoubanError)
    async def douban_error(request: Request, exc: DoubanError) -> JSONResponse:
        status = next(code for kind, code in ERROR_STATUS if isinstance(exc, kind))
        return _error(status, type(exc).__name__, exc.message, hint=exc.hint or None)

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        return _error(503, "overloaded", str(exc), retry_after=exc.retry_after)


class _BodyLimit:
    """413 for a body over ``max_bytes``: at once when its Content-Length says so, else when
    the bytes read pass the limit (chunked uploads)."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.message = f"the request body is over {max_bytes // 2**20} MiB"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await _error(413, "too_large", self.message)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise HTTPException(413, self.message)  # FastAPI passes it to http_error
            return message

        await self.app(scope, limited, send)


def create_app(
    run: str | Path | RunPaths | None = None,
    runs_dir: Path | str | None = None,
    *,
    threads: int | None = None,
    max_wait_s: float = 0.004,
    token_budget: int = 8_192,
    max_queued_texts: int = 2_048,
    load_in_background: bool = True,
) -> FastAPI:
    """The service for ``run`` (a name under ``runs_dir``, a run directory, or None: the
    newest trained run); ``threads``: torch's intra-op threads (default: every core).
    ``load_in_background``: answer ``/healthz`` (and 503 elsewhere) while the default model
    loads; False starts serving only once it is loaded."""
    paths = resolve_run(run, Path(runs_dir) if runs_dir else None)
    service = ScoringService(
        paths,
        threads,
        max_wait_s=max_wait_s,
        token_budget=token_budget,
        max_queued_texts=max_queued_texts,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(service.start())
        if not load_in_background:
            await loading
        yield
        await loading
        await service.batcher.close()  # uvicorn has drained in-flight requests by now

    app = FastAPIOffline(  # /docs and /redoc from the installed package's files: no CDN
        title="Douban sentiment studio",
        summary=f"Star ratings for Chinese movie reviews (run {paths.name}).",
        version="1",
        lifespan=lifespan,
        responses={
            422: {"model": ErrorResponse, "description": "Invalid request"},
            503: {"model": ErrorResponse, "description": "Loading or overloaded; retry"},
        },
    )
    app.state.service = service
    app.add_middleware(_BodyLimit, max_bytes=MAX_BODY_BYTES)

    @app.middleware("http")
    async def docs_stay_local(request: Request, call_next: Any) -> Any:
        """The docs pages may load nothing from elsewhere: ReDoc's footer draws its logo from
        its CDN, which offline is a broken image and online a request the user did not make."""
        response = await call_next(request)
        if request.url.path in ("/docs", "/redoc"):
            response.headers["Content-Security-Policy"] = DOCS_POLICY
        return response

    _install_error_handlers(app)

    def ready() -> None:
        if service.load_error is not None:
            raise service.load_error
        if service.default is None:
            raise Overloaded("the default model is still loading", retry_after=2)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> dict[str, Any]:
        """The default model is loaded and warmed up (503 until then)."""
        ready()
        return {
            "status": "ready",
            "run": paths.name,
            "loaded": service.loaded,
            "queued": service.batcher.queued,
            "in_flight": service.batcher.in_flight,
            "batches": service.batcher.batches,
        }

    @app.get("/v1/models", response_model=ModelsResponse)
    async def models() -> ModelsResponse:
        """The run's models; ``default`` is chosen on validation by the evaluate stage."""
        ready()
        return ModelsResponse(
            run=paths.name,
            generation=service.run.generation,
            default=service.default or "",
            models=[
                ModelInfo(name=m, default=m == service.default, loaded=m in service.loaded)
                for m in service.available
            ],
        )

    @app.post(
        "/v1/score",
        response_model=ScoreResponse,
        responses={
            404: {"model": ErrorResponse, "description": "Unknown model"},
            409: {"model": ErrorResponse, "description": "The run cannot do this"},
            413: {"model": ErrorResponse, "description": "Request body too large"},
        },
    )
    async def score(request: ScoreRequest) -> dict[str, Any]:
        """Score texts: one record per text, in order."""
        ready()
        service.check_model(request.model)
        model = request.model or service.default or ""
        records = await service.batcher.submit((model, request.explain), request.texts)
        for i, record in enumerate(records):
            record["row"] = i
        if request.aspects:
            found = await asyncio.to_thread(service.aspects, model, request.texts)
            for record, clauses in zip(records, found, strict=True):
                record["aspects"] = None if record["error"] else clauses
        prior, each = None, None
        if request.adapt_prior is not None:
            prior, each = service.adapt(records, request.adapt_prior, model)
        return {"model": model, "records": records, "prior": prior, "reviews_adapted": each}

    return app
