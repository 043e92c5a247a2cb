"""A driver for the OpenAI chat-completions wire protocol (OpenAI and compatible servers)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import httpx
from pydantic import BaseModel, Field

from app.agents.drivers.base import ModelResponse
from app.agents.drivers.http import JsonApiDriver, _json_or_none
from app.agents.drivers.http import parse_retry_after as parse_retry_after
from app.agents.state import Message, ToolCall, Usage
from app.agents.tools import ToolSpec

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})


class OpenAIChatDriver(JsonApiDriver["_Completion"]):
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

    retryable_statuses = RETRYABLE_STATUSES
    request_name = "chat completion"
    result_key = "choices"
    _logger = logger

    @staticmethod
    def _endpoint(base_url: str) -> str:
        return base_url.rstrip("/") + "/chat/completions"

    def _request_body(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> dict[str, Any]:
        return request_body(self.model, messages, tools)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def _is_retryable(self, response: httpx.Response) -> bool:
        if not super()._is_retryable(response):
            return False
        # OpenAI answers 429 both for rate limits and for an exhausted quota; only the first
        # goes away by waiting.
        data = _json_or_none(response)
        error = data.get("error") if isinstance(data, dict) else None
        return not (
            isinstance(error, dict)
            and "insufficient_quota" in (error.get("code"), error.get("type"))
        )

    def _validate_reply(self, data: Any) -> _Completion:
        return _Completion.model_validate(data)

    def _to_model_response(self, reply: _Completion, turn: int) -> ModelResponse:
        return reply.to_model_response(turn)


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
