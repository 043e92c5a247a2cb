from __future__ import annotations

import os
import re

import pytest

from app.executions.transitions import (
    MOVES,
    STATUS_EVENT_TYPES,
    TERMINAL,
    Status,
    change_status,
    status_diagram,
)
from tests.conftest import ROOT


def test_readme_shows_the_state_machine_as_the_code_defines_it():
    """``AGENTS_UPDATE_README=1`` rewrites the README's section from the code instead."""
    path = ROOT / "README.md"
    readme = path.read_text()
    section = re.compile(
        r"(<!-- status-diagram:start -->\n)(.*)(\n<!-- status-diagram:end -->)", re.S
    )
    shown = section.search(readme)
    assert shown is not None, "README.md lost its status diagram markers"
    if os.environ.get("AGENTS_UPDATE_README") == "1":
        path.write_text(section.sub(lambda m: m[1] + status_diagram() + m[3], readme))
        return
    assert shown.group(2) == status_diagram(), (
        "README.md's status diagram is out of date: run this test with AGENTS_UPDATE_README=1"
    )


def test_no_move_leaves_a_terminal_status_and_every_status_is_reachable():
    for move in MOVES:
        assert not move.sources & TERMINAL, f"{move.name} leaves a terminal status"
    reached = {move.target for move in MOVES}
    assert reached == set(Status)
    assert {"status_changed", "paused", "cancelled"} <= STATUS_EVENT_TYPES


def test_only_the_state_machine_writes_log_rows():
    writers = [
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "app").rglob("*.py")
        if "INSERT INTO agent_logs" in path.read_text()
    ]
    assert writers == ["app/executions/transitions.py"]


def test_a_statement_refuses_moves_that_disagree_on_the_lease():
    from app.executions.transitions import CLAIM, COMPLETE

    with pytest.raises(AssertionError, match="lease"):
        change_status([CLAIM, COMPLETE], where="e.id = :id", choose="'claim'")
