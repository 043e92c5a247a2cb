"""The FastAPI application factory; resources are created in the lifespan, never at import."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app import health
from app.admin.router import router as admin_router
from app.auth.router import router as auth_router
from app.auth.tokens_router import router as tokens_router
from app.config import Settings
from app.dashboard.router import router as dashboard_router
from app.db import create_engine, session_factory
from app.errors import install_error_handlers
from app.events.router import router as events_router
from app.executions.router import router as executions_router
from app.executions.types_router import router as agent_types_router
from app.limits_middleware import BodyLimit
from app.metrics_middleware import RequestMetrics
from app.metrics_router import router as metrics_router
from app.outbound.router import router as outbound_router
from app.redis import arq_pool
from app.schedules.router import router as schedules_router
from app.streams.hub import Hub
from app.streams.router import router as streams_router
from app.webhooks.router import router as webhooks_router


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app; its lifespan raises :class:`~app.config.ServicesNotConfigured` if the settings
    (``Settings()`` when none are given) name no database or Redis."""
    resolved = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Never embedded servers here: ``agents dev`` resolves them before it builds the app.
        database_url, redis_url = resolved.service_urls()
        db = create_engine(database_url, pool_size=resolved.db_pool_size, max_overflow=0)
        redis = await arq_pool(redis_url)
        hub = Hub(redis_url)
        await hub.start()
        app.state.hub = hub
        app.state.settings = resolved
        app.state.db = db
        app.state.sessions = session_factory(db)
        app.state.redis = redis
        try:
            yield
        finally:
            await hub.close()
            await redis.aclose()
            await db.dispose()

    app = FastAPI(
        title="Agent Runner",
        version="0.1.0",
        summary="Durable LLM agent executions: start, watch and steer agents over HTTP.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=resolved.max_body_bytes)
    app.add_middleware(RequestMetrics)
    app.include_router(health.router)
    app.include_router(auth_router)
    app.include_router(tokens_router)
    app.include_router(executions_router)
    app.include_router(agent_types_router)
    app.include_router(events_router)
    app.include_router(webhooks_router)
    app.include_router(schedules_router)
    app.include_router(outbound_router)
    app.include_router(admin_router)
    app.include_router(streams_router)
    app.include_router(dashboard_router)
    app.include_router(metrics_router)
    return app
