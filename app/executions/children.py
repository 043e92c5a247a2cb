"""Subagents as real executions: the children a step starts, and waking the parent when the
last one finishes (with their results, which the worker hands to the parent agent)."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncEngine

from app.agents.spec import AgentTypeSpec
from app.agents.state import SubagentResult, SubagentTask
from app.config import SUBAGENT_PREFIX, Settings
from app.db import transaction_connection
from app.executions import subagent_repository
from app.executions.subagent_repository import ChildResult
from app.executions.transitions import TERMINAL, Status, StatusChange
from app.executions.worker_repository import NewChild


def new_children(
    settings: Settings,
    tasks: list[SubagentTask],
    *,
    parent: AgentTypeSpec,
    parent_workspace: uuid.UUID,
) -> list[NewChild]:
    """The executions to create for the tasks of a ``spawn_subagents`` call by an agent of
    spec ``parent`` working in ``parent_workspace``: each inherits the parent's model settings
    (where its own spec does not set them) and, if its spec says ``workspace = "parent"``,
    shares the parent's workspace."""
    children = []
    for task in tasks:
        spec = settings.subagents[task.subagent]
        children.append(
            NewChild(
                id=uuid.uuid4(),
                agent_type=SUBAGENT_PREFIX + task.subagent,
                queue=spec.queue,
                prompt=task.prompt,
                workspace_id=parent_workspace if spec.workspace == "parent" else None,
                inherited=parent.inheritance(),
            )
        )
    return children


def _result(child: ChildResult) -> SubagentResult:
    if child.status is Status.COMPLETED:
        text = str((child.output or {}).get("response", ""))
    else:
        text = str((child.error or {}).get("message", "no result"))
    return SubagentResult(
        subagent=child.agent_type.removeprefix(SUBAGENT_PREFIX), status=child.status, text=text
    )


async def wake_parent(db: AsyncEngine, parent_id: uuid.UUID) -> StatusChange | None:
    """Set ``parent_id`` pending if it waits for children and all of them have finished.

    Run after each child's terminal write: the parent row lock serialises siblings finishing
    together, and the last one to commit sees every sibling finished.
    """
    async with transaction_connection(db) as conn:
        if not await subagent_repository.lock_waiting_parent(conn, parent_id):
            return None
        children = await subagent_repository.child_results(conn, parent_id)
        if any(child.status not in TERMINAL for child in children):
            return None
        results = [_result(child).model_dump(mode="json") for child in children]
        return await subagent_repository.wake(conn, parent_id, {"results": results})
