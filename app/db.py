"""Database engine, session factory and the declarative base every model shares."""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeAlias

import asyncpg
import sqlalchemy.exc
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy import MetaData
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


log = logging.getLogger(__name__)

AFTER_COMMIT = "after_commit"


def after_commit(session: AsyncSession, callback: Callable[[], Awaitable[None]]) -> None:
    """Run ``callback`` once the session's transaction has committed (enqueue, publish)."""
    session.info.setdefault(AFTER_COMMIT, []).append(callback)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def async_url(url: str) -> str:
    """Accept ``postgres://`` / ``postgresql://`` URLs and point them at asyncpg."""
    parsed = make_url(url.replace("postgres://", "postgresql://", 1))
    if parsed.drivername in ("postgresql", "postgresql+psycopg2", "postgresql+psycopg"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


_ESCAPED_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def json_serializer(value: object) -> str:
    """JSON for jsonb columns; PostgreSQL refuses NUL characters, so they become U+FFFD."""
    encoded = json.dumps(value)
    if "\\u0000" in encoded:
        encoded = _ESCAPED_NUL.sub(r"\1\\ufffd", encoded)
    return encoded


def create_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int | None = None,
    pool_timeout: float = 30.0,
    pre_ping: bool = True,
) -> AsyncEngine:
    """``pre_ping`` checks a pooled connection before handing it out (one round trip), so a
    database restart costs no request an error; the worker's per-step engine goes without and
    handles a dead connection as a transient error instead. Beyond ``pool_size`` +
    ``max_overflow`` (default: as many again) connections, callers wait up to
    ``pool_timeout`` seconds for one."""
    return create_async_engine(
        async_url(url),
        # The tier check relies on it: a statement sees rows committed before it started.
        isolation_level="READ COMMITTED",
        pool_size=pool_size,
        max_overflow=pool_size if max_overflow is None else max_overflow,
        pool_timeout=pool_timeout,
        pool_pre_ping=pre_ping,
        json_serializer=json_serializer,
    )


class DatabaseUnavailable(Exception):
    """No connection to PostgreSQL could be made (it restarts, or the network is down)."""


class PoolTimeout(Exception):
    """No connection of a driver pool came free in time: the process is overloaded."""


# Only errors the database and Redis clients raise: a plain ConnectionError could come from a
# tool, and running a step's tools again is not harmless.
_TRANSIENT = (
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # a restart or an administrator's terminate
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    sqlalchemy.exc.OperationalError,  # e.g. the database refused or dropped the connection
    sqlalchemy.exc.TimeoutError,  # no pooled connection came free in time: overloaded
    PoolTimeout,  # the same, in a driver pool
    DatabaseUnavailable,  # a driver pool could not connect
    RedisConnectionError,
    RedisTimeoutError,
)


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is the infrastructure failing for a moment (a dropped PostgreSQL or Redis
    connection) rather than the work itself: worth retrying from the last commit."""
    if isinstance(exc, DBAPIError) and (
        exc.connection_invalidated or isinstance(exc, InterfaceError)
    ):
        return True
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, _TRANSIENT):
            return True
        if isinstance(exc, asyncpg.exceptions.InterfaceError) and "closed" in str(exc):
            return True  # "connection is closed" (not "another operation is in progress")
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return False


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


@asynccontextmanager
async def transaction(
    sessions: async_sessionmaker[AsyncSession],
) -> AsyncIterator[AsyncSession]:
    """Commit on success (then run the ``after_commit`` callbacks), else roll back."""
    async with sessions() as session, _committed(session):
        yield session


@asynccontextmanager
async def transaction_connection(db: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection in a READ COMMITTED transaction, committed on success, whatever the
    engine's default: a worker's engine is in autocommit (each hot-path statement is its own
    transaction), where neither ``begin()`` nor an engine-level option opens a transaction."""
    async with db.connect() as connection:
        connection = await connection.execution_options(isolation_level="READ COMMITTED")
        async with connection.begin():
            yield connection


@asynccontextmanager
async def engine_transaction(db: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """:func:`transaction` on an engine, in a real transaction whatever its default."""
    async with db.connect() as connection:
        connection = await connection.execution_options(isolation_level="READ COMMITTED")
        session = AsyncSession(bind=connection, expire_on_commit=False)
        async with session, _committed(session):
            yield session


@asynccontextmanager
async def _committed(session: AsyncSession) -> AsyncIterator[None]:
    async with session.begin():
        yield
    for callback in session.info.pop(AFTER_COMMIT, []):
        try:
            await callback()
        except Exception:
            # The transaction is committed: what the callback does (enqueue, publish) is
            # recovered by the sweep, so the caller still succeeded.
            log.exception("after-commit callback %r failed", callback)


# What a :class:`RawStatement` runs on: a SQLAlchemy connection (in its transaction, if any), or
# a driver pool's asyncpg connection.
# (asyncpg has no type hints, so this is Any to the type checker.)
Connection: TypeAlias = Any

_NAMED = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")


@dataclass(frozen=True, slots=True)
class RawStatement:
    """SQL written with ``:name`` parameters, run straight on the asyncpg connection (``$n``).

    For the worker's hot path: no Core compilation or result processing per call.
    """

    sql: str
    names: tuple[str, ...]

    @classmethod
    def compile(cls, sql: str) -> RawStatement:
        names: list[str] = []

        def number(match: re.Match[str]) -> str:
            if match[1] not in names:
                names.append(match[1])
            return f"${names.index(match[1]) + 1}"

        return cls(_NAMED.sub(number, sql), tuple(names))

    async def fetchrow(self, conn: Connection, values: Mapping[str, Any]) -> Any:
        """The first row (an asyncpg ``Record``) or None; jsonb comes back decoded."""
        driver = await _driver(conn)
        try:
            return await driver.fetchrow(self.sql, *self._args(values))
        except Exception as exc:
            await _forget_if_dead(conn, exc)
            raise

    async def fetch(self, conn: Connection, values: Mapping[str, Any]) -> list[Any]:
        """All rows (asyncpg ``Record``s)."""
        driver = await _driver(conn)
        try:
            rows: list[Any] = await driver.fetch(self.sql, *self._args(values))
        except Exception as exc:
            await _forget_if_dead(conn, exc)
            raise
        return rows

    async def execute(self, conn: Connection, values: Mapping[str, Any]) -> str:
        """Run it; returns the command tag (``UPDATE 1``)."""
        driver = await _driver(conn)
        try:
            tag: str = await driver.execute(self.sql, *self._args(values))
        except Exception as exc:
            await _forget_if_dead(conn, exc)
            raise
        return tag

    def _args(self, values: Mapping[str, Any]) -> list[Any]:
        return [values[name] for name in self.names]


async def _forget_if_dead(conn: Connection, exc: Exception) -> None:
    """SQLAlchemy does not see errors raised on the raw connection: a dead one must be taken
    out of the pool here, or the next step would get it again. (An asyncpg pool checks its
    connections itself when they come back.)"""
    if isinstance(conn, AsyncConnection) and is_transient(exc):
        with contextlib.suppress(Exception):
            await conn.invalidate()


async def _driver(conn: Connection) -> Any:
    if not isinstance(conn, AsyncConnection):
        return conn
    raw = await conn.get_raw_connection()
    return raw.driver_connection


async def create_driver_pool(url: str, *, size: int) -> asyncpg.Pool:
    """An asyncpg pool of at most ``size`` connections, for statements run straight on the
    driver (:class:`RawStatement`): the worker's per-step path, where SQLAlchemy's checkout
    around each statement costs more than the pool needs. Same connection arguments and jsonb
    handling as :func:`create_engine`'s connections."""
    dialect = PGDialect_asyncpg()  # type: ignore[no-untyped-call]
    _, connect_args = dialect.create_connect_args(make_url(async_url(url)))  # type: ignore[no-untyped-call]
    for option in _ADAPTER_ONLY:  # SQLAlchemy's adapter reads these; asyncpg refuses them
        connect_args.pop(option, None)
    pool = await asyncpg.create_pool(
        min_size=1, max_size=size, init=_json_codecs, reset=_keep_session, **connect_args
    )
    assert pool is not None
    return pool


_ADAPTER_ONLY = ("prepared_statement_cache_size", "prepared_statement_name_func")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What a connection coming back to the pool needs beyond asyncpg's rollback of an open
    transaction: nothing (these connections keep no session state). asyncpg's default reset
    (unlock, close cursors, unlisten, reset settings) would cost a round trip per statement."""


@contextlib.asynccontextmanager
async def driver_connection(pool: asyncpg.Pool, timeout: float) -> AsyncIterator[Any]:
    """A connection of ``pool`` for the block. :class:`PoolTimeout` after ``timeout`` s;
    :class:`DatabaseUnavailable` when a new connection is needed and cannot be made (both
    transient: the work is retried from its last commit)."""
    try:
        conn = await pool.acquire(timeout=timeout)
    except TimeoutError as exc:
        raise PoolTimeout(f"no database connection came free within {timeout:g} s") from exc
    except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
        raise DatabaseUnavailable(f"cannot connect to the database: {exc}") from exc
    try:
        yield conn
    finally:
        await pool.release(conn)


async def _json_codecs(conn: asyncpg.Connection) -> None:
    """json and jsonb as SQLAlchemy's asyncpg dialect sets them up: JSON text in, decoded out."""
    await conn.set_type_codec(
        "json",
        encoder=str.encode,
        decoder=lambda value: json.loads(value.decode()),
        schema="pg_catalog",
        format="binary",
    )
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda value: b"\x01" + value.encode(),
        decoder=lambda value: json.loads(value[1:].decode()),
        schema="pg_catalog",
        format="binary",
    )
