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

_INDEXES = {
    "ix_agent_executions_completed_at": ("completed_at", "completed_at IS NOT NULL"),
    "ix_agent_executions_workspace_id": ("workspace_id", "workspace_id IS NOT NULL"),
}


def upgrade() -> None:
    # Built without locking writes, so workers keep committing steps while they build.
    with op.get_context().autocommit_block():
        for name, (column, where) in _INDEXES.items():
            op.create_index(
                name,
                "agent_executions",
                [column],
                postgresql_where=sa.text(where),
                postgresql_concurrently=True,
                if_not_exists=True,
            )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for name in reversed(_INDEXES):
            op.drop_index(
                name,
                table_name="agent_executions",
                postgresql_concurrently=True,
                if_exists=True,
            )
