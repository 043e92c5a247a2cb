from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy import text

from app.errors import ServiceUnavailable

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ok"] = "ok"
    database: Literal["ok"] = "ok"
    redis: Literal["ok"] = "ok"


@router.get("/healthz", response_model=Health, operation_id="health", summary="Process is up")
async def health() -> Health:
    return Health()


@router.get(
    "/readyz",
    response_model=Readiness,
    operation_id="readiness",
    summary="Database and Redis are reachable",
    responses=ServiceUnavailable.openapi(),
)
async def readiness(request: Request) -> Readiness:
    failing = []
    try:
        async with request.app.state.db.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        failing.append("database")
    try:
        await request.app.state.redis.ping()
    except Exception:
        failing.append("redis")
    if failing:
        raise ServiceUnavailable(f"Unreachable: {', '.join(failing)}.", failing=failing)
    return Readiness()
