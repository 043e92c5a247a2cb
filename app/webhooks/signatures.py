"""Verifying inbound webhook signatures over the raw request body.

Two schemes, each accepting several secrets at once so a secret can rotate without downtime:

- Standard Webhooks (https://www.standardwebhooks.com/): ``webhook-id``, ``webhook-timestamp``
  and ``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` (a
  space-separated list, any entry may match), secrets in ``whsec_<base64>`` form.
- GitHub: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>``, the message id in
  ``X-GitHub-Delivery``.

A request that fails raises ``SignatureError``, whose reason is safe to return and log; a
misconfigured secret raises ``ValueError`` (neither message ever quotes a secret or a signature).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Mapping, Sequence

DEFAULT_TOLERANCE = 300.0
"""Seconds a ``webhook-timestamp`` may lie from now, in either direction (the spec's 5 minutes)."""

MAX_SIGNATURES = 10
"""Entries of a ``webhook-signature`` header examined; the rest are ignored, so a huge header
costs little."""

_SECRET_PREFIX = "whsec_"
# The spec: "Random. At least 24 bytes (192 bits, 512 maximum)".
_MIN_SECRET_BYTES = 24
_MAX_SECRET_BYTES = 512
_SIGNATURE_BYTES = hashlib.sha256().digest_size
# Unix seconds as ASCII digits only: int() alone would also take "+1", " 1", "1_0" and non-ASCII
# digits, none of which the sender signed as such.
_TIMESTAMP = re.compile(r"[0-9]{1,15}")
_GITHUB_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")


class SignatureError(Exception):
    """The request's signature headers do not verify; ``reason`` is short and safe to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse_standard_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; call it on settings to fail early."""
    if not secret.startswith(_SECRET_PREFIX):
        raise ValueError("a Standard Webhooks secret must start with 'whsec_'")
    encoded = secret.removeprefix(_SECRET_PREFIX)
    try:
        # Padding is optional in the wild; anything else that is not base64 is refused.
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except ValueError:
        raise ValueError("a Standard Webhooks secret must be 'whsec_' and base64") from None
    if not _MIN_SECRET_BYTES <= len(key) <= _MAX_SECRET_BYTES:
        raise ValueError(
            f"a Standard Webhooks secret must decode to {_MIN_SECRET_BYTES} to "
            f"{_MAX_SECRET_BYTES} bytes"
        )
    return key


def sign_standard(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value (``v1,<base64>``) a sender puts on a message."""
    mac = _standard_mac(parse_standard_secret(secret), message_id, str(timestamp), body)
    return "v1," + base64.b64encode(mac).decode()


def verify_standard(
    secrets: Sequence[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> str:
    """Check a Standard Webhooks request signed with one of ``secrets``; return ``webhook-id``."""
    keys = [parse_standard_secret(secret) for secret in _configured(secrets)]
    values = _lowercase_names(headers)
    message_id = _header(values, "webhook-id")
    timestamp = _header(values, "webhook-timestamp")
    signature = _header(values, "webhook-signature")
    # With a "." in the id, "{id}.{timestamp}.{body}" could be split differently and one valid
    # signature replayed under another id, timestamp and body (the spec forbids it).
    if "." in message_id:
        raise SignatureError("webhook-id must not contain '.'")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise SignatureError("webhook-timestamp is not an integer")
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > tolerance:
        raise SignatureError("timestamp outside the tolerance")
    candidates = _v1_signatures(signature)
    if not candidates:
        raise SignatureError("no v1 signature in webhook-signature header")
    for key in keys:
        expected = _standard_mac(key, message_id, timestamp, body)
        if any(hmac.compare_digest(expected, candidate) for candidate in candidates):
            return message_id
    raise SignatureError("no signature matches")


def sign_github(secret: str, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` header value (``sha256=<hex>``) GitHub sends with ``body``."""
    return "sha256=" + _github_mac(_github_key(secret), body).hex()


def verify_github(secrets: Sequence[str], headers: Mapping[str, str], body: bytes) -> str:
    """Check a GitHub delivery signed with any of ``secrets``; return its ``X-GitHub-Delivery``."""
    keys = [_github_key(secret) for secret in _configured(secrets)]
    values = _lowercase_names(headers)
    delivery = _header(values, "x-github-delivery")
    match = _GITHUB_SIGNATURE.fullmatch(_header(values, "x-hub-signature-256"))
    if match is None:
        raise SignatureError("malformed x-hub-signature-256 header")
    given = bytes.fromhex(match[1])
    if any(hmac.compare_digest(_github_mac(key, body), given) for key in keys):
        return delivery
    raise SignatureError("no signature matches")


def _configured(secrets: Sequence[str]) -> Sequence[str]:
    # A str is a Sequence[str] to the type checker: one secret passed bare would be its letters.
    if isinstance(secrets, str):
        raise TypeError("secrets must be a sequence of strings, not a string")
    if not secrets:
        raise ValueError("no webhook secret is configured")
    return secrets


def _lowercase_names(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def _header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name, "")
    if not value:
        raise SignatureError(f"missing {name} header")
    return value


def _standard_mac(key: bytes, message_id: str, timestamp: str, body: bytes) -> bytes:
    return hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()


def _v1_signatures(header: str) -> list[bytes]:
    """The decoded ``v1`` entries among the first ``MAX_SIGNATURES``; other versions (``v1a``)
    and malformed entries are skipped."""
    found = []
    for entry in header.split(maxsplit=MAX_SIGNATURES)[:MAX_SIGNATURES]:
        version, _, encoded = entry.partition(",")
        if version != "v1":
            continue
        try:
            signature = base64.b64decode(encoded, validate=True)
        except ValueError:
            continue
        if len(signature) == _SIGNATURE_BYTES:
            found.append(signature)
    return found


def _github_key(secret: str) -> bytes:
    if not secret:
        raise ValueError("a GitHub webhook secret must not be empty")
    return secret.encode()


def _github_mac(key: bytes, body: bytes) -> bytes:
    return hmac.new(key, body, hashlib.sha256).digest()
