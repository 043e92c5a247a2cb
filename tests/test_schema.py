from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

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
