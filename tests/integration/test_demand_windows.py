"""Demand windows through real Kafka, the PyFlink job on its mini cluster, the indexer and Elasticsearch.

A crafted stream with late events, sent in phases (each phase waits for the job to act on the
previous one, so the watermark has moved): events within the allowed lateness update their window's
document, events beyond it are dropped (counted as skips), and every document's counts equal an
independent simulation of event-time tumbling windows. The job's Prometheus reporter is checked on
the way (its own port here, so it runs beside the platform's job).
"""

from __future__ import annotations

import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from test_flink_job import Stream

from conftest import free_port

pytestmark = pytest.mark.integration

MAX_DELAY_S = 10
LATENESS_S = 30 * 60
WINDOW = timedelta(minutes=5)
T0 = datetime(2013, 1, 10, 10, 0, tzinfo=UTC)
DAWN = datetime.min.replace(tzinfo=UTC)


@dataclass
class Simulation:
    """Event-time tumbling windows written from the definition, not from flink_jobs/demand.py."""

    watermark: datetime = DAWN
    windows: dict[tuple[str, datetime], dict[int, tuple[int, bool]]] = field(default_factory=dict)
    dropped: int = 0

    def feed(self, area: str, booking: int, version: int, cancelled: bool, at: datetime) -> None:
        start = datetime.fromtimestamp(at.timestamp() // WINDOW.total_seconds() * WINDOW.total_seconds(), UTC)
        last_ms = start + WINDOW - timedelta(milliseconds=1)
        if last_ms + timedelta(seconds=LATENESS_S) <= self.watermark:
            self.dropped += 1
            return
        bookings = self.windows.setdefault((area, start), {})
        if booking not in bookings or bookings[booking][0] <= version:
            bookings[booking] = (version, cancelled)

    def advance(self, max_seen: datetime) -> None:
        self.watermark = max(self.watermark, max_seen - timedelta(seconds=MAX_DELAY_S, milliseconds=1))

    def fired(self) -> dict[str, tuple[int, int]]:
        """Document id -> (rides, cancellations) of every window the watermark has passed."""
        out = {}
        for (area, start), bookings in self.windows.items():
            if start + WINDOW - timedelta(milliseconds=1) <= self.watermark:
                rides = len(bookings)
                cancellations = sum(1 for _, cancelled in bookings.values() if cancelled)
                out[f"{area}-{start.strftime('%Y-%m-%dT%H:%M:%SZ')}"] = (rides, cancellations)
        return out


def legacy(moment: datetime) -> str:
    """The contract's legacy local-time form (the ride model reads it in Asia/Kolkata)."""
    moment = moment.astimezone(ZoneInfo("Asia/Kolkata"))
    return f"{moment.month}/{moment.day}/{moment.year} {moment.hour}:{moment.minute:02d}:{moment.second:02d}"


class Demand:
    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.prefix = stream.prefix.replace("-rides-", "-ride-demand-")
        self.sim = Simulation()
        self.max_seen = DAWN

    def send(
        self, area: int, booking: int, at: datetime, version: int = 100, cancelled: bool = False
    ) -> None:
        self.stream.send(
            version,
            booking_id=booking,
            from_area_id=area,
            booking_created=legacy(at),
            from_date=legacy(at + timedelta(hours=1)),
            car_cancellation=int(cancelled),
        )
        self.sim.feed(str(area), booking, version, cancelled, at)
        self.max_seen = max(self.max_seen, at)

    def phase_done(self) -> None:
        """The simulation's watermark moves once the job has seen the phase (it has then acted on it)."""
        self.sim.advance(self.max_seen)

    def docs(self) -> dict[str, dict[str, Any]]:
        es = self.stream.es
        es.indices.refresh(index=f"{self.prefix}*", allow_no_indices=True)
        hits = es.search(index=f"{self.prefix}*", size=1000, allow_no_indices=True)["hits"]["hits"]
        return {hit["_id"]: hit["_source"] for hit in hits}

    def counts(self) -> dict[str, tuple[int, int]]:
        return {key: (doc["rides"], doc["cancellations"]) for key, doc in self.docs().items()}

    def wait_for_simulation(self, timeout_s: float = 240) -> dict[str, tuple[int, int]]:
        expected = self.sim.fired()
        deadline = time.monotonic() + timeout_s
        found: dict[str, tuple[int, int]] = {}
        while time.monotonic() < deadline:
            found = self.counts()
            if found == expected:
                return found
            time.sleep(1)
        logs = "\n".join(p.log_tail(20) for p in self.stream.processes)
        raise AssertionError(f"demand documents {found} != simulation {expected}\n{logs}")


def test_demand_windows_with_late_events_match_an_independent_computation(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    stream = Stream(stack_env, tmp_path)
    demand = Demand(stream)
    metrics_port = free_port()
    try:
        stream.env.update(
            {
                "XRIDES_ES_DEMAND_PREFIX": demand.prefix,
                "XRIDES_DEMAND_MAX_DELAY_S": str(MAX_DELAY_S),
                "XRIDES_DEMAND_LATENESS_S": str(LATENESS_S),
                "XRIDES_LOGS_TOPIC": "",
                "XRIDES_FLINK_METRICS_PORT": str(metrics_port),
            }
        )
        # Phase 1: two areas, two windows, out of order within the watermark's delay, then an event
        # at 10:20 that moves the watermark past both windows (they fire on time).
        demand.send(83, 1, T0 + timedelta(minutes=1))
        demand.send(83, 2, T0 + timedelta(minutes=3))
        demand.send(83, 3, T0 + timedelta(minutes=2), cancelled=True)
        demand.send(84, 4, T0 + timedelta(minutes=4, seconds=59))
        demand.send(83, 5, T0 + timedelta(minutes=6))
        demand.send(84, 12, T0 + timedelta(minutes=5, seconds=55))  # 5 s behind the newest: in time
        demand.send(83, 6, T0 + timedelta(minutes=20))
        demand.phase_done()
        stream.start("indexer")
        stream.start("job")
        first = demand.wait_for_simulation()
        assert first[f"83-{T0:%Y-%m-%dT%H:%M:%SZ}"] == (3, 1)
        assert len(first) == 4

        # Phase 2: late but within the allowed lateness: a new booking and a cancellation update
        # for 10:00-10:05, and a duplicate (replayed) version that must not count twice.
        demand.send(83, 7, T0 + timedelta(minutes=4))
        demand.send(83, 1, T0 + timedelta(minutes=1), version=200, cancelled=True)
        demand.send(83, 2, T0 + timedelta(minutes=3))
        demand.phase_done()
        second = demand.wait_for_simulation()
        assert second[f"83-{T0:%Y-%m-%dT%H:%M:%SZ}"] == (4, 2)

        # Phase 3: move the watermark an hour on; then events for 10:00 are beyond the lateness.
        demand.send(85, 8, T0 + timedelta(hours=1))
        demand.phase_done()
        demand.wait_for_simulation()
        demand.send(83, 9, T0 + timedelta(minutes=2))
        demand.send(84, 10, T0 + timedelta(minutes=3))
        demand.send(85, 11, T0 + timedelta(hours=2))  # closes the 11:00 window
        demand.phase_done()
        final = demand.wait_for_simulation()
        assert demand.sim.dropped == 2
        assert final[f"83-{T0:%Y-%m-%dT%H:%M:%SZ}"] == (4, 2), "a too-late event changed a closed window"
        stream.caught_up(stream.env["XRIDES_INDEXER_GROUP_ID"], stream.env["XRIDES_ACTIONS_TOPIC"])
        assert demand.counts() == final

        doc = demand.docs()[f"83-{T0:%Y-%m-%dT%H:%M:%SZ}"]
        assert doc["window_start"] == "2013-01-10T10:00:00Z"
        assert doc["window_end"] == "2013-01-10T10:05:00Z"
        mapping = stream.es.indices.get_mapping(index=f"{demand.prefix}2013.01.10")
        (only,) = mapping.values()
        assert only["mappings"]["dynamic"] == "strict"
        assert only["mappings"]["properties"]["area_id"] == {"type": "keyword"}

        # Flink's own metrics through the Prometheus reporter of this job's mini cluster.
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
            text = response.read().decode()
        assert "flink_taskmanager_job_task_operator_numRecordsIn" in text
        assert "flink_jobmanager_job_lastCheckpointDuration" in text
    finally:
        names = list(stream.es.indices.get(index=f"{demand.prefix}*", allow_no_indices=True))
        if names:
            stream.es.indices.delete(index=",".join(names))
        stream.close()
