"""Which routing rule chose an execution's queue

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 10:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("agent_executions", sa.Column("queue_reason", sa.String(20), nullable=True))


def downgrade() -> None:
    op.drop_column("agent_executions", "queue_reason")
