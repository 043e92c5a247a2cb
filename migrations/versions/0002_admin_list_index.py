"""index for the admin list of every execution, newest first

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 01:10:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Built without locking writes, so workers keep committing steps while it builds.
    with op.get_context().autocommit_block():
        op.create_index(
            "ix_agent_executions_created_at_id",
            "agent_executions",
            ["created_at", "id"],
            postgresql_concurrently=True,
            if_not_exists=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_agent_executions_created_at_id",
            table_name="agent_executions",
            postgresql_concurrently=True,
            if_exists=True,
        )
