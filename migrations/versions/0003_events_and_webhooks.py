"""events nobody awaited yet, and accepted webhook messages

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 06:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "agent_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column("event_type", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=True),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("consumed_by", sa.UUID(), nullable=True),
        sa.Column("consumed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["consumed_by"],
            ["agent_executions.id"],
            name=op.f("fk_agent_events_consumed_by_agent_executions"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_agent_events_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_events")),
    )
    op.create_index(
        "ix_agent_events_unconsumed",
        "agent_events",
        ["user_id", "event_type", "received_at"],
        postgresql_where=sa.text("consumed_at IS NULL"),
    )
    op.create_table(
        "webhook_messages",
        sa.Column("endpoint", sa.String(length=100), nullable=False),
        sa.Column("message_id", sa.String(length=200), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("response", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("endpoint", "message_id", name=op.f("pk_webhook_messages")),
    )
    op.create_index(op.f("ix_webhook_messages_received_at"), "webhook_messages", ["received_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_webhook_messages_received_at"), table_name="webhook_messages")
    op.drop_table("webhook_messages")
    op.drop_index("ix_agent_events_unconsumed", table_name="agent_events")
    op.drop_table("agent_events")
