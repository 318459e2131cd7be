"""The gateway application: FastAPI over one NATS connection, started and stopped by its
lifespan. ``create_app(settings)`` is all a test or a server needs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from ...errors import NoController, ScaffoldingError
from ...jobs import JobClient
from ...proto.subjects import Subjects
from ...transport import connect
from . import jobs_api, openai_api
from .auth import ApiKeyMiddleware, KeyStore
from .errors import on_http_error, on_scaffolding_error, on_unexpected_error, on_validation_error
from .middleware import GatewayMiddleware
from .state import GatewayState


@dataclass(frozen=True)
class GatewaySettings:
    nats_url: str = "nats://127.0.0.1:4222"
    prefix: str = "scaf"
    request_timeout: float = 600.0
    max_body_bytes: int = 1 << 20
    """Larger request bodies get 413 (a job must fit NATS' ``max_payload`` anyway)."""
    api_keys: KeyStore = field(default_factory=KeyStore)  # none: every /v1 request is refused
    allow_anonymous: bool = False  # explicitly run without keys (one tenant, no ownership)


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    settings = settings or GatewaySettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        nc = await connect(settings.nats_url.split(","), name="scaffolding-gateway")
        app.state.gateway = GatewayState(
            nc=nc,
            jobs=JobClient(nc, subjects=Subjects(settings.prefix)),
            request_timeout=settings.request_timeout,
        )
        try:
            yield
        finally:
            await nc.drain()

    app = FastAPI(
        title="Scaffolding over NATS",
        version="0.1.0",
        lifespan=lifespan,
        description="OpenAI-compatible inference-time-compute methods, run as services on NATS.",
    )
    app.add_middleware(ApiKeyMiddleware, keys=None if settings.allow_anonymous else settings.api_keys)
    app.include_router(openai_api.router)
    app.include_router(jobs_api.router)
    app.add_exception_handler(ScaffoldingError, on_scaffolding_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected_error)
    app.add_middleware(GatewayMiddleware, max_body_bytes=settings.max_body_bytes)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    async def readyz(request: Request) -> JSONResponse:
        """Ready when NATS is connected and at least one controller answers."""
        state: GatewayState = request.app.state.gateway
        checks: dict[str, object] = {"nats": state.nc.is_connected}
        try:
            checks["methods"] = await state.methods()
            checks["controllers"] = True
        except NoController as exc:
            checks["controllers"] = False
            checks["reason"] = exc.message
        ready = bool(checks["nats"]) and bool(checks["controllers"])
        return JSONResponse({"ready": ready, **checks}, status_code=200 if ready else 503)

    @app.get("/metrics", tags=["ops"])
    async def prometheus() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
