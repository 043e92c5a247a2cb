from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.deps import RedisDep, SessionDep, SettingsDep
from app.errors import (
    BadRequest,
    BadSignature,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
)
from app.webhooks.service import endpoint_named, handle_message, verified_message_id

router = APIRouter(tags=["webhooks"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "An `event` endpoint: `{triggered_count, execution_ids, kept_event_id}`."},
    201: {"description": "A `start` endpoint: `{execution_id, status}`."},
    **BadRequest.openapi(),
    **BadSignature.openapi(),
    **NotFound.openapi(),
    **PayloadTooLarge.openapi(),
    **InvalidRequest.openapi(),
    **RateLimited.openapi(),
    **ServiceUnavailable.openapi(),
}


async def _read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused as soon as it passes ``limit`` bytes (never read whole first)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The body is over {limit} bytes.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The body is over {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/webhooks/{name}",
    operation_id="receiveWebhook",
    summary="A signed webhook: delivers an event or starts an agent, as the endpoint says",
    responses=_RESPONSES,
)
async def receive_webhook(
    name: str, request: Request, session: SessionDep, redis: RedisDep, settings: SettingsDep
) -> JSONResponse:
    """Signed with Standard Webhooks (``webhook-id``, ``webhook-timestamp``,
    ``webhook-signature``) or, where the endpoint says so, GitHub's ``X-Hub-Signature-256``. A
    message id already accepted gets its first answer again and changes nothing."""
    endpoint = endpoint_named(settings, name)
    body = await _read_body(request, endpoint.max_body_bytes)
    message_id = verified_message_id(settings, name, request.headers, body)
    answer = await handle_message(
        session,
        redis,
        settings,
        name,
        message_id,
        body,
        github_event=request.headers.get("x-github-event")
        if endpoint.signature == "github"
        else None,
    )
    return JSONResponse(answer.body, status_code=answer.status_code)
