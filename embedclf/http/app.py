"""The FastAPI app: ``create_app(settings)`` (nothing is built at import time). See docs/http.md.

Endpoints: ``POST /v1/classify``, ``GET /v1/results/{task_id}``, ``GET /v1/heads`` (behind the bearer
token when ``EMBEDCLF_API_TOKEN`` is set), ``GET /livez``, ``GET /readyz`` (always open), OpenAPI at
``/docs``. Every error is JSON ``{"error": code, "message": ...}``; bad input is a 4xx.

Waiting (``wait: true``): the request's task id is awaited on the app's one
:class:`~embedclf.waiter.ResultHub` in a worker thread; at most ``max_waiting`` requests wait at once
(more: 503 ``too_many_waiting`` before anything is enqueued), so waits never queue behind each other.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import Depends, FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRouter
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from embedclf.config import Settings
from embedclf.http import schemas
from embedclf.http.validate import ApiError, is_json, parse_body
from embedclf.results import entries, task_value

log = logging.getLogger(__name__)

#: requests that may wait for their result at once (each holds a thread while it waits)
MAX_WAITING = 512

_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def result_body(task_id: str, rows: list[dict], single: bool) -> dict[str, Any]:
    """``{"task_id", "status", "result"}``: the result in the shape of :mod:`embedclf.results`."""
    values = entries(rows)
    ok = sum(v["status"] == "ok" for v in values)
    status = "ok" if ok == len(values) else ("error" if ok == 0 else "partial")
    return {"task_id": task_id, "status": status, "result": task_value(values, single)}


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit`` bytes (chunked bodies too)."""
    too_large = ApiError(413, "payload_too_large", f"the body is larger than {limit} bytes "
                                                   "(EMBEDCLF_MAX_PAYLOAD_BYTES); send fewer or shorter texts")
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise ApiError(400, "bad_request", "invalid Content-Length")
        if int(declared) > limit:
            raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


class _Waiting:
    """Requests waiting now (touched only on the event loop) and the thread limiter for their waits."""

    def __init__(self, limit: int) -> None:
        self.limit, self.now = limit, 0
        self.limiter: anyio.CapacityLimiter | None = None


def _timing(arrived: float, parsed: float, enqueued: float, answered: float | None = None) -> dict[str, str]:
    """``Server-Timing``: read and validate the body, check heads and enqueue, wait (milliseconds)."""
    parts = [f"parse;dur={1000 * (parsed - arrived):.1f}", f"enqueue;dur={1000 * (enqueued - parsed):.1f}"]
    if answered is not None:
        parts.append(f"wait;dur={1000 * (answered - enqueued):.1f}")
    return {"Server-Timing": ", ".join(parts)}


def _auth(token: str) -> Any:
    expected = token.encode()
    bearer = HTTPBearer(auto_error=False, description="EMBEDCLF_API_TOKEN")

    async def require_token(creds: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        given = creds.credentials.encode("utf-8", "replace") if creds is not None else b""
        if not hmac.compare_digest(given, expected):
            raise ApiError(401, "unauthorized", "missing or wrong bearer token (Authorization: Bearer <token>)",
                           headers={"WWW-Authenticate": "Bearer"})

    return require_token


def create_app(settings: Settings, *, max_waiting: int = MAX_WAITING) -> FastAPI:
    from embedclf.http.backend import Backend

    waiting = _Waiting(max_waiting)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        backend = Backend(settings)
        await anyio.to_thread.run_sync(backend.start)
        app.state.backend = backend
        waiting.limiter = anyio.CapacityLimiter(max_waiting)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(backend.close)

    app = FastAPI(title="embedclf", version=_version(), lifespan=lifespan, docs_url="/docs",
                  description="Text classification: enqueue texts for embedclf workers, wait for or fetch results. "
                              "See docs/http.md.")
    _handlers(app)
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(_auth(settings.api_token))] if settings.api_token else [])

    @v1.post("/classify", status_code=202, response_model=None, summary="Classify one text or many",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": schemas.ClassifyBody.model_json_schema()}}}},
             responses={202: {"model": schemas.Accepted, "description": "Enqueued (wait: false)"},
                        200: {"model": schemas.TaskResult, "description": "The result (wait: true)"},
                        **schemas.error_responses(400, 401, 413, 415, 422, 503, 504)})
    async def classify(request: Request) -> JSONResponse:
        arrived = time.monotonic()
        if not is_json(request.headers.get("content-type")):
            raise ApiError(415, "unsupported_media_type", "send the body as JSON (Content-Type: application/json)")
        body = await read_body(request, settings.max_payload_bytes)
        sub = parse_body(body, settings.max_text_chars, settings.max_texts_per_task)
        parsed = time.monotonic()
        backend = request.app.state.backend
        if sub.wait and waiting.now >= waiting.limit:
            raise ApiError(503, "too_many_waiting", f"{waiting.now} requests are waiting already (the most is "
                           f"{waiting.limit}); retry, or send wait: false and GET the result later",
                           headers={"Retry-After": "1"})
        waiting.now += int(sub.wait)
        try:
            task_id = await anyio.to_thread.run_sync(backend.submit, sub)
            enqueued = time.monotonic()
            url = f"/v1/results/{task_id}"
            if not sub.wait:
                return JSONResponse({"task_id": task_id, "items": len(sub.texts), "result_url": url},
                                    status_code=202, headers={"Location": url,
                                                              **_timing(arrived, parsed, enqueued)})
            left = sub.timeout_s - (enqueued - arrived)
            rows = await anyio.to_thread.run_sync(backend.wait, task_id, left, limiter=waiting.limiter)
        finally:
            waiting.now -= int(sub.wait)
        timing = _timing(arrived, parsed, enqueued, time.monotonic())
        if rows is None:
            raise ApiError(504, "timeout", f"no result within {sub.timeout_s:g}s (are workers running?); the task "
                           f"stays queued: GET {url} later", headers=timing, task_id=task_id, result_url=url)
        return JSONResponse(result_body(task_id, rows, sub.single), status_code=200, headers=timing)

    @v1.get("/results/{task_id:path}", response_model=schemas.TaskResult, summary="A task's result",
            responses=schemas.error_responses(401, 404, 422, 503))
    async def result(request: Request, task_id: str = Path(min_length=1, max_length=255)) -> JSONResponse:
        rows = await anyio.to_thread.run_sync(request.app.state.backend.rows, task_id)
        if not rows:
            raise ApiError(404, "not_found", f"no result for task {task_id!r} yet (queued, in progress, or an "
                                             "unknown id)", task_id=task_id)
        return JSONResponse(result_body(task_id, rows, single=len(rows) == 1))

    @v1.get("/heads", response_model=schemas.Heads, summary="Active heads",
            responses=schemas.error_responses(401, 503))
    async def heads(request: Request) -> JSONResponse:
        return JSONResponse({"heads": await anyio.to_thread.run_sync(request.app.state.backend.heads)})

    app.include_router(v1)

    @app.get("/livez", response_model=schemas.Probe, summary="The server runs", tags=["probes"])
    async def livez() -> JSONResponse:
        return JSONResponse({"ok": True})

    @app.get("/readyz", response_model=schemas.Probe, summary="Broker and Postgres answer", tags=["probes"],
             responses={503: {"model": schemas.Probe, "description": "Not ready"}})
    async def readyz(request: Request) -> JSONResponse:
        ok, detail = await anyio.to_thread.run_sync(request.app.state.backend.ready)
        return JSONResponse({"ok": ok, **detail}, status_code=200 if ok else 503)

    return app


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return JSONResponse({"error": code, "message": str(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = (exc.errors() or [{}])[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"error": "invalid_request", "message": f"{where}: {first.get('msg', 'invalid')}"},
                            status_code=422)

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:  # the server logs the traceback
        return JSONResponse({"error": "internal_error", "message": "internal error; see the server log"},
                            status_code=500)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("embedclf")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
        return "0"
