"""The ``agents`` command: run the service, its workers, migrations and user admin."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from app.agents.sandbox import SandboxStartError
from app.config import ServicesNotConfigured, Settings, describe_settings_error
from app.undumpable import make_undumpable

DEMO_EMAIL = "demo@localhost"
# The long-running service processes never start embedded servers: they need configured ones.
# Commands that act on a deployment's data never fall back to the embedded servers.
SERVICE_COMMANDS = frozenset({"serve", "worker", "prune", "recover-stuck"})


def load_settings(*, embedded: bool = False) -> Settings:
    """The settings, exiting with a message if they are invalid or name no database or Redis.

    With ``embedded``, embedded servers stand in for any URL not configured; the URLs are
    exported so child processes (and the Alembic env) use the same servers.
    """
    try:
        settings = Settings()
    except (ValidationError, FileNotFoundError, ValueError) as exc:
        sys.exit(describe_settings_error(exc))
    if embedded:
        from app.embedded import with_services

        settings = with_services(settings)
    try:
        database_url, redis_url = settings.service_urls()
    except ServicesNotConfigured as exc:
        sys.exit(str(exc))
    os.environ["DATABASE_URL"] = database_url
    os.environ["REDIS_URL"] = redis_url
    return settings


def alembic_config() -> object:
    from alembic.config import Config

    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        if (base / "alembic.ini").is_file():
            config = Config(str(base / "alembic.ini"))
            config.attributes["configure_logging"] = False
            return config
    sys.exit("alembic.ini not found: run from the project directory")


async def migrate(settings: Settings) -> None:
    """Upgrade the database to the latest revision."""
    from alembic import command

    from app.db import create_engine

    assert settings.database_url
    config = alembic_config()
    engine = create_engine(settings.database_url, pool_size=1)
    # A plain connection: Alembic runs each migration in its own transaction (some build
    # indexes outside any transaction).
    async with engine.connect() as conn:

        def upgrade(sync_conn: object) -> None:
            config.attributes["connection"] = sync_conn  # type: ignore[attr-defined]
            command.upgrade(config, "head")  # type: ignore[arg-type]

        await conn.run_sync(upgrade)
        await conn.commit()
    await engine.dispose()


async def _create_user(
    settings: Settings, email: str, name: str | None, tier: str, admin: bool
) -> None:
    from app.auth.service import create_user, get_user_by_email
    from app.db import create_engine, session_factory, transaction

    assert settings.database_url
    engine = create_engine(settings.database_url, pool_size=1)
    async with transaction(session_factory(engine)) as session:
        if await get_user_by_email(session, email) is not None:
            sys.exit(f"a user with email {email} already exists")
        user = await create_user(session, email=email, name=name, tier=tier, is_admin=admin)
        print(f"created user {user.id} <{user.email}> tier={user.tier} admin={user.is_admin}")
    await engine.dispose()


async def _create_token(settings: Settings, email: str, name: str) -> None:
    from app.auth.service import create_token, get_user_by_email
    from app.db import create_engine, session_factory, transaction

    assert settings.database_url
    engine = create_engine(settings.database_url, pool_size=1)
    async with transaction(session_factory(engine)) as session:
        user = await get_user_by_email(session, email)
        if user is None:
            sys.exit(f"no user with email {email}; create one with 'agents create-user'")
        print(await create_token(session, user, name))
    await engine.dispose()


async def _revoke_tokens(settings: Settings, email: str, name: str | None) -> None:
    from app.auth.service import get_user_by_email, revoke_named_tokens
    from app.db import create_engine, session_factory, transaction

    assert settings.database_url
    engine = create_engine(settings.database_url, pool_size=1)
    async with transaction(session_factory(engine)) as session:
        user = await get_user_by_email(session, email)
        if user is None:
            sys.exit(f"no user with email {email}")
        revoked = await revoke_named_tokens(session, user, name)
        print(f"revoked {revoked} token(s) of {user.email}")
    await engine.dispose()


async def demo_token(settings: Settings) -> str:
    """The demo user's token, kept in the data directory so restarts print the same one."""
    from app.auth.service import create_token, create_user, get_user_by_email, is_token_valid
    from app.db import create_engine, session_factory, transaction

    assert settings.database_url
    token_file = settings.data_dir / "demo-token"
    engine = create_engine(settings.database_url, pool_size=1)
    async with transaction(session_factory(engine)) as session:
        user = await get_user_by_email(session, DEMO_EMAIL)
        if user is None:
            user = await create_user(session, email=DEMO_EMAIL, name="Demo", tier="pro")
        token = token_file.read_text().strip() if token_file.is_file() else ""
        if not token or not await is_token_valid(session, token):
            token = await create_token(session, user, "demo")
            token_file.parent.mkdir(parents=True, exist_ok=True)
            token_file.write_text(token + "\n")
            token_file.chmod(0o600)
    await engine.dispose()
    return token


def _uvicorn_config(settings: Settings, host: str, port: int) -> object:
    import uvicorn

    from app.main import create_app

    return uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        log_level="info",
        loop="uvloop" if sys.platform != "win32" else "asyncio",
        http="httptools",
        access_log=False,
    )


async def _serve(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    server = uvicorn.Server(_uvicorn_config(settings, host, port))  # type: ignore[arg-type]
    await server.serve()


async def _work(settings: Settings, args: argparse.Namespace) -> None:
    """One worker process on ``--queue``s; without them, the supervised pools. A process that
    stopped over its memory cap exits with EXIT_RECYCLED, so whoever runs it starts another."""
    from app import metrics
    from workers.runner import WorkerGroup
    from workers.supervisor import (
        EXIT_RECYCLED,
        NoPools,
        PoolPlan,
        Supervisor,
        plan_pools,
        pool_size_each,
        serve_metrics,
        stop_with_supervisor,
        supervised,
    )

    grace = settings.worker.drain_grace
    if args.queue and args.processes == 1:
        stop_with_supervisor()
        # Hundreds of steps in flight allocate fast: a young generation of 10,000 objects
        # (Python's default is 700) lets most of them die before a collection looks at them.
        # 5 % less CPU per step in bench.concurrency.
        gc.set_threshold(10_000, 10, 10)
        if settings.metrics.worker_listen and not supervised():
            serve_metrics(settings.metrics.worker_listen)
        group = WorkerGroup(
            settings,
            args.queue,
            max_jobs=args.max_jobs,
            job_timeout=args.timeout,
            max_memory_mb=args.max_memory_mb,
        )
        await group.run()
        if group.failed:
            sys.exit(1)
        if group.recycled:
            sys.exit(EXIT_RECYCLED)
        return
    if args.queue:
        pools = [
            PoolPlan(
                "command-line",
                tuple(args.queue),
                args.processes,
                args.max_jobs,
                args.timeout,
                args.max_memory_mb,
            )
        ]
    else:
        try:
            pools = plan_pools(settings)
        except NoPools as exc:
            print(f"agents: {exc}", file=sys.stderr)
            sys.exit(2)
    # Before the children start: they record their metrics in files the supervisor sums.
    metrics.use_multiprocess_dir()
    supervisor = Supervisor(pools, grace=grace, db_pool_size=pool_size_each(settings, pools))
    await supervisor.run(metrics_listen=settings.metrics.worker_listen)


async def _dev(settings: Settings, host: str, port: int) -> None:
    import uvicorn

    from workers.runner import WorkerGroup

    await migrate(settings)
    token = await demo_token(settings)
    server = uvicorn.Server(_uvicorn_config(settings, host, port))  # type: ignore[arg-type]
    group = WorkerGroup(settings, settings.queue_names())
    worker_task = asyncio.create_task(group.run(handle_signals=False))
    print(
        f"\n  Agent Runner is up on http://{host}:{port}  (API docs: http://{host}:{port}/docs)\n"
        f"  demo user: {DEMO_EMAIL}\n  API token: {token}\n\n"
        f"  try:  curl -s -X POST http://{host}:{port}/api/agents \\\n"
        f"          -H 'Authorization: Bearer {token}' -H 'Content-Type: application/json' \\\n"
        """          -d '{"agent_type": "demo", "input": {"prompt": "hello"}}'\n""",
        flush=True,
    )
    try:
        await server.serve()
    finally:
        group.stop()
        await worker_task


async def _prune(settings: Settings, dry_run: bool) -> None:
    from app.db import create_engine
    from app.executions.retention import prune

    assert settings.database_url
    db = create_engine(settings.database_url)
    try:
        report = await prune(db, settings, dry_run=dry_run)
    finally:
        await db.dispose()
    print(report.summary())


def _with_stale_after(settings: Settings, seconds: float) -> Settings:
    """The settings with ``worker.stale_after`` = ``seconds``, which must leave the workers'
    heartbeats time to get through (else healthy executions would be taken from them)."""
    interval = settings.worker.heartbeat_interval
    if seconds <= 2 * interval:
        print(
            f"agents: --stale-after must be more than twice worker.heartbeat_interval "
            f"({interval:g} s), or healthy executions would be taken from their workers",
            file=sys.stderr,
        )
        sys.exit(2)
    return settings.model_copy(
        update={"worker": settings.worker.model_copy(update={"stale_after": seconds})}
    )


async def _recover_stuck(settings: Settings) -> None:
    from dataclasses import asdict

    from app.db import create_engine
    from app.executions.recovery import sweep
    from app.redis import arq_pool

    assert settings.database_url
    assert settings.redis_url
    db = create_engine(settings.database_url)
    redis = await arq_pool(settings.redis_url)
    try:
        report = await sweep(db, redis, settings)
    finally:
        await redis.aclose()
        await db.dispose()
    print(", ".join(f"{name} {count}" for name, count in asdict(report).items()))


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def _without_job_lines(record: logging.LogRecord) -> bool:
    """arq logs two lines per job (started, finished): hundreds a second on a busy worker,
    each saying less than the execution's own log rows. Its other lines (retries, aborts,
    start and stop) still show."""
    return not (isinstance(record.msg, str) and record.msg.startswith(("%6.2fs → ", "%6.2fs ← ")))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="agents", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    dev = commands.add_parser("dev", help="embedded servers + migrations + API + worker")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8000)
    serve = commands.add_parser("serve", help="run the API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    worker = commands.add_parser(
        "worker", help="run the supervised worker pools, or one worker process on --queue"
    )
    worker.add_argument(
        "--queue",
        action="append",
        help="serve this queue in one process (repeatable); default: the [worker.pools]",
    )
    worker.add_argument(
        "--processes", type=_positive_int, default=1, help="with --queue: supervise N processes"
    )
    worker.add_argument(
        "--max-jobs", type=_positive_int, help="executions in flight per queue (worker.max_jobs)"
    )
    worker.add_argument("--timeout", type=float, help="seconds one job (one chunk) may run")
    worker.add_argument(
        "--max-memory-mb", type=_positive_int, help="hand over and exit past this RSS"
    )
    commands.add_parser("migrate", help="apply database migrations")
    user = commands.add_parser("create-user", help="create a user")
    user.add_argument("--email", required=True)
    user.add_argument("--name")
    user.add_argument("--tier", choices=["free", "pro", "enterprise"], default="free")
    user.add_argument("--admin", action="store_true")
    revoke = commands.add_parser("revoke-token", help="revoke a user's tokens (by name, or all)")
    revoke.add_argument("--email", required=True)
    revoke.add_argument("--name", help="only the tokens with this name (default: all)")
    prune = commands.add_parser("prune", help="delete what the retention settings say is old")
    prune.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    recover = commands.add_parser("recover-stuck", help="run the recovery sweep once")
    recover.add_argument(
        "--stale-after", type=float, help="seconds without a heartbeat (default: the setting)"
    )
    token = commands.add_parser("create-token", help="create an API token (printed once)")
    token.add_argument("--email", required=True)
    token.add_argument("--name", default="default")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    # httpx logs every request at INFO: one line per model call and webhook delivery, which
    # costs the worker CPU on every step and says nothing the execution logs do not.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("arq.worker").addFilter(_without_job_lines)
    settings = load_settings(embedded=args.command not in SERVICE_COMMANDS)
    try:
        _uvloop_install()
        if args.command == "serve":
            make_undumpable()  # the environment holds the database URL and secrets
        asyncio.run(_command(args, settings))
    except KeyboardInterrupt:
        pass
    except SandboxStartError as exc:
        print(f"agents: {exc}", file=sys.stderr)
        sys.exit(1)


async def _command(args: argparse.Namespace, settings: Settings) -> None:
    """Run the chosen command."""
    match args.command:
        case "dev":
            await _dev(settings, args.host, args.port)
        case "serve":
            await _serve(settings, args.host, args.port)
        case "worker":
            await _work(settings, args)
        case "migrate":
            await migrate(settings)
            print("database is at the latest revision")
        case "create-user":
            await _create_user(settings, args.email, args.name, args.tier, args.admin)
        case "revoke-token":
            await _revoke_tokens(settings, args.email, args.name)
        case "create-token":
            await _create_token(settings, args.email, args.name)
        case "prune":
            await _prune(settings, args.dry_run)
        case "recover-stuck":
            if args.stale_after is not None:
                settings = _with_stale_after(settings, args.stale_after)
            await _recover_stuck(settings)


def _uvloop_install() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


if __name__ == "__main__":
    main()
