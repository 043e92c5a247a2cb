"""A driver for the Anthropic Messages API (``POST /v1/messages``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, Literal, Self, Unpack

from pydantic import BaseModel, model_validator

from app.agents.drivers.base import ModelResponse
from app.agents.drivers.clients import ModelClient
from app.agents.drivers.http import DriverOptions, JsonApiDriver
from app.agents.state import Message, ToolCall, Usage
from app.agents.tools import ToolSpec

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
# 529 is Anthropic's "overloaded".
RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504, 529})


class AnthropicDriver(JsonApiDriver["_Reply"]):
    """POSTs the conversation to the Messages endpoint, ``messages_url(base_url)``.

    ``base_url`` may be given with or without the API version: ``https://api.anthropic.com``
    and ``https://api.anthropic.com/v1`` (trailing slashes ignored) both post to
    ``https://api.anthropic.com/v1/messages``.

    ``max_output_tokens`` is the ``max_tokens`` of each request, the cap on one reply; it is
    unrelated to the run-wide token budget of the agent type. A reply cut off by it still
    counts: its text is the answer. A tool call cut off by it is not run: the call comes back
    with ``invalid_arguments`` set, so the agent answers it with an error the model can react
    to instead of running the tool with truncated input.

    Retries, timeouts and error reporting work as in
    :class:`~app.agents.drivers.openai.OpenAIChatDriver`: rate limits (429), server errors
    (500, 502, 503, 504), overload (529), timeouts and connection failures are retried up to
    ``max_retries`` times with exponential backoff and jitter, or after the delay the server
    asks for in ``retry-after``; both are capped at ``backoff_max`` seconds. Other errors
    raise :class:`ProviderError` at once, never quoting the API key.
    """

    retryable_statuses = RETRYABLE_STATUSES
    request_name = "Anthropic messages request"
    result_key = "content"
    _logger = logger

    def __init__(
        self,
        client: ModelClient,
        *,
        max_output_tokens: int = 4096,
        **options: Unpack[DriverOptions],
    ) -> None:
        super().__init__(client, **options)
        self.max_output_tokens = max_output_tokens

    @staticmethod
    def _endpoint(base_url: str) -> str:
        return messages_url(base_url)

    def _request_body(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> dict[str, Any]:
        return request_body(self.model, self.max_output_tokens, messages, tools)

    def _headers(self) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION, "content-type": "application/json"}
        if self._api_key:
            headers["x-api-key"] = self._api_key
        return headers

    def _validate_reply(self, data: Any) -> _Reply:
        return _Reply.model_validate(data)

    def _to_model_response(self, reply: _Reply, turn: int) -> ModelResponse:
        if reply.stop_reason == "max_tokens":
            self._logger.warning(
                "model %s: reply cut off at max_tokens=%d", self.model, self.max_output_tokens
            )
        return reply.to_model_response(turn)


def messages_url(base_url: str) -> str:
    """The Messages endpoint under ``base_url``, which may or may not end in ``/v1``."""
    base = base_url.rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    return base + "/messages"


def request_body(
    model: str, max_tokens: int, messages: Sequence[Message], tools: Sequence[ToolSpec]
) -> dict[str, Any]:
    """The JSON body of a Messages request.

    The leading system messages become the ``system`` field (joined by blank lines); a
    system message later in the conversation is sent as user text in its place, as the API
    has no system role. Tool results become ``tool_result`` blocks of a user turn. The API
    wants user and assistant turns to alternate, so consecutive messages of one side (tool
    results, a user message after them) are merged into one turn, in order. Empty text is
    left out, as the API refuses empty text blocks; a message left with nothing to send is
    dropped.
    """
    start = 0
    system_parts: list[str] = []
    while start < len(messages) and messages[start].role == "system":
        content = messages[start].content
        if content and content.strip():
            system_parts.append(content)
        start += 1
    turns: list[dict[str, Any]] = []
    for message in messages[start:]:
        role, blocks = _wire_blocks(message)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens}
    if system_parts:
        body["system"] = "\n\n".join(system_parts)
    body["messages"] = turns
    if tools:
        body["tools"] = [
            {"name": tool.name, "description": tool.description, "input_schema": tool.parameters}
            for tool in tools
        ]
    return body


def _wire_blocks(message: Message) -> tuple[Literal["user", "assistant"], list[dict[str, Any]]]:
    """The side a message belongs to and its content blocks."""
    if message.role == "tool":
        result: dict[str, Any] = {"type": "tool_result", "tool_use_id": message.tool_call_id}
        if message.content:  # content is optional; an empty string may be refused
            result["content"] = message.content
        return "user", [result]
    blocks: list[dict[str, Any]] = []
    if message.content and message.content.strip():
        blocks.append({"type": "text", "text": message.content})
    if message.role != "assistant":
        return "user", blocks
    for call in message.tool_calls:
        # A call whose arguments were unusable was answered with an error; it goes back with
        # an empty input, as ``input`` must be an object.
        arguments = call.arguments if call.invalid_arguments is None else {}
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": arguments})
    return "assistant", blocks


class _Block(BaseModel):
    """One content block; only ``text`` and ``tool_use`` are read, others are skipped."""

    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None

    @model_validator(mode="after")
    def _check_fields(self) -> Self:
        if self.type == "text" and self.text is None:
            raise ValueError("a text block needs text")
        if self.type == "tool_use" and self.name is None:
            raise ValueError("a tool_use block needs a name")
        return self


class _Usage(BaseModel):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class _Reply(BaseModel):
    """The part of a Messages response the driver reads; the rest is ignored."""

    content: list[_Block]
    stop_reason: str | None = None
    usage: _Usage | None = None

    def to_model_response(self, turn: int) -> ModelResponse:
        texts: list[str] = []
        calls: list[ToolCall] = []
        for i, block in enumerate(self.content):
            if block.type == "text":
                texts.append(block.text or "")
            elif block.type == "tool_use":
                truncated = self.stop_reason == "max_tokens" and i == len(self.content) - 1
                calls.append(_tool_call(block, f"toolu_{turn}_{len(calls)}", truncated))
        usage = self.usage or _Usage()
        # Cached prompt tokens are prompt tokens all the same: they count as input.
        input_tokens = (
            (usage.input_tokens or 0)
            + (usage.cache_creation_input_tokens or 0)
            + (usage.cache_read_input_tokens or 0)
        )
        return ModelResponse(
            message=Message(
                role="assistant", content="".join(texts) if texts else None, tool_calls=calls
            ),
            usage=Usage(input_tokens=input_tokens, output_tokens=usage.output_tokens or 0),
        )


def _tool_call(block: _Block, fallback_id: str, truncated: bool) -> ToolCall:
    """The call a ``tool_use`` block asks for; unusable input goes to ``invalid_arguments``."""
    assert block.name is not None  # checked by _Block
    # Ids are always sent by Anthropic; a compatible server might omit them.
    call_id = block.id or fallback_id
    raw = block.input
    if truncated:
        # The last block of a reply cut off at max_tokens: its input may be incomplete
        # (a half-written file), so the call must not run.
        text = json.dumps(raw, ensure_ascii=False)
        return ToolCall(
            id=call_id,
            name=block.name,
            invalid_arguments=f"(cut off: the reply reached its max_tokens limit) {text}",
        )
    if raw is None:
        return ToolCall(id=call_id, name=block.name)
    if isinstance(raw, dict):
        return ToolCall(id=call_id, name=block.name, arguments=raw)
    return ToolCall(
        id=call_id, name=block.name, invalid_arguments=json.dumps(raw, ensure_ascii=False)
    )
