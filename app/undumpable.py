"""Keep the service's secrets away from other processes of its own user.

A process marked non-dumpable cannot have its ``/proc/PID/environ`` or memory read, or a
debugger attached, by another process of the same user (only a privileged one can): an
unconfined bash command of the worker's user, say. The environment holds the database URL,
the Redis URL and the provider keys. This module uses the standard library only.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

_PR_GET_DUMPABLE = 3
_PR_SET_DUMPABLE = 4


def make_undumpable() -> None:
    """Mark this process non-dumpable (Linux; nothing elsewhere)."""
    prctl = _prctl()
    if prctl is not None and prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE) failed")


def is_dumpable() -> bool:
    prctl = _prctl()
    return prctl is None or prctl(_PR_GET_DUMPABLE, 0, 0, 0, 0) != 0


def _prctl() -> Any:
    if not os.path.exists("/proc/self/status"):  # not Linux
        return None
    return ctypes.CDLL(None, use_errno=True).prctl
