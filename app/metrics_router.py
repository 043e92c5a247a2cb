"""``GET /metrics``: the Prometheus scrape of the API, with the queue gauges read at scrape time."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request, Response
from prometheus_client.core import GaugeMetricFamily

from app import metrics
from app.admin.queues import QueueStats, QueuesView, queues_view
from app.auth.dependencies import get_admin_user, get_current_user
from app.deps import RedisDep, SessionDep, SettingsDep
from app.errors import NotFound

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    operation_id="getMetrics",
    summary="Prometheus metrics (text format); an admin token unless metrics.require_admin is off",
    response_class=Response,
    responses={200: {"content": {metrics.CONTENT_TYPE: {}}, "description": "The scrape."}},
)
async def scrape(
    request: Request, session: SessionDep, redis: RedisDep, settings: SettingsDep
) -> Response:
    if not settings.metrics.enabled:
        raise NotFound("Metrics are turned off (metrics.enabled).")
    if settings.metrics.require_admin:
        await get_admin_user(await get_current_user(request, session))
    view = await queues_view(session, redis, settings)
    return Response(metrics.render(queue_gauges(view)), media_type=metrics.CONTENT_TYPE)


# Per-queue gauges: name, help, and what of a queue's numbers they show.
_QUEUE_GAUGES: list[tuple[str, str, Callable[[QueueStats], float]]] = [
    ("agents_queue_jobs", "Jobs in a queue (due, deferred or running).", lambda q: q.queued),
    (
        "agents_queue_oldest_wait_seconds",
        "Age of a queue's oldest due job (0 when none is due).",
        lambda q: q.oldest_wait_seconds or 0,
    ),
    ("agents_executions_running", "Executions running, by queue.", lambda q: q.running),
    (
        "agents_executions_awaiting",
        "Executions parked for an answer or an event, by queue.",
        lambda q: q.awaiting,
    ),
]


def queue_gauges(view: QueuesView) -> list[GaugeMetricFamily]:
    """The queues as gauges, read at scrape time from Redis and PostgreSQL."""
    families = []
    for name, documentation, read in _QUEUE_GAUGES:
        family = GaugeMetricFamily(name, documentation, labels=["queue"])
        for queue in view.queues:
            family.add_metric([queue.name], read(queue))
        families.append(family)
    workers = GaugeMetricFamily("agents_workers", "Worker processes seen alive.")
    workers.add_metric([], len(view.workers))
    return [*families, workers]
