"""The OpenAI driver over real HTTP, against the fake chat-completions server."""

import json
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.agents.drivers.openai import OpenAIChatDriver, parse_retry_after
from app.agents.errors import ProviderError
from app.agents.registry import build_agent
from app.agents.spec import AgentTypeSpec
from app.agents.state import Message
from app.agents.tools import ToolSpec
from tests.agents.conftest import CONVERSATION
from tests.fixtures.openai_server import FakeOpenAI, chat_completion, error_body, tool_call

KEY = "sk-test-0123456789"


def driver(
    http: httpx.AsyncClient, base_url: str, *, api_key: str | None = KEY, **options: Any
) -> OpenAIChatDriver:
    settings: dict[str, Any] = {"timeout": 5.0, "max_retries": 3, "backoff_base": 0.001}
    settings.update(options)
    return OpenAIChatDriver(http, base_url=base_url, api_key=api_key, model="gpt-test", **settings)


async def test_plain_answer(fake_openai: FakeOpenAI, http: httpx.AsyncClient) -> None:
    fake_openai.enqueue_completion("Hello!", prompt_tokens=12, completion_tokens=3)

    response = await driver(http, fake_openai.base_url).complete(CONVERSATION, [])

    assert response.message == Message(role="assistant", content="Hello!")
    assert (response.usage.input_tokens, response.usage.output_tokens) == (12, 3)
    [request] = fake_openai.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"
    assert request.json == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
        ],
    }


async def test_no_key_no_authorization_header(
    fake_openai: FakeOpenAI, http: httpx.AsyncClient
) -> None:
    fake_openai.enqueue_completion("ok")

    await driver(http, fake_openai.base_url + "/", api_key=None).complete(CONVERSATION, [])

    [request] = fake_openai.requests
    assert "authorization" not in request.headers
    assert request.path == "/v1/chat/completions"


async def test_tool_call_round_trip_through_the_agent(
    fake_openai: FakeOpenAI, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    arguments = {"path": "out/note.txt", "content": "from the módel"}
    fake_openai.enqueue_completion(
        None, [tool_call("write_file", arguments, "call_abc")], prompt_tokens=20
    )
    fake_openai.enqueue_completion("All done.", prompt_tokens=40, completion_tokens=2)
    spec = AgentTypeSpec(
        provider="openai",
        base_url=fake_openai.base_url,
        api_key_env="TEST_OPENAI_KEY",
        model="gpt-test",
        system_prompt="You write files.",
        capabilities=["files"],
    )
    agent = build_agent(
        spec, workspace=tmp_path / "ws", http=http, environ={"TEST_OPENAI_KEY": KEY}
    )
    state = agent.initial_state("write a note")

    records = [record async for record in agent.iterate(state)]

    assert (tmp_path / "ws" / "out" / "note.txt").read_text() == "from the módel"
    assert state.final_answer == "All done."
    assert [r.kind for r in records] == ["tool_calls", "final"]
    assert [r.tokens_used for r in records] == [25, 42]
    assert state.usage.total_tokens == 67
    first, second = fake_openai.requests
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in (first, second))
    tools = first.json["tools"]
    assert [t["function"]["name"] for t in tools] == [
        "read_file",
        "write_file",
        "edit_file",
        "list_files",
        "search_files",
    ]
    assert all(t["type"] == "function" for t in tools)
    write_tool = tools[1]["function"]
    assert write_tool["description"].startswith("Create or overwrite a text file")
    assert write_tool["parameters"]["required"] == ["path", "content"]
    assert first.json["messages"] == [
        {"role": "system", "content": "You write files."},
        {"role": "user", "content": "write a note"},
    ]
    assert second.json["tools"] == tools
    assert second.json["messages"][2:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_abc",
                    "type": "function",
                    "function": {
                        "name": "write_file",
                        "arguments": json.dumps(arguments, ensure_ascii=False),
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc", "content": "wrote 15 bytes to out/note.txt"},
    ]
    arguments_text = second.json["messages"][2]["tool_calls"][0]["function"]["arguments"]
    assert json.loads(arguments_text) == arguments


async def test_unusable_tool_arguments_are_answered_with_an_error(
    fake_openai: FakeOpenAI, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    fake_openai.enqueue_completion(
        "Let me look.",
        [
            tool_call("list_files", "", "call_1"),
            tool_call("write_file", '{"path": "x.txt", "content": ', "call_2"),
            tool_call("write_file", '["x.txt"]', "call_3"),
            {"type": "function", "function": {"name": "list_files", "arguments": "{}"}},
        ],
    )
    fake_openai.enqueue_completion("Sorry.")
    spec = AgentTypeSpec(base_url=fake_openai.base_url, api_key_env=None, capabilities=["files"])
    agent = build_agent(spec, workspace=tmp_path, http=http, environ={})
    state = agent.initial_state("go")

    records = [record async for record in agent.iterate(state)]

    results = [m.content for m in records[0].new_messages[1:]]
    assert results == [
        "(empty directory)",
        'error: invalid JSON arguments for write_file, expected an object: {"path": "x.txt", '
        '"content": ',
        'error: invalid JSON arguments for write_file, expected an object: ["x.txt"]',
        "(empty directory)",
    ]
    assert not (tmp_path / "x.txt").exists()
    calls = records[0].new_messages[0].tool_calls
    assert calls[1].invalid_arguments == '{"path": "x.txt", "content": '
    # A missing id gets a deterministic one, so the result still matches its call.
    assert calls[3].id == "call_0_3"
    sent_back = fake_openai.requests[1].json["messages"][2]
    assert [c["function"]["arguments"] for c in sent_back["tool_calls"]] == ["{}"] * 4
    assert [m["tool_call_id"] for m in fake_openai.requests[1].json["messages"][3:]] == [
        "call_1",
        "call_2",
        "call_3",
        "call_0_3",
    ]
    assert state.final_answer == "Sorry."


async def test_rate_limit_honours_retry_after(
    fake_openai: FakeOpenAI, http: httpx.AsyncClient
) -> None:
    fake_openai.enqueue(429, error_body("Rate limit reached"), headers={"Retry-After": "1"})
    fake_openai.enqueue_completion("finally")
    started = time.monotonic()

    response = await driver(http, fake_openai.base_url).complete(CONVERSATION, [])

    waited = time.monotonic() - started
    assert response.message.content == "finally"
    assert len(fake_openai.requests) == 2
    assert 0.95 <= waited < 2


async def test_retry_after_is_capped_at_backoff_max(
    fake_openai: FakeOpenAI, http: httpx.AsyncClient
) -> None:
    fake_openai.enqueue(429, error_body("slow down"), headers={"Retry-After": "3600"})
    fake_openai.enqueue_completion("ok")
    started = time.monotonic()

    await driver(http, fake_openai.base_url, backoff_max=0.05).complete(CONVERSATION, [])

    assert time.monotonic() - started < 1
    assert len(fake_openai.requests) == 2


async def test_server_errors_are_retried(fake_openai: FakeOpenAI, http: httpx.AsyncClient) -> None:
    fake_openai.enqueue(503, error_body("overloaded"))
    fake_openai.enqueue(503, body=b"<html>bad gateway</html>")
    fake_openai.enqueue_completion("ok")

    response = await driver(http, fake_openai.base_url).complete(CONVERSATION, [])

    assert response.message.content == "ok"
    assert len(fake_openai.requests) == 3
    assert fake_openai.requests[0].json == fake_openai.requests[2].json


async def test_client_error_fails_at_once_without_leaking_the_key(
    fake_openai: FakeOpenAI, http: httpx.AsyncClient
) -> None:
    fake_openai.enqueue(401, error_body(f"Incorrect API key provided: {KEY}."))
    fake_openai.enqueue_completion("never served")

    with pytest.raises(ProviderError) as raised:
        await driver(http, fake_openai.base_url).complete(CONVERSATION, [])

    message = str(raised.value)
    assert len(fake_openai.requests) == 1
    assert raised.value.status_code == 401
    assert "HTTP 401: Incorrect API key provided: [redacted]." in message
    assert "gpt-test" in message
    assert KEY not in message
    assert KEY not in repr(raised.value.args)


async def test_bad_request_reports_the_provider_message(
    fake_openai: FakeOpenAI, http: httpx.AsyncClient
) -> None:
    fake_openai.enqueue(400, error_body("Invalid value for 'messages'"))

    with pytest.raises(ProviderError, match=r"HTTP 400: Invalid value for 'messages'$"):
        await driver(http, fake_openai.base_url).complete(CONVERSATION, [])

    assert len(fake_openai.requests) == 1


async def test_exhausted_quota_is_not_retried(
    fake_openai: FakeOpenAI, http: httpx.AsyncClient
) -> None:
    fake_openai.enqueue(429, error_body("You exceeded your current quota", "insufficient_quota"))

    with pytest.raises(ProviderError, match="HTTP 429: You exceeded your current quota"):
        await driver(http, fake_openai.base_url).complete(CONVERSATION, [])

    assert len(fake_openai.requests) == 1


async def test_gives_up_after_max_retries(fake_openai: FakeOpenAI, http: httpx.AsyncClient) -> None:
    for _ in range(3):
        fake_openai.enqueue(502, error_body("upstream unavailable"))

    with pytest.raises(ProviderError) as raised:
        await driver(http, fake_openai.base_url, max_retries=2).complete(CONVERSATION, [])

    assert len(fake_openai.requests) == 3
    assert raised.value.status_code == 502
    assert str(raised.value).endswith("HTTP 502: upstream unavailable (gave up after 3 attempts)")


async def test_no_retries_means_one_attempt(
    fake_openai: FakeOpenAI, http: httpx.AsyncClient
) -> None:
    fake_openai.enqueue(500, body=b"")

    with pytest.raises(ProviderError, match=r"HTTP 500: Internal Server Error \(gave up after 1"):
        await driver(http, fake_openai.base_url, max_retries=0).complete(CONVERSATION, [])

    assert len(fake_openai.requests) == 1


async def test_no_wait_after_the_last_attempt(
    fake_openai: FakeOpenAI, http: httpx.AsyncClient
) -> None:
    fake_openai.enqueue(429, error_body("Rate limit reached"), headers={"Retry-After": "5"})
    started = time.monotonic()

    with pytest.raises(ProviderError, match="Rate limit reached"):
        await driver(http, fake_openai.base_url, max_retries=0).complete(CONVERSATION, [])

    assert time.monotonic() - started < 1


async def test_request_timeout_is_retried_then_fails(
    fake_openai: FakeOpenAI, http: httpx.AsyncClient
) -> None:
    fake_openai.enqueue(json=chat_completion("too late"), delay=5)
    fake_openai.enqueue(json=chat_completion("too late"), delay=5)
    started = time.monotonic()

    with pytest.raises(ProviderError) as raised:
        await driver(http, fake_openai.base_url, timeout=0.1, max_retries=1).complete(
            CONVERSATION, []
        )

    assert time.monotonic() - started < 1
    assert len(fake_openai.requests) == 2
    assert raised.value.status_code is None
    assert str(raised.value).endswith("no response within 0.1s (gave up after 2 attempts)")


async def test_timeout_then_success(fake_openai: FakeOpenAI, http: httpx.AsyncClient) -> None:
    fake_openai.enqueue(json=chat_completion("too late"), delay=5)
    fake_openai.enqueue_completion("in time")

    response = await driver(http, fake_openai.base_url, timeout=0.2).complete(CONVERSATION, [])

    assert response.message.content == "in time"


async def test_connection_failures_are_retried_then_fail(http: httpx.AsyncClient) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    with pytest.raises(ProviderError, match="connection failed") as raised:
        await driver(http, f"http://127.0.0.1:{port}/v1", max_retries=2).complete(CONVERSATION, [])

    assert "gave up after 3 attempts" in str(raised.value)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"not json at all", "malformed response: body is not JSON: 'not json at all'"),
        (json.dumps({"choices": []}).encode(), "malformed response: choices: List should have"),
        (json.dumps({"id": "x"}).encode(), "malformed response: choices: Field required"),
        (json.dumps([1, 2]).encode(), "malformed response: Input should be a valid dictionary"),
        (
            json.dumps({"choices": [{"message": {"content": 5}}]}).encode(),
            "malformed response: choices.0.message.content: Input should be a valid string",
        ),
        (
            json.dumps(
                {"choices": [{"message": {"tool_calls": [{"id": "c", "function": {}}]}}]}
            ).encode(),
            "malformed response: choices.0.message.tool_calls.0.function.name: Field required",
        ),
        (json.dumps(error_body("model overloaded")).encode(), "provider error: model overloaded"),
    ],
)
async def test_malformed_responses(
    fake_openai: FakeOpenAI, http: httpx.AsyncClient, body: bytes, expected: str
) -> None:
    fake_openai.enqueue(200, body=body)

    with pytest.raises(ProviderError) as raised:
        await driver(http, fake_openai.base_url).complete(CONVERSATION, [])

    assert expected in str(raised.value)
    assert len(fake_openai.requests) == 1


async def test_refusal_and_missing_usage(fake_openai: FakeOpenAI, http: httpx.AsyncClient) -> None:
    body = {"choices": [{"message": {"role": "assistant", "content": None, "refusal": "No."}}]}
    fake_openai.enqueue(json=body)

    response = await driver(http, fake_openai.base_url).complete(CONVERSATION, [])

    assert response.message.content == "No."
    assert response.usage.total_tokens == 0


async def test_tools_are_sent_as_functions(
    fake_openai: FakeOpenAI, http: httpx.AsyncClient
) -> None:
    fake_openai.enqueue_completion("ok")
    spec = ToolSpec(name="t", description="d", parameters={"type": "object", "properties": {}})

    await driver(http, fake_openai.base_url).complete(CONVERSATION, [spec])

    assert fake_openai.requests[0].json["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "t",
                "description": "d",
                "parameters": {"type": "object", "properties": {}},
            },
        }
    ]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "2"}, 2.0),
        ({"Retry-After": "0.5"}, 0.5),
        ({"Retry-After": "-3"}, 0.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:30 GMT"}, 30.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:27:00 GMT"}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({"Retry-After": "nan"}, None),
        ({"retry-after-ms": "250", "Retry-After": "9"}, 0.25),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    now = datetime(2015, 10, 21, 7, 28, 0, tzinfo=UTC)

    assert parse_retry_after(httpx.Headers(headers), now=now) == expected
