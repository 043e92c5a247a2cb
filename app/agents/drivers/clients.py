"""The HTTP client model calls go through: one aiohttp session per worker process.

A worker keeps hundreds of model calls in flight, so the client's own CPU per call bounds how
many executions one process can step. httpx spends about 0.6 ms of CPU on each call (its
request and response models, h11 and anyio in pure Python, and httpcore's connection pool,
which re-scans every connection whenever a request starts or ends); aiohttp, whose HTTP parser
and connection pool are C and per-host queues, about 0.15 ms (``bench/README.md``). The drivers
still see ``httpx.Response`` objects and httpx's exception tree (:class:`ModelClient`), so a plain
``httpx.AsyncClient`` (with a ``MockTransport`` in tests, say) works in its place.

Bounds: at most ``max_connections`` connections, ``max_connections_per_host`` to one provider
host (0: no bound of its own), and ``max_response_bytes`` of decompressed body per reply.
"""

from __future__ import annotations

import functools
import json as json_module
import ssl
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import aiohttp
import certifi
import httpx
from aiohttp.http_exceptions import ContentEncodingError
from yarl import URL

# A chat completion is kilobytes; a reply this big is a broken or hostile server.
MAX_RESPONSE_BYTES = 32 * 2**20

# Headers that describe the body as it came over the wire, not as the driver gets it: aiohttp
# has already removed the chunking and the compression.
_WIRE_HEADERS = frozenset({b"content-encoding", b"content-length", b"transfer-encoding"})


class ModelClient(Protocol):
    """What the drivers need of an HTTP client (``httpx.AsyncClient`` is one)."""

    async def post(
        self,
        url: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response: ...


class ModelHttpClient:
    """Model calls over one aiohttp session, answered as ``httpx.Response`` objects.

    The session is opened on the first call (it belongs to the running event loop). Proxies
    come from the environment (:func:`environment_proxy`) unless ``trust_env`` is false;
    redirects
    are not followed. Failures raise httpx's exceptions: a timeout ``httpx.TimeoutException``, a
    refused or dropped connection ``httpx.TransportError``, a URL that is not http(s)
    ``httpx.UnsupportedProtocol``, an oversized or undecodable reply ``httpx.DecodingError``.
    """

    def __init__(
        self,
        max_connections: int,
        *,
        max_connections_per_host: int = 0,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        trust_env: bool = True,
    ) -> None:
        self.max_connections = max_connections
        self.max_connections_per_host = max_connections_per_host
        self.max_response_bytes = max_response_bytes
        self.trust_env = trust_env
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[tuple[str, str | None], URL | None] = {}

    async def post(
        self,
        url: str,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        # Encoded as httpx encodes ``json=``: compact, UTF-8, no NaN.
        body = json_module.dumps(
            json, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode()
        sent = {"Content-Type": "application/json", **(headers or {})}
        # As httpx applies ``timeout``: to getting a connection and to each read, not in total
        # (the drivers bound the whole exchange themselves).
        limits = aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout)
        proxy = self._proxy(url)
        with _as_httpx_errors():
            async with self._open().post(
                url,
                data=body,
                headers=sent,
                timeout=limits,
                allow_redirects=False,
                proxy=proxy,
            ) as response:
                content = await self._read(response)
                kept = [(k, v) for k, v in response.raw_headers if k.lower() not in _WIRE_HEADERS]
                return httpx.Response(response.status, headers=kept, content=content)

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_any():
            size += len(chunk)
            if size > self.max_response_bytes:
                raise httpx.DecodingError(f"response body over {self.max_response_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _proxy(self, url: str) -> URL | None:
        """The environment's proxy for ``url``, looked up once per scheme and host (aiohttp's
        own ``trust_env`` looks it up, and ``.netrc``, in a thread on every request)."""
        if not self.trust_env:
            return None
        try:
            target = URL(url)
        except ValueError as exc:
            raise httpx.InvalidURL(f"invalid URL {url!r}: {exc}") from exc
        key = (target.scheme, target.host)
        if key not in self._proxies:
            self._proxies[key] = environment_proxy(target)
        return self._proxies[key]

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.max_connections,
                limit_per_host=self.max_connections_per_host,
                ssl=shared_tls_context(),
            )
            # No cookie jar: what one execution's provider sets must not reach the next call.
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


@contextmanager
def _as_httpx_errors() -> Iterator[None]:
    """aiohttp's failures as the httpx exceptions the drivers handle."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:
        raise httpx.ConnectTimeout(str(exc) or "connect timed out") from exc
    except aiohttp.ServerTimeoutError as exc:
        raise httpx.ReadTimeout(str(exc) or "read timed out") from exc
    except (aiohttp.NonHttpUrlClientError, aiohttp.InvalidURL) as exc:
        raise httpx.UnsupportedProtocol(f"not an http(s) URL: {exc}") from exc
    except aiohttp.ClientConnectorError as exc:
        raise httpx.ConnectError(str(exc)) from exc
    except aiohttp.ClientPayloadError as exc:
        if isinstance(exc.__cause__, ContentEncodingError):  # as httpx: not worth a retry
            raise httpx.DecodingError(str(exc.__cause__.message)) from exc
        raise httpx.RemoteProtocolError(str(exc) or type(exc).__name__) from exc
    except aiohttp.ClientResponseError as exc:
        raise httpx.RemoteProtocolError(str(exc) or type(exc).__name__) from exc
    except aiohttp.ClientError as exc:  # the connection dropped mid-exchange
        raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
    except ValueError as exc:  # a header aiohttp refuses to send (a newline in a key, say)
        raise httpx.LocalProtocolError(str(exc)) from exc


def environment_proxy(target: URL) -> URL | None:
    """The proxy the environment names for ``target``, read as httpx reads it: the scheme's
    (``HTTPS_PROXY``, ``HTTP_PROXY``), else ``ALL_PROXY``; none for a host in ``NO_PROXY``.
    Credentials in the proxy's URL go to it as ``Proxy-Authorization`` (aiohttp does that)."""
    if target.host is not None and urllib.request.proxy_bypass(target.host):
        return None
    proxies = urllib.request.getproxies()
    named = proxies.get(target.scheme) or proxies.get("all")
    if not named:
        return None
    return URL(named if "://" in named else f"http://{named}")


@functools.cache
def shared_tls_context() -> ssl.SSLContext:
    """One TLS context (httpx's default CA bundle) for every client of the process: each
    client would otherwise load the bundle again, about a megabyte and 25 ms apiece."""
    return ssl.create_default_context(cafile=certifi.where())
