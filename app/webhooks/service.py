"""Signed webhooks in: verify, then deliver an event or start an agent, once per message id.

Nothing is written before the signature verifies. The message id (``webhook-id``, or GitHub's
``X-GitHub-Delivery``) is recorded with the answer in the same transaction as what the message
did, so a replay gets the first answer and changes nothing, and a message whose handling failed
(a tier limit, say) can be sent again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from arq.connections import ArqRedis
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import User
from app.auth.service import get_user_by_email
from app.config import Settings, WebhookEndpoint
from app.errors import BadRequest, BadSignature, InvalidRequest, NotFound, ServiceUnavailable
from app.events.schemas import EventIn
from app.events.service import deliver_event, delivery_response
from app.executions.schemas import MAX_INPUT_BYTES, ExecutionInput, storable_size
from app.executions.service import start_execution
from app.webhooks import repository
from app.webhooks.repository import Answer
from app.webhooks.signatures import SignatureError, verify_github, verify_standard

# Far longer than the Standard Webhooks tolerance; GitHub signatures carry no timestamp, so a
# replayed GitHub delivery is recognised by its id only for this long.
KEEP_MESSAGES_SECONDS = 30 * 24 * 3600
# The size of ``webhook_messages.message_id``.
MAX_MESSAGE_ID_CHARS = 200


def endpoint_named(settings: Settings, name: str) -> WebhookEndpoint:
    endpoint = settings.webhooks.get(name)
    if endpoint is None:
        raise NotFound(f"No webhook endpoint {name!r}.")
    return endpoint


def verified_message_id(
    settings: Settings, name: str, headers: Mapping[str, str], body: bytes
) -> str:
    """The id of a message whose signature verifies; :class:`BadSignature` otherwise."""
    endpoint = endpoint_named(settings, name)
    secrets = settings.webhook_secrets(name)
    try:
        if endpoint.signature == "github":
            message_id = verify_github(secrets, headers, body)
        else:
            message_id = verify_standard(secrets, headers, body)
    except SignatureError as exc:
        raise BadSignature(f"The webhook signature does not verify: {exc.reason}.") from None
    if len(message_id) > MAX_MESSAGE_ID_CHARS:
        raise BadRequest(f"The message id is longer than {MAX_MESSAGE_ID_CHARS} characters.")
    return message_id


async def handle_message(
    session: AsyncSession,
    redis: ArqRedis,
    settings: Settings,
    name: str,
    message_id: str,
    body: bytes,
    *,
    github_event: str | None = None,
) -> Answer:
    """Do what the endpoint does with a verified message, or answer a replay as the first time."""
    endpoint = endpoint_named(settings, name)
    try:
        document = json.loads(body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python parses
        raise BadRequest("The body is not JSON.") from None
    replayed = await repository.claim_message(session, name, message_id)
    if replayed is not None:
        return replayed
    if github_event == "ping":
        answer = Answer(200, {"pong": True})
    else:
        user = await get_user_by_email(session, endpoint.user)
        if user is None:
            raise ServiceUnavailable(f"Webhook {name!r} acts for {endpoint.user}: no such user.")
        if endpoint.action == "event":
            answer = await _deliver(session, redis, settings, user.id, document)
        else:
            answer = await _start(session, redis, settings, user, name, message_id, document)
    await repository.record_answer(session, name, message_id, answer)
    return answer


async def _deliver(
    session: AsyncSession, redis: ArqRedis, settings: Settings, user_id: int, document: Any
) -> Answer:
    try:
        event = EventIn.model_validate(document)
    except ValidationError as exc:
        raise InvalidRequest(
            "The body is not an event {event_type, key?, payload}.",
            errors=exc.errors(include_url=False, include_context=False),
        ) from None
    delivered = await deliver_event(
        session,
        redis,
        settings,
        user_id=user_id,
        event_type=event.event_type,
        key=event.key,
        payload=event.payload,
    )
    return Answer(200, delivery_response(delivered).model_dump(mode="json"))


async def _start(
    session: AsyncSession,
    redis: ArqRedis,
    settings: Settings,
    user: User,
    name: str,
    message_id: str,
    document: Any,
) -> Answer:
    endpoint = endpoint_named(settings, name)
    assert endpoint.agent_type is not None  # settings refuse a start endpoint without one
    found, value = resolve_pointer(document, endpoint.prompt_pointer)
    if not found:
        raise InvalidRequest(f"The payload has nothing at {endpoint.prompt_pointer!r}.")
    prompt = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if storable_size(document, "payload") > MAX_INPUT_BYTES:
        raise InvalidRequest(f"The payload is larger than {MAX_INPUT_BYTES} bytes as JSON.")
    try:
        # The whole payload is kept in the input too, for the agent and for people reading it.
        input = ExecutionInput.model_validate(
            {"prompt": prompt, "webhook": {"endpoint": name, "message_id": message_id,
                                           "payload": document}}
        )  # fmt: skip
    except ValidationError as exc:
        raise InvalidRequest(
            "The payload cannot start an agent.",
            errors=exc.errors(include_url=False, include_context=False),
        ) from None
    execution = await start_execution(
        session, redis, settings, user, endpoint.agent_type, input.model_dump()
    )
    return Answer(201, {"execution_id": str(execution.id), "status": execution.status})


def _refuse_constant(name: str) -> Any:
    """``NaN`` and ``Infinity`` are not JSON (RFC 8259), though Python's parser takes them."""
    raise ValueError(f"{name} is not JSON")


def resolve_pointer(document: Any, pointer: str) -> tuple[bool, Any]:
    """RFC 6901: the value at ``pointer`` in ``document``, and whether there is one."""
    value = document
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict) and token in value:
            value = value[token]
        elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
            value = value[int(token)]
        else:
            return False, None
    return True, value
