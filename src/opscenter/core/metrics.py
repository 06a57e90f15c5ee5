"""Prometheus metrics, all declared here on one registry (served at /metrics).

Each process counts what it did itself (the requests it served, the jobs it ran, the
events its relay received), so a scraper scrapes every process; the job queue gauges are
read from the shared `jobs` table at scrape time and so are the same in every process.
"""

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from opscenter.core.logging import get_logger

log = get_logger("opscenter.metrics")
REGISTRY = CollectorRegistry(auto_describe=True)

REQUESTS = Counter(
    "opscenter_http_requests_total",
    "HTTP requests by route template, method and status",
    ["method", "route", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "opscenter_http_request_duration_seconds",
    "HTTP request latency by route template",
    ["method", "route"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

JOB_DURATION = Histogram(
    "opscenter_job_duration_seconds",
    "Run time of the jobs this process ran, by kind and outcome, observed when each ends",
    ["kind", "outcome"],
    registry=REGISTRY,
    # From a quick retention pass to a backup of several hours.
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600),
)
BACKUP_BYTES = Counter(
    "opscenter_backup_bytes",
    "Bytes stored by the backups this process completed (compressed and encrypted, "
    "copies included)",
    registry=REGISTRY,
)
JOBS_QUEUED = Gauge(
    "opscenter_jobs_queued",
    "Jobs waiting to run, by kind (the whole installation, read at scrape time)",
    ["kind"],
    registry=REGISTRY,
)
JOBS_RUNNING = Gauge(
    "opscenter_jobs_running",
    "Jobs running, by kind (the whole installation, read at scrape time)",
    ["kind"],
    registry=REGISTRY,
)
OLDEST_QUEUED_AGE = Gauge(
    "opscenter_job_oldest_queued_age_seconds",
    "How long the oldest job still waiting to run has waited, by kind (0 when none waits)",
    ["kind"],
    registry=REGISTRY,
)
RELAY_LAG = Histogram(
    "opscenter_event_relay_lag_seconds",
    "Time from an event's publication in another process to its arrival in this one "
    "(across hosts, clock offsets included)",
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RELAY_DROPPED = Counter(
    "opscenter_event_relay_dropped_events",
    "Events this process could not hand to the relay's transport in time (lost for the "
    "other processes)",
    registry=REGISTRY,
)


def observe_job_end(kind: str, outcome: str, started: float) -> None:
    """A job that started at `started` (time.monotonic()) ended with `outcome`."""
    JOB_DURATION.labels(kind, outcome).observe(time.monotonic() - started)


@dataclass(frozen=True)
class JobCount:
    status: str  # "queued" or "running"
    kind: str
    count: int
    oldest: datetime  # the creation time of the oldest of them


def set_job_queue(counts: Iterable[JobCount], kinds: Iterable[str], now: datetime) -> None:
    """Replace the queue gauges with `counts`; the known `kinds` without jobs read 0 (a
    series that vanishes would read as "unknown", not as an empty queue)."""
    for gauge in (JOBS_QUEUED, JOBS_RUNNING, OLDEST_QUEUED_AGE):
        gauge.clear()
        for kind in kinds:
            gauge.labels(kind).set(0)
    for row in counts:
        if row.status == "running":
            JOBS_RUNNING.labels(row.kind).set(row.count)
        else:
            JOBS_QUEUED.labels(row.kind).set(row.count)
            OLDEST_QUEUED_AGE.labels(row.kind).set(max(0.0, (now - row.oldest).total_seconds()))


def clear_job_queue() -> None:
    """The queue could not be read: no figure rather than a stale one."""
    for gauge in (JOBS_QUEUED, JOBS_RUNNING, OLDEST_QUEUED_AGE):
        gauge.clear()


class MetricsServer:
    """/metrics of this registry on a port of its own, for a process that serves no API."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._server: Any = None

    async def start(self) -> None:
        try:
            self._server, _thread = start_http_server(self.port, self.host, registry=REGISTRY)
        except OSError as exc:  # e.g. a CLI command beside a worker that holds the port
            log.warning("metrics: port unavailable, not served", port=self.port, error=str(exc))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
