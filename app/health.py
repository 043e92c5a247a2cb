from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy import text

from app.errors import ServiceUnavailable

router = APIRouter(tags=["health"])

# Seconds each check may take: a pool whose connections are all busy, or a server that stopped
# answering, makes the process unready within a probe's usual timeout instead of holding the
# probe for the pool's 30 s wait.
CHECK_TIMEOUT = 3.0


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
        async with asyncio.timeout(CHECK_TIMEOUT), request.app.state.db.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception:
        failing.append("database")
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await request.app.state.redis.ping()
    except Exception:
        failing.append("redis")
    if failing:
        raise ServiceUnavailable(f"Unreachable: {', '.join(failing)}.", failing=failing)
    return Readiness()
