"""Starting executions and reading them back: the service behind the executions router."""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

from arq.connections import ArqRedis
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession

from app.agents.errors import MissingApiKey
from app.agents.registry import check_agent_type
from app.auth.models import User
from app.config import Settings
from app.db import after_commit
from app.errors import ExecutionNotFound, InvalidRequest, UnknownAgentType
from app.executions import events, repository
from app.executions.jobs import enqueue_chunk
from app.executions.limits import check_start_allowed
from app.executions.models import Execution
from app.executions.status import Status

log = logging.getLogger(__name__)


class AgentManager:
    def __init__(self, settings: Settings, redis: ArqRedis) -> None:
        self.settings = settings
        self.redis = redis

    async def start(
        self,
        session: AsyncSession,
        user: User,
        agent_type: str,
        input: dict[str, Any],
        metadata: dict[str, Any] | None = None,
    ) -> Row[Any]:
        """Record a pending execution; its first job is enqueued once the row is committed."""
        spec = self.settings.agent_types.get(agent_type)
        if spec is None:
            known = sorted(self.settings.agent_types)
            raise UnknownAgentType(
                f"Unknown agent type {agent_type!r}; known types: {', '.join(known)}.",
                known_agent_types=known,
            )
        try:
            check_agent_type(spec, os.environ)
        except MissingApiKey as exc:
            raise InvalidRequest(
                f"Agent type {agent_type!r} cannot run: {exc}", missing_setting=spec.api_key_env
            ) from exc
        await check_start_allowed(session, user.id, user.tier, self.settings.tier_limits(user.tier))
        execution = await repository.insert_execution(
            session,
            user_id=user.id,
            agent_type=agent_type,
            queue=spec.queue,
            input=input,
            metadata=metadata or {},
        )
        event = events.status_changed(
            execution.id,
            execution.log_id,
            Status.PENDING,
            step_count=0,
            token_usage=0,
            completed_at=None,
        )

        async def enqueue() -> None:
            # The row is committed: if Redis is unreachable now, the sweep enqueues it later.
            try:
                await enqueue_chunk(self.redis, execution.id, 0, spec.queue)
                await events.publish(self.redis, execution.id, user.id, [event])
            except Exception:
                log.warning("could not enqueue execution %s", execution.id, exc_info=True)

        after_commit(session, enqueue)
        return execution


async def get_visible_execution(
    session: AsyncSession, user: User, execution_id: uuid.UUID
) -> Execution:
    """The execution if ``user`` owns it or is an admin; otherwise it does not exist for them."""
    execution = await repository.get_execution(
        session, execution_id, user_id=None if user.is_admin else user.id
    )
    if execution is None:
        raise ExecutionNotFound(f"No execution {execution_id}.")
    return execution
