from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from alembic.config import Config
from arq.connections import ArqRedis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.agents.spec import AgentTypeSpec, ScriptedToolCall, ScriptedTurn
from app.config import Settings, WorkerTuning
from app.db import create_engine, session_factory
from app.redis import arq_pool
from tests.fixtures.api import api_client
from tests.fixtures.services import recreate_database, redis_url, server_url, worker_index
from tests.fixtures.users import Account, make_account
from workers.runner import WorkerGroup

ROOT = Path(__file__).resolve().parents[1]
TABLES = (
    "webhook_attempts, webhook_deliveries, webhook_subscriptions, schedule_fires, agent_schedules, "
    "webhook_messages, agent_events, agent_signals, agent_logs, "
    "agent_messages, idempotency_keys, agent_executions, "
    "api_tokens, users"
)


def alembic_config(connection: Any = None) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["configure_logging"] = False
    if connection is not None:
        config.attributes["connection"] = connection
    return config


async def run_alembic(url: str, *commands: tuple[str, str]) -> None:
    engine = create_engine(url, pool_size=1)
    # A plain connection: Alembic runs each migration in its own transaction (some build
    # indexes outside any transaction).
    async with engine.connect() as conn:

        def run(sync_conn: Any) -> None:
            config = alembic_config(sync_conn)
            for name, revision in commands:
                getattr(command, name)(config, revision)

        await conn.run_sync(run)
        await conn.commit()
    await engine.dispose()


@pytest.fixture(scope="session")
def postgres_server() -> str:
    return server_url()


@pytest.fixture(scope="session")
async def database_url(postgres_server: str) -> str:
    url = await recreate_database(postgres_server, f"agents_test_{worker_index()}")
    await run_alembic(url, ("upgrade", "head"))
    return url


@pytest.fixture(scope="session")
def test_redis_url() -> str:
    return redis_url()


def counting_script(steps: int, delay: float = 0.0) -> list[ScriptedTurn]:
    """``steps - 1`` steps that call ``list_files``, then a final answer."""
    turns = [
        ScriptedTurn(
            tool_calls=[ScriptedToolCall(name="list_files", arguments={})], delay_seconds=delay
        )
        for _ in range(steps - 1)
    ]
    return [*turns, ScriptedTurn(content=f"done after {steps} steps", delay_seconds=delay)]


def scripted_type(steps: int, delay: float = 0.0, **overrides: Any) -> AgentTypeSpec:
    return AgentTypeSpec(
        provider="scripted",
        api_key_env=None,
        capabilities=["files"],
        script=counting_script(steps, delay),
        **overrides,
    )


@pytest.fixture
def reachable_tmp() -> Iterator[Path]:
    """A temporary directory every user can reach. pytest's own are private to their owner,
    and a worker running as root starts its command sandbox as another user."""
    path = Path(tempfile.mkdtemp(prefix="agents-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def make_settings(
    database_url: str, test_redis_url: str, tmp_path: Path, reachable_tmp: Path
) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        agent_types = {
            "steps-3": scripted_type(3),
            "steps-25": scripted_type(25),
            "slow-3": scripted_type(3, delay=0.3),
            **overrides.pop("agent_types", {}),
        }
        return Settings(
            database_url=database_url,
            redis_url=test_redis_url,
            data_dir=tmp_path / "data",
            workspace_base=reachable_tmp / "workspaces",
            agent_types=agent_types,
            worker=WorkerTuning(
                **{"poll_delay": 0.01, "heartbeat_interval": 0.2, **overrides.pop("worker", {})}
            ),
            **overrides,
        )

    return build


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
async def clean_state(database_url: str, test_redis_url: str) -> None:
    """Each test starts from empty tables (ids from 1 again) and an empty Redis database.

    DELETE rather than TRUNCATE: on tables of a few rows it takes about 3 ms against 35 (a
    TRUNCATE makes new files for every table), which adds up over the suite."""
    engine = create_engine(database_url, pool_size=1)
    async with engine.begin() as conn:
        sequences = (
            await conn.execute(text("SELECT sequence_name FROM information_schema.sequences"))
        ).scalars()
        empty = [f"DELETE FROM {table.strip()}" for table in TABLES.split(",")]
        empty += [f"ALTER SEQUENCE {name} RESTART" for name in sequences]
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        await driver.execute("; ".join(empty))  # one round trip (simple query protocol)
    await engine.dispose()
    redis = await arq_pool(test_redis_url)
    await redis.flushdb()
    await redis.aclose()


@pytest.fixture
async def db(settings: Settings, clean_state: None) -> AsyncIterator[AsyncEngine]:
    assert settings.database_url
    engine = create_engine(settings.database_url, pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(db: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(db)


@pytest.fixture
async def redis(settings: Settings, clean_state: None) -> AsyncIterator[ArqRedis]:
    assert settings.redis_url
    pool = await arq_pool(settings.redis_url)
    yield pool
    await pool.aclose()


@pytest.fixture
async def client(settings: Settings, clean_state: None) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(settings) as http:
        yield http


@pytest.fixture
async def alice(sessions: async_sessionmaker[AsyncSession]) -> Account:
    return await make_account(sessions, "alice@example.com")


@pytest.fixture
async def bob(sessions: async_sessionmaker[AsyncSession]) -> Account:
    return await make_account(sessions, "bob@example.com")


@pytest.fixture
def run_worker(settings: Settings) -> Callable[..., Any]:
    """Run an in-process burst worker on every queue until the queues are empty."""

    async def run(custom: Settings | None = None, timeout: float = 30) -> None:
        current = custom or settings
        group = WorkerGroup(current, current.queue_names(), burst=True)
        await asyncio.wait_for(group.run(handle_signals=False), timeout)

    return run
