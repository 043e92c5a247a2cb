"""The workers' model-call client: warm connections, bounded connections and replies, httpx's
errors (the driver tests run every driver through it too, see ``conftest.http``)."""

from __future__ import annotations

import asyncio
import gzip
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from app.agents.drivers.clients import ModelHttpClient
from app.agents.drivers.openai import OpenAIChatDriver
from app.agents.errors import ProviderError
from tests.agents.conftest import CONVERSATION
from tests.fixtures.local_server import serve_locally


def echo_app(hold: asyncio.Event | None = None, seen: list[int] | None = None) -> Starlette:
    """Answers each request with the client port it came from (one port, one connection)."""

    async def echo(request: Request) -> JSONResponse:
        assert request.client is not None
        if seen is not None:
            seen.append(request.client.port)
        if hold is not None:
            await hold.wait()
        return JSONResponse({"port": request.client.port, "body": await request.json()})

    return Starlette(routes=[Route("/v1/chat", echo, methods=["POST"])])


def client() -> ModelHttpClient:
    return ModelHttpClient(1000, trust_env=False)


async def test_calls_one_after_another_reuse_one_connection() -> None:
    models = client()
    async with serve_locally(echo_app(), lifespan="off") as base:
        ports = {(await models.post(f"{base}/v1/chat", json={})).json()["port"] for _ in range(30)}
    await models.aclose()
    assert len(ports) == 1


async def test_the_body_is_sent_as_json_and_the_reply_read_as_httpx_reads_it() -> None:
    models = client()
    async with serve_locally(echo_app(), lifespan="off") as base:
        response = await models.post(
            f"{base}/v1/chat", json={"text": "naïve ☃", "n": [1, 2]}, headers={"X-Key": "k"}
        )
    await models.aclose()
    assert isinstance(response, httpx.Response)
    assert response.is_success
    assert response.headers["content-type"] == "application/json"
    assert response.json()["body"] == {"text": "naïve ☃", "n": [1, 2]}


@pytest.mark.parametrize(("total", "per_host"), [(5, 0), (1000, 3)])
async def test_concurrent_calls_wait_for_a_free_connection(total: int, per_host: int) -> None:
    hold = asyncio.Event()
    seen: list[int] = []
    models = ModelHttpClient(total, max_connections_per_host=per_host, trust_env=False)
    bound = per_host or total
    async with serve_locally(echo_app(hold, seen), lifespan="off") as base:
        calls = [asyncio.create_task(models.post(f"{base}/v1/chat", json={})) for _ in range(12)]
        for _ in range(100):
            if len(seen) >= bound:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # time for any call over the bound to arrive too
        arrived_while_held = len(seen)
        hold.set()
        ports = [(await call).json()["port"] for call in calls]
    await models.aclose()
    assert arrived_while_held == bound
    assert len(set(ports)) == bound  # the others waited, then reused those connections


async def test_a_compressed_reply_is_decompressed() -> None:
    async def gzipped(request: Request) -> Response:
        body = gzip.compress(b'{"answer": "' + b"x" * 10_000 + b'"}')
        return Response(body, headers={"Content-Encoding": "gzip"}, media_type="application/json")

    models = client()
    app = Starlette(routes=[Route("/v1/chat", gzipped, methods=["POST"])])
    async with serve_locally(app, lifespan="off") as base:
        response = await models.post(f"{base}/v1/chat", json={})
    await models.aclose()
    assert response.json() == {"answer": "x" * 10_000}
    assert "content-encoding" not in response.headers


async def endless(request: Request) -> StreamingResponse:
    """A hostile provider: a reply that never ends."""

    async def chunks() -> AsyncIterator[bytes]:
        while True:
            yield b"[" * 65536
            await asyncio.sleep(0)

    return StreamingResponse(chunks(), media_type="application/json")


async def test_failures_raise_the_httpx_errors_the_drivers_handle() -> None:
    models = ModelHttpClient(10, trust_env=False)
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(httpx.ConnectError):
        await models.post(f"http://127.0.0.1:{port}/v1/chat", json={})
    with pytest.raises(httpx.UnsupportedProtocol):
        await models.post("ftp://127.0.0.1/v1/chat", json={})

    hold = asyncio.Event()
    async with serve_locally(echo_app(hold), lifespan="off") as base:
        with pytest.raises(httpx.ReadTimeout):
            await models.post(f"{base}/v1/chat", json={}, timeout=0.2)
        hold.set()
    await models.aclose()


def proxy_app() -> Starlette:
    """Stands in for an HTTP proxy: answers with the host the request was meant for."""

    async def relay(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "host": request.headers["host"],
                "cookie": request.headers.get("cookie"),
                "proxy_authorization": request.headers.get("proxy-authorization"),
            }
        )

    return Starlette(routes=[Route("/v1/chat", relay, methods=["POST"])])


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "ALL_PROXY"])
async def test_proxies_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    for name in ("HTTP_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    async with serve_locally(proxy_app(), lifespan="off") as proxy:
        monkeypatch.setenv(variable, proxy.replace("http://", "http://user:secret@"))
        models = ModelHttpClient(10)
        reply = (await models.post("http://models.invalid/v1/chat", json={})).json()
        await models.aclose()
        assert reply["host"] == "models.invalid"
        assert reply["proxy_authorization"] == "Basic dXNlcjpzZWNyZXQ="  # user:secret

        monkeypatch.setenv("NO_PROXY", "models.invalid")
        direct = ModelHttpClient(10)
        with pytest.raises(httpx.ConnectError):  # no proxy: the name does not resolve
            await direct.post("http://models.invalid/v1/chat", json={})
        await direct.aclose()


async def test_cookies_a_provider_sets_are_not_sent_back() -> None:
    async def sets_cookie(request: Request) -> JSONResponse:
        response = JSONResponse({"cookie": request.headers.get("cookie")})
        response.set_cookie("session", "execution-one")
        return response

    models = client()
    app = Starlette(routes=[Route("/v1/chat", sets_cookie, methods=["POST"])])
    async with serve_locally(app, lifespan="off") as base:
        # A host name: a cookie jar would ignore cookies from a bare IP address anyway.
        url = base.replace("127.0.0.1", "localhost") + "/v1/chat"
        first = await models.post(url, json={})
        second = await models.post(url, json={})
    await models.aclose()
    assert "session=execution-one" in first.headers["set-cookie"]
    assert second.json()["cookie"] is None


async def bad_gzip(request: Request) -> Response:
    """A reply whose body is not what its Content-Encoding says."""
    body = b"\x1f\x8b\x08\x00 this is not gzip" * 10
    return Response(body, headers={"Content-Encoding": "gzip"}, media_type="application/json")


@pytest.mark.parametrize(
    ("reply", "raised", "reported"),
    [
        (endless, "over 1048576 bytes", "response body over 1048576 bytes"),
        (bad_gzip, "content-encoding: gzip", "Can not decode content-encoding: gzip"),
    ],
)
async def test_a_reply_that_cannot_be_read_is_malformed_and_not_retried(
    reply: Callable[[Request], Awaitable[Response]], raised: str, reported: str
) -> None:
    requests: list[Request] = []

    async def counted(request: Request) -> Response:
        requests.append(request)
        return await reply(request)

    models = ModelHttpClient(10, max_response_bytes=2**20, trust_env=False)
    app = Starlette(routes=[Route("/v1/chat/completions", counted, methods=["POST"])])
    async with serve_locally(app, lifespan="off") as base:
        with pytest.raises(httpx.DecodingError, match=raised):
            await models.post(f"{base}/v1/chat/completions", json={})
        driver = OpenAIChatDriver(
            models, base_url=f"{base}/v1", api_key=None, model="m", timeout=10, max_retries=3
        )
        with pytest.raises(ProviderError, match=f"malformed response: {reported}"):
            await driver.complete(CONVERSATION, [])
    await models.aclose()
    assert len(requests) == 2  # one each: the driver did not retry


async def test_bad_urls_and_headers_are_the_errors_httpx_would_raise() -> None:
    models = ModelHttpClient(10)  # trust_env: the URL is parsed for the proxy lookup too
    with pytest.raises(httpx.InvalidURL):
        await models.post("http://[::1/v1/chat", json={})
    driver = OpenAIChatDriver(
        models, base_url="http://[::1/v1", api_key=None, model="m", timeout=10, max_retries=3
    )
    with pytest.raises(ProviderError, match="invalid base URL"):
        await driver.complete(CONVERSATION, [])
    async with serve_locally(echo_app(), lifespan="off") as base:
        with pytest.raises(httpx.LocalProtocolError):
            await models.post(f"{base}/v1/chat", json={}, headers={"X-Api-Key": "key\n"})
    await models.aclose()
