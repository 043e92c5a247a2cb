"""The README's code examples work as printed."""

from __future__ import annotations

import time

from app.outbound.service import new_secret
from app.webhooks.signatures import sign_standard
from tests.conftest import ROOT


def _python_block_after(marker: str) -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```python", readme.index(marker)) + len("```python")
    return readme[start : readme.index("```", start)]


def test_the_readme_receiver_verifies_a_delivery_and_refuses_a_forgery():
    namespace: dict = {}
    exec(_python_block_after("A receiver verifies a delivery"), namespace)
    verify = namespace["verify"]
    secret, body, timestamp = new_secret(), b'{"type":"execution.completed"}', int(time.time())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": "v1,bm90IGl0 " + sign_standard(secret, "msg_1", timestamp, body),
    }
    assert verify(secret, headers, body)
    assert not verify(secret, headers, body + b" ")
    assert not verify(new_secret(), headers, body)
    stale = {**headers, "webhook-timestamp": str(timestamp - 600)}
    stale["webhook-signature"] = sign_standard(secret, "msg_1", timestamp - 600, body)
    assert not verify(secret, stale, body)
