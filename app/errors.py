"""Errors the API reports, rendered as RFC 9457 problem details by one handler.

    AppError                      500  every error the service raises on purpose
    ├── BadRequest                400  a body that is not what the route reads (malformed JSON)
    ├── Unauthorized              401  missing, unknown or revoked bearer token
    │   └── BadSignature               a webhook whose signature does not verify
    ├── Forbidden                 403  authenticated, but not allowed
    ├── NotFound                  404  no such resource, or not yours to see
    │   └── ExecutionNotFound
    ├── Conflict                  409  the resource is not in a state that allows this
    ├── PayloadTooLarge           413  a body over the route's size limit
    ├── InvalidRequest            422  well-formed JSON that the domain rejects
    │   ├── UnknownAgentType           lists the known types
    │   └── IdempotencyKeyReused       an Idempotency-Key sent again with another body
    ├── RateLimited               429  the tier's limits are reached (``limits``, Retry-After)
    └── ServiceUnavailable        503  a backing service (database, Redis) is unreachable

Payload validation failures (FastAPI's ``RequestValidationError``) are rendered as 422 problems
with an ``errors`` member; unknown routes and methods as 404/405 problems; a value the database
refuses as a 422 problem; anything unexpected as a 500 problem (the trace goes to the log).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_CONTENT_TYPE = "application/problem+json"

log = logging.getLogger(__name__)


class Problem(BaseModel):
    """RFC 9457 problem details; extra members carry case-specific data."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str | None = None


class AppError(Exception):
    status: ClassVar[int] = 500
    type: ClassVar[str] = "internal-error"
    title: ClassVar[str] = "Internal error"

    def __init__(
        self, detail: str | None = None, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra

    def problem(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"/problems/{self.type}",
            "title": self.title,
            "status": self.status,
        }
        if self.detail:
            body["detail"] = self.detail
        body.update(self.extra)
        return body

    @classmethod
    def openapi(cls) -> dict[int | str, dict[str, Any]]:
        """An entry for a route's ``responses=`` so the spec documents this error."""
        return {cls.status: {"model": Problem, "description": cls.title}}


class Unauthorized(AppError):
    status = 401
    type = "unauthorized"
    title = "Authentication required"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": "Bearer"}, **extra)


class BadSignature(Unauthorized):
    type = "bad-signature"
    title = "The webhook signature does not verify"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        AppError.__init__(self, detail, **extra)  # no bearer challenge: it is not a token


class Forbidden(AppError):
    status = 403
    type = "forbidden"
    title = "Forbidden"


class NotFound(AppError):
    status = 404
    type = "not-found"
    title = "Not found"


class ExecutionNotFound(NotFound):
    type = "execution-not-found"
    title = "Execution not found"


class BadRequest(AppError):
    status = 400
    type = "bad-request"
    title = "Bad request"


class PayloadTooLarge(AppError):
    status = 413
    type = "payload-too-large"
    title = "Payload too large"


class Conflict(AppError):
    status = 409
    type = "conflict"
    title = "Conflict"


class InvalidRequest(AppError):
    status = 422
    type = "invalid-request"
    title = "Invalid request"


class UnknownAgentType(InvalidRequest):
    type = "unknown-agent-type"
    title = "Unknown agent type"


class IdempotencyKeyReused(InvalidRequest):
    type = "idempotency-key-reused"
    title = "Idempotency key already used for another request"


class RateLimited(AppError):
    status = 429
    type = "rate-limited"
    title = "Too many executions"


class ServiceUnavailable(AppError):
    status = 503
    type = "service-unavailable"
    title = "Service unavailable"


def problem_response(body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        body, status_code=body["status"], media_type=PROBLEM_CONTENT_TYPE, headers=headers
    )


async def _app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    return problem_response(exc.problem(), exc.headers or None)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
    return problem_response(
        {
            "type": "/problems/validation-error",
            "title": "Request validation failed",
            "status": 422,
            "detail": "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors),
            "errors": errors,
        }
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return problem_response(
        {
            "type": "about:blank",
            "title": str(exc.detail),
            "status": exc.status_code,
        },
        dict(exc.headers) if exc.headers else None,
    )


async def _data_error(request: Request, exc: Exception) -> JSONResponse:
    return problem_response(
        {
            "type": "/problems/invalid-value",
            "title": "Invalid value",
            "status": 422,
            "detail": "A value in the request cannot be stored.",
        }
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(
        {"type": "/problems/internal-error", "title": "Internal error", "status": 500}
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(Exception, _unexpected_error)
    app.add_exception_handler(DataError, _data_error)
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
