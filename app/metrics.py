"""Prometheus metrics: what the API and the workers count, and how a scrape reads it.

Several processes (a supervisor's workers) share one directory of metric files when
``PROMETHEUS_MULTIPROC_DIR`` is set before this module is first imported
(:func:`use_multiprocess_dir` does that for ``agents worker``); a scrape then sums every
process's values. Without it each process counts alone (``agents serve``, ``agents dev``).
Labels take only bounded values: configured agent types, providers and models, route
templates (never raw paths), status codes.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST

# Model calls and steps: from a fraction of a second to the longest a chunk may take.
_SLOW_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
_FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

EXECUTIONS_STARTED = Counter(
    "agents_executions_started",
    "Executions created (over the API, by a webhook, a schedule or a parent).",
    ["agent_type", "queue"],
)
EXECUTIONS_FINISHED = Counter(
    "agents_executions_finished",
    "Executions that reached a terminal status.",
    ["agent_type", "status"],
)
STEPS = Histogram(
    "agents_step_duration_seconds",
    "One step: the model call, its tool calls and the commit.",
    ["agent_type"],
    buckets=_SLOW_BUCKETS,
)
MODEL_CALLS = Histogram(
    "agents_model_call_duration_seconds",
    "Model calls that returned an answer, retries included.",
    ["provider", "model"],
    buckets=_SLOW_BUCKETS,
)
TOKENS = Counter(
    "agents_tokens", "Tokens the providers counted.", ["provider", "model", "direction"]
)
WEBHOOK_DELIVERIES = Counter(
    "agents_webhook_deliveries",
    "Outbound webhook delivery attempts by outcome: delivered, retrying (it will be tried "
    "again) or failed (no attempt left). Inbound webhooks count as API requests.",
    ["outcome"],
)
HTTP_REQUESTS = Histogram(
    "agents_http_request_duration_seconds",
    "API requests by method, route template and status (streams: until the response starts).",
    ["method", "route", "status"],
    buckets=_FAST_BUCKETS,
)
IN_FLIGHT = Gauge(
    "agents_worker_executions_in_flight",
    "Executions a worker process is running now.",
    multiprocess_mode="livesum",
)


def use_multiprocess_dir() -> str:
    """Share metrics between this process and the ones it starts: the directory named by
    ``PROMETHEUS_MULTIPROC_DIR`` if set, else a new temporary one (exported, removed at exit).
    Call before starting them: a process records to the directory only if the variable was set
    when it first imported this module (the supervisor itself records nothing). A directory
    given by the operator should be emptied before the service starts, as prometheus-client
    asks: files of processes that died keep counting in the live gauges."""
    directory = os.environ.get(MULTIPROC_ENV)
    if directory:
        return directory
    directory = tempfile.mkdtemp(prefix="agents-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return directory


def process_ended(pid: int) -> None:
    """A process sharing the directory exited: its live gauges no longer count."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def registry() -> CollectorRegistry:
    """What a scrape reads: every process's values in multi-process mode, else this one's."""
    if not os.environ.get(MULTIPROC_ENV):
        return REGISTRY
    shared = CollectorRegistry()
    multiprocess.MultiProcessCollector(shared)  # type: ignore[no-untyped-call]
    return shared


class _Snapshot(Collector):
    def __init__(self, families: Iterable[GaugeMetricFamily]) -> None:
        self.families = list(families)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield from self.families


def render(extra: Iterable[GaugeMetricFamily] = ()) -> bytes:
    """The text exposition of :func:`registry`, then ``extra`` gauges read at scrape time."""
    body = generate_latest(registry())
    families = list(extra)
    if families:
        snapshot = CollectorRegistry(auto_describe=False)
        snapshot.register(_Snapshot(families))
        body += generate_latest(snapshot)
    return body
