"""Indexes for retention: finished executions by age, subagents by shared workspace

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_agent_executions_completed_at",
        "agent_executions",
        ["completed_at"],
        postgresql_where=sa.text("completed_at IS NOT NULL"),
    )
    op.create_index(
        "ix_agent_executions_workspace_id",
        "agent_executions",
        ["workspace_id"],
        postgresql_where=sa.text("workspace_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_agent_executions_workspace_id", table_name="agent_executions")
    op.drop_index("ix_agent_executions_completed_at", table_name="agent_executions")
