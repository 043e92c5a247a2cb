"""The worker's asyncpg pool: a database that goes away is a transient error, not a failure."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from sqlalchemy.engine import make_url

from app.db import DatabaseUnavailable, create_driver_pool, driver_connection, is_transient


class Proxy:
    """A TCP proxy in front of PostgreSQL that can be taken down, as a restart would."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)  # a host, or a unix socket directory
        self.server: asyncio.Server | None = None
        self.links: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = self.target
        if host.startswith("/"):
            up_reader, up_writer = await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
        else:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        self.links += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.links:
            writer.close()
        await self.server.wait_closed()


async def test_a_database_that_refuses_connections_is_transient(database_url):
    url = make_url(database_url)
    host = str(url.query.get("host") or url.host or "127.0.0.1")
    proxy = Proxy(host, url.port or 5432)
    port = await proxy.start()
    through_proxy = url.set(host="127.0.0.1", port=port, query={})
    pool = await create_driver_pool(through_proxy.render_as_string(hide_password=False), size=2)
    try:
        async with driver_connection(pool, 5) as conn:
            assert await conn.fetchval("SELECT 1") == 1
        await proxy.stop()  # PostgreSQL "restarts": open connections drop, new ones are refused
        await pool.expire_connections()
        with pytest.raises(DatabaseUnavailable) as raised:
            async with driver_connection(pool, 5) as conn:
                await conn.fetchval("SELECT 1")
        assert is_transient(raised.value)
    finally:
        pool.terminate()
