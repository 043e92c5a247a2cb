"""The Anthropic driver over real HTTP, against the fake Messages server."""

import json
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.agents.agent import Agent
from app.agents.drivers.anthropic import AnthropicDriver, messages_url, request_body
from app.agents.errors import ProviderError
from app.agents.file_tools import file_tools
from app.agents.spec import AgentTypeSpec
from app.agents.state import Message, ToolCall
from app.agents.tools import ToolSpec
from app.agents.workspace import Workspace
from tests.agents.conftest import CONVERSATION
from tests.fixtures.anthropic_server import (
    FakeAnthropic,
    error_body,
    messages_response,
    text,
    tool_use,
)

KEY = "sk-ant-test-0123456789"


def driver(
    http: httpx.AsyncClient, base_url: str, *, api_key: str | None = KEY, **options: Any
) -> AnthropicDriver:
    settings: dict[str, Any] = {"timeout": 5.0, "max_retries": 3, "backoff_base": 0.001}
    settings.update(options)
    return AnthropicDriver(
        http, base_url=base_url, api_key=api_key, model="claude-test", **settings
    )


async def test_plain_answer(fake_anthropic: FakeAnthropic, http: httpx.AsyncClient) -> None:
    fake_anthropic.enqueue(
        json=messages_response(
            text("Hello"),
            text(", world!"),
            input_tokens=12,
            output_tokens=3,
            cache_creation_input_tokens=100,
            cache_read_input_tokens=1000,
        )
    )

    response = await driver(http, fake_anthropic.base_url, max_output_tokens=256).complete(
        CONVERSATION, []
    )

    assert response.message == Message(role="assistant", content="Hello, world!")
    # Cache writes and reads are input tokens too.
    assert (response.usage.input_tokens, response.usage.output_tokens) == (1112, 3)
    [request] = fake_anthropic.requests
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["content-type"] == "application/json"
    assert "authorization" not in request.headers
    assert request.json == {
        "model": "claude-test",
        "max_tokens": 256,
        "system": "be brief",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    }


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
async def test_base_url_with_or_without_version(
    fake_anthropic: FakeAnthropic, http: httpx.AsyncClient, suffix: str
) -> None:
    fake_anthropic.enqueue_message(text("ok"))

    await driver(http, fake_anthropic.base_url + suffix, api_key=None).complete(CONVERSATION, [])

    [request] = fake_anthropic.requests
    assert request.path == "/v1/messages"
    assert "x-api-key" not in request.headers
    assert request.headers["anthropic-version"] == "2023-06-01"


def test_messages_url() -> None:
    assert messages_url("https://api.anthropic.com") == "https://api.anthropic.com/v1/messages"
    assert messages_url("https://api.anthropic.com/v1/") == "https://api.anthropic.com/v1/messages"
    assert messages_url("http://proxy/anthropic") == "http://proxy/anthropic/v1/messages"


async def test_tool_use_round_trip_through_the_agent(
    fake_anthropic: FakeAnthropic, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    arguments = {"path": "out/note.txt", "content": "from the módel"}
    fake_anthropic.enqueue_message(
        text("Writing it."),
        tool_use("write_file", arguments, "toolu_w"),
        tool_use("list_files", {}, "toolu_l"),
        input_tokens=20,
    )
    fake_anthropic.enqueue_message(text("All done."), input_tokens=40, output_tokens=2)
    spec = AgentTypeSpec(
        provider="anthropic",
        base_url=fake_anthropic.base_url,
        api_key_env="TEST_ANTHROPIC_KEY",
        model="claude-test",
        system_prompt="You write files.",
        capabilities=["files"],
    )
    tools = file_tools(Workspace(tmp_path))
    agent = Agent(spec, driver(http, spec.base_url), tools)
    state = agent.initial_state("write a note")

    records = [record async for record in agent.iterate(state)]

    assert (tmp_path / "out" / "note.txt").read_text() == "from the módel"
    assert state.final_answer == "All done."
    assert [r.kind for r in records] == ["tool_calls", "final"]
    assert [r.tool_names for r in records] == [["write_file", "list_files"], []]
    assert [r.tokens_used for r in records] == [25, 42]
    assert records[0].new_messages[0] == Message(
        role="assistant",
        content="Writing it.",
        tool_calls=[
            ToolCall(id="toolu_w", name="write_file", arguments=arguments),
            ToolCall(id="toolu_l", name="list_files"),
        ],
    )
    first, second = fake_anthropic.requests
    for request in (first, second):
        assert request.headers["x-api-key"] == KEY
        assert request.headers["anthropic-version"] == "2023-06-01"
        assert request.json["system"] == "You write files."
        assert request.json["max_tokens"] == 4096
    sent_tools = first.json["tools"]
    assert sent_tools == [
        {"name": t.name, "description": t.description, "input_schema": t.spec().parameters}
        for t in tools
    ]
    [write_tool] = [t for t in sent_tools if t["name"] == "write_file"]
    assert write_tool["description"].startswith("Create or overwrite a text file")
    assert write_tool["input_schema"]["required"] == ["path", "content"]
    assert second.json["tools"] == sent_tools
    prompt = {"role": "user", "content": [{"type": "text", "text": "write a note"}]}
    assert first.json["messages"] == [prompt]
    assert second.json["messages"] == [
        prompt,
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Writing it."},
                {"type": "tool_use", "id": "toolu_w", "name": "write_file", "input": arguments},
                {"type": "tool_use", "id": "toolu_l", "name": "list_files", "input": {}},
            ],
        },
        # Both results in one user turn: the API wants the roles to alternate.
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_w",
                    "content": "wrote 15 bytes to out/note.txt",
                },
                {"type": "tool_result", "tool_use_id": "toolu_l", "content": "out/\nout/note.txt"},
            ],
        },
    ]


async def test_tool_results_and_following_user_text_share_one_turn(
    fake_anthropic: FakeAnthropic, http: httpx.AsyncClient
) -> None:
    fake_anthropic.enqueue_message(text("ok"))
    conversation = [
        Message(role="system", content="rule one"),
        Message(role="system", content="rule two"),
        Message(role="user", content="start"),
        Message(
            role="assistant",
            tool_calls=[
                ToolCall(id="t1", name="read_file", arguments={"path": "a"}),
                ToolCall(id="t2", name="read_file", invalid_arguments="{oops"),
            ],
        ),
        Message(role="tool", tool_call_id="t1", name="read_file", content=""),
        Message(role="tool", tool_call_id="t2", name="read_file", content="error: bad"),
        Message(role="user", content="and then?"),
        Message(role="system", content="late note"),
        Message(role="assistant", content=""),  # nothing to send: dropped
        Message(role="user", content="go on"),
    ]

    await driver(http, fake_anthropic.base_url).complete(conversation, [])

    body = fake_anthropic.requests[0].json
    assert body["system"] == "rule one\n\nrule two"
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "start"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "t1", "name": "read_file", "input": {"path": "a"}},
                {"type": "tool_use", "id": "t2", "name": "read_file", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1"},
                {"type": "tool_result", "tool_use_id": "t2", "content": "error: bad"},
                {"type": "text", "text": "and then?"},
                {"type": "text", "text": "late note"},
                {"type": "text", "text": "go on"},
            ],
        },
    ]
    assert "tools" not in body


def test_tools_are_sent_with_input_schema() -> None:
    spec = ToolSpec(name="t", description="d", parameters={"type": "object", "properties": {}})

    body = request_body("m", 10, [Message(role="user", content="x")], [spec])

    assert "system" not in body
    assert body["tools"] == [
        {"name": "t", "description": "d", "input_schema": {"type": "object", "properties": {}}}
    ]


async def test_overloaded_then_success(
    fake_anthropic: FakeAnthropic, http: httpx.AsyncClient
) -> None:
    fake_anthropic.enqueue(529, error_body("Overloaded", "overloaded_error"))
    fake_anthropic.enqueue_message(text("finally"))

    response = await driver(http, fake_anthropic.base_url).complete(CONVERSATION, [])

    assert response.message.content == "finally"
    assert len(fake_anthropic.requests) == 2


async def test_rate_limit_honours_retry_after(
    fake_anthropic: FakeAnthropic, http: httpx.AsyncClient
) -> None:
    fake_anthropic.enqueue(
        429, error_body("Rate limited", "rate_limit_error"), headers={"retry-after": "0"}
    )
    fake_anthropic.enqueue_message(text("finally"))
    started = time.monotonic()

    # Without the header the backoff would wait 5 to 10 s.
    response = await driver(http, fake_anthropic.base_url, backoff_base=10).complete(
        CONVERSATION, []
    )

    assert response.message.content == "finally"
    assert len(fake_anthropic.requests) == 2
    assert time.monotonic() - started < 1


async def test_client_error_fails_at_once_without_the_key(
    fake_anthropic: FakeAnthropic, http: httpx.AsyncClient
) -> None:
    fake_anthropic.enqueue(400, error_body(f"messages.0: bad request for key {KEY}"))

    with pytest.raises(ProviderError) as raised:
        await driver(http, fake_anthropic.base_url).complete(CONVERSATION, [])

    assert len(fake_anthropic.requests) == 1
    assert raised.value.status_code == 400
    message = str(raised.value)
    assert "HTTP 400: messages.0: bad request for key [redacted]" in message
    assert "'claude-test'" in message
    assert KEY not in message


async def test_exhausted_retries(fake_anthropic: FakeAnthropic, http: httpx.AsyncClient) -> None:
    for _ in range(3):
        fake_anthropic.enqueue(503, error_body("unavailable", "api_error"))

    with pytest.raises(ProviderError) as raised:
        await driver(http, fake_anthropic.base_url, max_retries=2).complete(CONVERSATION, [])

    assert len(fake_anthropic.requests) == 3
    assert raised.value.status_code == 503
    assert str(raised.value).endswith("HTTP 503: unavailable (gave up after 3 attempts)")


async def test_timeout_then_success(fake_anthropic: FakeAnthropic, http: httpx.AsyncClient) -> None:
    fake_anthropic.enqueue(json=messages_response(text("too late")), delay=5)
    fake_anthropic.enqueue_message(text("in time"))

    response = await driver(http, fake_anthropic.base_url, timeout=0.2).complete(CONVERSATION, [])

    assert response.message.content == "in time"


async def test_connection_failures_are_retried_then_fail(http: httpx.AsyncClient) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    with pytest.raises(ProviderError, match="connection failed") as raised:
        await driver(http, f"http://127.0.0.1:{port}", max_retries=2).complete(CONVERSATION, [])

    assert raised.value.status_code is None
    assert "gave up after 3 attempts" in str(raised.value)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"not json at all", "malformed response: body is not JSON: 'not json at all'"),
        (json.dumps({"id": "x"}).encode(), "malformed response: content: Field required"),
        (json.dumps([1]).encode(), "malformed response: Input should be a valid dictionary"),
        (
            json.dumps({"content": [{"text": "hi"}]}).encode(),
            "malformed response: content.0.type: Field required",
        ),
        (
            json.dumps({"content": [{"type": "text"}]}).encode(),
            "malformed response: content.0: Value error, a text block needs text",
        ),
        (
            json.dumps({"content": [{"type": "tool_use", "id": "t", "input": {}}]}).encode(),
            "malformed response: content.0: Value error, a tool_use block needs a name",
        ),
        (
            json.dumps({"content": [], "usage": {"input_tokens": "many"}}).encode(),
            "malformed response: usage.input_tokens: Input should be a valid integer",
        ),
        (
            json.dumps(error_body("Overloaded", "overloaded_error")).encode(),
            "provider error: Overloaded",
        ),
    ],
)
async def test_malformed_responses(
    fake_anthropic: FakeAnthropic, http: httpx.AsyncClient, body: bytes, expected: str
) -> None:
    fake_anthropic.enqueue(200, body=body)

    with pytest.raises(ProviderError) as raised:
        await driver(http, fake_anthropic.base_url).complete(CONVERSATION, [])

    assert expected in str(raised.value)
    assert raised.value.status_code == 200
    assert len(fake_anthropic.requests) == 1


async def test_max_tokens_keeps_the_truncated_text(
    fake_anthropic: FakeAnthropic, http: httpx.AsyncClient
) -> None:
    fake_anthropic.enqueue_message(text("The answer is cut"), stop_reason="max_tokens")

    response = await driver(http, fake_anthropic.base_url).complete(CONVERSATION, [])

    assert response.message == Message(role="assistant", content="The answer is cut")


async def test_tool_use_cut_off_by_max_tokens_is_not_run(
    fake_anthropic: FakeAnthropic, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    fake_anthropic.enqueue_message(
        tool_use("list_files", {}, "toolu_1"),
        tool_use("write_file", {"path": "a.txt", "content": "half"}, "toolu_2"),
        stop_reason="max_tokens",
    )
    fake_anthropic.enqueue_message(text("Giving up."))
    spec = AgentTypeSpec(provider="anthropic", api_key_env=None, capabilities=["files"])
    agent = Agent(spec, driver(http, fake_anthropic.base_url), file_tools(Workspace(tmp_path)))
    state = agent.initial_state("go")

    records = [record async for record in agent.iterate(state)]

    complete, cut = records[0].new_messages[0].tool_calls
    assert complete.invalid_arguments is None
    assert cut.arguments == {}
    assert cut.invalid_arguments is not None
    assert cut.invalid_arguments.startswith("(cut off: the reply reached its max_tokens limit)")
    assert not (tmp_path / "a.txt").exists()
    results = [m.content or "" for m in records[0].new_messages[1:]]
    assert results[0] == "(empty directory)"
    assert results[1] == (
        "error: invalid JSON arguments for write_file, expected an object: (cut off: the "
        'reply reached its max_tokens limit) {"path": "a.txt", "content": "half"}'
    )
    assert state.final_answer == "Giving up."


async def test_odd_tool_input_unknown_blocks_and_missing_usage(
    fake_anthropic: FakeAnthropic, http: httpx.AsyncClient
) -> None:
    body = {
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "tool_use", "id": "toolu_1", "name": "t", "input": ["x"]},
            {"type": "tool_use", "name": "t"},
        ],
        "stop_reason": "tool_use",
    }
    fake_anthropic.enqueue(json=body)

    response = await driver(http, fake_anthropic.base_url).complete(CONVERSATION, [])

    assert response.message == Message(
        role="assistant",
        tool_calls=[
            ToolCall(id="toolu_1", name="t", invalid_arguments='["x"]'),
            # No id (a compatible server): a deterministic one keeps the result matched.
            ToolCall(id="toolu_0_1", name="t"),
        ],
    )
    assert response.usage.total_tokens == 0
