"""Where webhooks may go: http(s) URLs whose host resolves only to public addresses, so a
subscriber cannot aim the service at itself, its network, or a cloud metadata endpoint."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

MAX_URL_CHARS = 2000


class RefusedURL(ValueError):
    """The URL is not one webhooks may be sent to; the message says why."""


def check_url_form(url: str) -> str:
    """``url`` if it is an absolute http(s) URL with a host (no credentials in it)."""
    if len(url) > MAX_URL_CHARS:
        raise RefusedURL(f"the URL is longer than {MAX_URL_CHARS} characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise RefusedURL("only http and https URLs")
    if not parts.hostname:
        raise RefusedURL("the URL has no host")
    if parts.username or parts.password:
        raise RefusedURL("credentials in the URL are not allowed; use the signature")
    try:
        _ = parts.port  # parsed on access: "http://host:99999/" fails here
    except ValueError:
        raise RefusedURL("the URL's port is not a number from 0 to 65535") from None
    return url


async def check_destination(url: str, *, allow_private_networks: bool) -> None:
    """Refuse ``url`` unless every address its host resolves to is public (or private ones are
    allowed). Resolved again before every attempt: a name that moves to a private address is
    refused then."""
    check_url_form(url)
    if allow_private_networks:
        return
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise RefusedURL(f"cannot resolve {host}: {exc.strerror or exc}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global or address.is_multicast:
            raise RefusedURL(f"{host} resolves to a non-public address ({address})")
