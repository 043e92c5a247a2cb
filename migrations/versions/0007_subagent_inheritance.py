"""Subagents: the workspace an execution works in, and the model settings it inherited

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Set by the worker when a step spawns subagents, never from a request: the id of the
    # execution whose workspace directory this one shares (NULL: its own), and the spawning
    # execution's model settings.
    op.add_column(
        "agent_executions", sa.Column("workspace_id", postgresql.UUID(as_uuid=True), nullable=True)
    )
    op.add_column(
        "agent_executions",
        sa.Column("inherited", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("agent_executions", "inherited")
    op.drop_column("agent_executions", "workspace_id")
