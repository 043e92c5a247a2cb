"""What the HTTP drivers share: one JSON POST per turn, retried, with redacted errors."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, NotRequired, TypedDict, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from app.agents.drivers.base import ModelResponse, Retry
from app.agents.drivers.clients import ModelClient
from app.agents.errors import ProviderError
from app.agents.state import Message
from app.agents.tools import ToolSpec, describe_validation_error

# How much of an unexpected response body an error message quotes.
_SNIPPET_CHARS = 300

ReplyT = TypeVar("ReplyT", bound=BaseModel)


class DriverOptions(TypedDict):
    """:class:`JsonApiDriver`'s settings, for a subclass that adds its own."""

    base_url: str
    api_key: str | None
    model: str
    timeout: float
    max_retries: int
    backoff_base: NotRequired[float]
    backoff_max: NotRequired[float]


class JsonApiDriver(ABC, Generic[ReplyT]):
    """POSTs a JSON request to ``url`` and reads the JSON reply as a ``ReplyT``.

    Responses whose status is in :attr:`retryable_statuses` (see :meth:`_is_retryable`),
    timeouts and connection failures are retried up to ``max_retries`` times with
    exponential backoff and jitter, or after the delay the server asks for in
    ``Retry-After``; both are capped at ``backoff_max`` seconds. Other errors raise
    :class:`ProviderError` at once, never quoting the API key.

    A subclass sets the class attributes and implements the request hooks
    (:meth:`_request_body`, :meth:`_headers`) and the reply hooks (:meth:`_validate_reply`,
    :meth:`_to_model_response`).
    """

    # Statuses worth retrying.
    retryable_statuses: ClassVar[frozenset[int]]
    # What a request is called in errors: "<request_name> with model 'm' failed: ...".
    request_name: ClassVar[str]
    # The top-level key of a successful body; without it, an "error" key means failure.
    result_key: ClassVar[str]
    # Where retries are logged; each driver logs under its own module.
    _logger: ClassVar[logging.Logger] = logging.getLogger(__name__)

    def __init__(
        self,
        client: ModelClient,
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
        self.url = self._endpoint(base_url)
        self.model = model
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._api_key = api_key or None
        self._random = random.Random()

    @staticmethod
    @abstractmethod
    def _endpoint(base_url: str) -> str:
        """The URL requests are POSTed to, under the configured ``base_url``."""

    @abstractmethod
    def _request_body(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> dict[str, Any]:
        """The JSON body of the request."""

    @abstractmethod
    def _headers(self) -> dict[str, str]:
        """The request headers, credentials included."""

    @abstractmethod
    def _validate_reply(self, data: Any) -> ReplyT:
        """The decoded body of a successful response, validated; may raise ValidationError."""

    @abstractmethod
    def _to_model_response(self, reply: ReplyT, turn: int) -> ModelResponse:
        """The answer in a validated reply; ``turn`` counts the assistant messages before it."""

    def _is_retryable(self, response: httpx.Response) -> bool:
        """Whether a failed response may succeed when sent again."""
        return response.status_code in self.retryable_statuses

    async def complete(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> ModelResponse:
        body = self._request_body(messages, tools)
        headers = self._headers()
        attempts = max(self.max_retries, 0) + 1
        retries: list[Retry] = []
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
                    return replace(self._parse(response, messages), retries=tuple(retries))
                status = response.status_code
                failure = f"HTTP {status}: {_provider_message(response)}"
                if not self._is_retryable(response):
                    raise self._error(failure, status_code=status)
                retry_after = parse_retry_after(response.headers)
            if attempt == attempts:
                break
            delay = self._backoff(attempt, retry_after)
            failure = self._redact(failure)
            self._logger.warning(
                "model %s, attempt %d of %d: %s; retrying in %.2fs",
                self.model,
                attempt,
                attempts,
                failure,
                delay,
            )
            retries.append(Retry(attempt, attempts, _snippet(failure), status, round(delay, 3)))
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
        if isinstance(data, dict) and self.result_key not in data and "error" in data:
            raise self._error(
                f"provider error: {_error_message(data) or _snippet(response.text)}",
                status_code=response.status_code,
            )
        try:
            reply = self._validate_reply(data)
        except ValidationError as exc:
            raise self._error(
                f"malformed response: {describe_validation_error(exc)}",
                status_code=response.status_code,
            ) from exc
        turn = sum(1 for message in messages if message.role == "assistant")
        return self._to_model_response(reply, turn)

    def _error(self, what: str, *, status_code: int | None = None) -> ProviderError:
        message = f"{self.request_name} with model {self.model!r} failed: {what}"
        return ProviderError(self._redact(message), status_code=status_code)

    def _redact(self, text: str) -> str:
        # Provider messages and echoed bodies may quote the key ("Incorrect API key: sk-...").
        return text.replace(self._api_key, "[redacted]") if self._api_key else text


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
