"""Subagent tokens roll up into their root: root_id on every subagent, descendant_tokens on roots

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01 11:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "agent_executions", sa.Column("root_id", sa.dialects.postgresql.UUID(), nullable=True)
    )
    op.add_column(
        "agent_executions",
        sa.Column("descendant_tokens", sa.BigInteger(), server_default="0", nullable=False),
    )
    # Subagents that exist already: their root, and their tokens counted on it. After the
    # columns are committed, so the backfill holds row locks only, not the table's.
    with op.get_context().autocommit_block():
        op.execute(_BACKFILL)


_BACKFILL = """
        WITH RECURSIVE tree(id, root_id) AS (
            SELECT id, id FROM agent_executions WHERE parent_id IS NULL
            UNION ALL
            SELECT e.id, tree.root_id FROM agent_executions e JOIN tree ON e.parent_id = tree.id
        ), rooted AS (
            UPDATE agent_executions e SET root_id = tree.root_id
            FROM tree WHERE e.id = tree.id AND e.parent_id IS NOT NULL
            RETURNING e.root_id, e.token_usage
        )
        UPDATE agent_executions r SET descendant_tokens = sums.tokens
        FROM (SELECT root_id, sum(token_usage) AS tokens FROM rooted GROUP BY root_id) AS sums
        WHERE r.id = sums.root_id
        """


def downgrade() -> None:
    op.drop_column("agent_executions", "descendant_tokens")
    op.drop_column("agent_executions", "root_id")
