from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from app.db import create_engine
from app.models import Base
from tests.conftest import run_alembic
from tests.fixtures.services import recreate_database, worker_index

TABLES = {
    "users",
    "api_tokens",
    "agent_executions",
    "agent_messages",
    "agent_logs",
    "agent_signals",
    "agent_events",
    "webhook_messages",
}


async def test_models_and_migration_agree(database_url):
    engine = create_engine(database_url, pool_size=1)
    async with engine.connect() as conn:
        diff = await conn.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(sync, opts={"compare_type": True}), Base.metadata
            )
        )
    await engine.dispose()
    assert diff == []


async def test_upgrade_and_downgrade_on_an_empty_database(postgres_server):
    url = await recreate_database(postgres_server, f"agents_migrations_{worker_index()}")
    engine = create_engine(url, pool_size=1)

    async def tables() -> set[str]:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))

    await run_alembic(url, ("upgrade", "head"))
    assert await tables() >= TABLES
    await run_alembic(url, ("downgrade", "base"))
    assert await tables() == {"alembic_version"}
    await run_alembic(url, ("upgrade", "head"))
    assert await tables() >= TABLES
    await engine.dispose()


async def test_migration_0011_counts_existing_subagents_on_their_roots(postgres_server):
    url = await recreate_database(postgres_server, f"agents_migrations_{worker_index()}")
    await run_alembic(url, ("upgrade", "0010"))
    engine = create_engine(url, pool_size=1)
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO users (id, name, email) VALUES (1, 'a', 'a@example.com')")
        )
        # root <- child (5 tokens) <- grandchild (7 tokens); a lone root; all made before 0011.
        for id_, parent, tokens in [
            ("00000000-0000-0000-0000-000000000001", None, 100),
            ("00000000-0000-0000-0000-000000000002", "00000000-0000-0000-0000-000000000001", 5),
            ("00000000-0000-0000-0000-000000000003", "00000000-0000-0000-0000-000000000002", 7),
            ("00000000-0000-0000-0000-000000000004", None, 9),
        ]:
            await conn.execute(
                text(
                    "INSERT INTO agent_executions (id, user_id, agent_type, queue, input, "
                    "parent_id, token_usage) VALUES (CAST(:id AS uuid), 1, 't', 'q', '{}', "
                    "CAST(:parent AS uuid), :tokens)"
                ),
                {"id": id_, "parent": parent, "tokens": tokens},
            )
    await run_alembic(url, ("upgrade", "0011"))
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                text(
                    "SELECT right(id::text, 1), right(root_id::text, 1), descendant_tokens "
                    "FROM agent_executions ORDER BY id"
                )
            )
        ).all()
    await engine.dispose()
    assert [tuple(row) for row in rows] == [
        ("1", None, 12),
        ("2", "1", 0),
        ("3", "1", 0),
        ("4", None, 0),
    ]
