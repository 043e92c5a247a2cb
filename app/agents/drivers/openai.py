"""A driver for the OpenAI chat-completions wire protocol (OpenAI and compatible servers)."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
from pydantic import BaseModel, Field, ValidationError

from app.agents.drivers.base import ModelResponse
from app.agents.errors import ProviderError
from app.agents.state import Message, ToolCall, Usage
from app.agents.tools import ToolSpec, describe_validation_error

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
# How much of an unexpected response body an error message quotes.
_SNIPPET_CHARS = 300


class OpenAIChatDriver:
    """POSTs the conversation to ``{base_url}/chat/completions``.

    Rate limits (429), server errors (500, 502, 503, 504), timeouts and connection failures
    are retried up to ``max_retries`` times with exponential backoff and jitter, or after the
    delay the server asks for in ``Retry-After``; both are capped at ``backoff_max`` seconds.
    Other errors raise :class:`ProviderError` at once.

    Tool-call arguments that are not a JSON object are kept as a call with empty
    ``arguments`` and the raw text in ``ToolCall.invalid_arguments``; the agent answers such
    a call with an error the model can correct. When the conversation is sent back, such a
    call's arguments go out as ``{}``: some compatible servers reject invalid JSON there.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        api_key: str | None,
        model: str,
        timeout: float,
        max_retries: int,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
    ) -> None:
        self.client = client
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._api_key = api_key or None
        self._random = random.Random()

    async def complete(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> ModelResponse:
        body = request_body(self.model, messages, tools)
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        attempts = max(self.max_retries, 0) + 1
        for attempt in range(1, attempts + 1):
            status: int | None = None
            retry_after: float | None = None
            try:
                response = await self._post(body, headers)
            except (httpx.TimeoutException, TimeoutError):
                failure = f"no response within {self.timeout:g}s"
            except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
                raise self._error(f"invalid base URL: {exc}") from exc
            except httpx.TransportError as exc:
                failure = f"connection failed: {str(exc) or type(exc).__name__}"
            except httpx.HTTPError as exc:  # undecodable body, redirect loop: waiting won't help
                raise self._error(f"malformed response: {str(exc) or type(exc).__name__}") from exc
            else:
                if response.is_success:
                    return self._parse(response, messages)
                status = response.status_code
                failure = f"HTTP {status}: {_provider_message(response)}"
                if not _is_retryable(response):
                    raise self._error(failure, status_code=status)
                retry_after = parse_retry_after(response.headers)
            if attempt == attempts:
                break
            delay = self._backoff(attempt, retry_after)
            logger.warning(
                "model %s, attempt %d of %d: %s; retrying in %.2fs",
                self.model,
                attempt,
                attempts,
                self._redact(failure),
                delay,
            )
            await asyncio.sleep(delay)
        raise self._error(f"{failure} (gave up after {attempts} attempts)", status_code=status)

    async def _post(self, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        # httpx's timeout applies to each phase (connect, each read...); the outer one bounds
        # the whole exchange, so a server trickling bytes cannot hold a step forever.
        async with asyncio.timeout(self.timeout):
            return await self.client.post(
                self.url, json=body, headers=headers, timeout=self.timeout
            )

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if retry_after is not None:
            return min(retry_after, self.backoff_max)
        ceiling = min(self.backoff_max, self.backoff_base * 2.0 ** min(attempt - 1, 60))
        # Jitter spreads out clients that failed together; the lower half keeps a floor so a
        # retry never comes back almost immediately.
        return ceiling * self._random.uniform(0.5, 1.0)

    def _parse(self, response: httpx.Response, messages: Sequence[Message]) -> ModelResponse:
        try:
            data = response.json()
        except ValueError as exc:
            raise self._error(
                f"malformed response: body is not JSON: {_snippet(response.text)!r}",
                status_code=response.status_code,
            ) from exc
        # Some proxies report failures as a 200 whose body is just an error object.
        if isinstance(data, dict) and "choices" not in data and "error" in data:
            raise self._error(
                f"provider error: {_error_message(data) or _snippet(response.text)}",
                status_code=response.status_code,
            )
        try:
            completion = _Completion.model_validate(data)
        except ValidationError as exc:
            raise self._error(
                f"malformed response: {describe_validation_error(exc)}",
                status_code=response.status_code,
            ) from exc
        turn = sum(1 for message in messages if message.role == "assistant")
        return completion.to_model_response(turn)

    def _error(self, what: str, *, status_code: int | None = None) -> ProviderError:
        message = f"chat completion with model {self.model!r} failed: {what}"
        return ProviderError(self._redact(message), status_code=status_code)

    def _redact(self, text: str) -> str:
        # Provider messages and echoed bodies may quote the key ("Incorrect API key: sk-...").
        return text.replace(self._api_key, "[redacted]") if self._api_key else text


def request_body(
    model: str, messages: Sequence[Message], tools: Sequence[ToolSpec]
) -> dict[str, Any]:
    """The JSON body of a chat-completions request."""
    body: dict[str, Any] = {"model": model, "messages": [_wire_message(m) for m in messages]}
    if tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.parameters,
                },
            }
            for tool in tools
        ]
    return body


def _wire_message(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        return {
            "role": "tool",
            "tool_call_id": message.tool_call_id,
            "content": message.content or "",
        }
    if message.role == "assistant":
        wire: dict[str, Any] = {"role": "assistant", "content": message.content}
        if message.tool_calls:
            wire["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {
                        "name": call.name,
                        "arguments": json.dumps(call.arguments, ensure_ascii=False),
                    },
                }
                for call in message.tool_calls
            ]
        elif message.content is None:
            wire["content"] = ""  # an assistant message needs content or tool calls
        return wire
    wire = {"role": message.role, "content": message.content or ""}
    if message.name is not None:
        wire["name"] = message.name
    return wire


def parse_retry_after(headers: httpx.Headers, now: datetime | None = None) -> float | None:
    """Seconds the server asked us to wait, from ``retry-after-ms`` or ``Retry-After``.

    ``Retry-After`` may be a number of seconds or an HTTP date; ``None`` when absent or
    unreadable.
    """
    milliseconds = _finite_float(headers.get("retry-after-ms"))
    if milliseconds is not None:
        return max(0.0, milliseconds / 1000)
    value = headers.get("retry-after")
    if value is None:
        return None
    seconds = _finite_float(value)
    if seconds is None:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds)


def _finite_float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _is_retryable(response: httpx.Response) -> bool:
    if response.status_code not in RETRYABLE_STATUSES:
        return False
    # OpenAI answers 429 both for rate limits and for an exhausted quota; only the first
    # goes away by waiting.
    data = _json_or_none(response)
    error = data.get("error") if isinstance(data, dict) else None
    return not (
        isinstance(error, dict) and "insufficient_quota" in (error.get("code"), error.get("type"))
    )


def _provider_message(response: httpx.Response) -> str:
    return (
        _error_message(_json_or_none(response))
        or _snippet(response.text)
        or response.reason_phrase
        or "(empty body)"
    )


def _error_message(data: Any) -> str | None:
    """The message of an OpenAI-style error body: ``{"error": {"message": ...}}``."""
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    if isinstance(error, str):
        return error
    return None


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _snippet(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _SNIPPET_CHARS else text[:_SNIPPET_CHARS] + "..."


def _parse_arguments(raw: str | dict[str, Any] | None) -> tuple[dict[str, Any], str | None]:
    """(arguments, None) for a JSON object; ({}, raw text) for anything else."""
    if isinstance(raw, dict):  # a few compatible servers send an object, not a string
        return raw, None
    if raw is None or not raw.strip():  # calls without arguments sometimes come as ""
        return {}, None
    try:
        value = json.loads(raw)
    except ValueError:
        return {}, raw
    return (value, None) if isinstance(value, dict) else ({}, raw)


class _Function(BaseModel):
    name: str
    arguments: str | dict[str, Any] | None = None


class _ToolCall(BaseModel):
    id: str | None = None
    function: _Function


class _Message(BaseModel):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_ToolCall] | None = None


class _Choice(BaseModel):
    message: _Message


class _Usage(BaseModel):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class _Completion(BaseModel):
    """The part of a chat-completions response the driver reads; the rest is ignored."""

    choices: list[_Choice] = Field(min_length=1)
    usage: _Usage | None = None

    def to_model_response(self, turn: int) -> ModelResponse:
        wire = self.choices[0].message
        calls = []
        for i, call in enumerate(wire.tool_calls or []):
            arguments, invalid = _parse_arguments(call.function.arguments)
            calls.append(
                ToolCall(
                    # Some compatible servers omit ids; a deterministic one keeps results
                    # matched to their call.
                    id=call.id or f"call_{turn}_{i}",
                    name=call.function.name,
                    arguments=arguments,
                    invalid_arguments=invalid,
                )
            )
        # A refusal is the model's answer, so it becomes the content.
        content = wire.content if wire.content is not None else wire.refusal
        usage = self.usage or _Usage()
        return ModelResponse(
            message=Message(role="assistant", content=content, tool_calls=calls),
            usage=Usage(
                input_tokens=usage.prompt_tokens or 0,
                output_tokens=usage.completion_tokens or 0,
            ),
        )
