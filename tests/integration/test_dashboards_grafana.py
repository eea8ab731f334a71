"""Every query of the Grafana dashboard is valid PromQL and returns series on the local Prometheus.

Rides go through the running platform first, as XRides sends them: accepted single rides and a
batch, a ride that breaks the contract (422), a request without a key (401), and one undecodable
Kafka message for the persister to dead-letter. Prometheus scrapes the processes every 5 s; each
query of ``dashboards/grafana/xrides.json`` (the committed file, as Grafana provisions it) must
then answer with at least one series holding a number. A missing service fails the test.
"""

from __future__ import annotations

import json
import math
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from typing import Any

import pytest

from dashboards import cli, grafana
from deploy.stack.platform import REGISTRY
from loadgen.rides import KOLKATA, RideGenerator
from xrides.kafka import DeliveryProducer, KafkaConfig, OutRecord
from xrides.ride import example_ride
from xrides.topics import RIDES

pytestmark = pytest.mark.integration

SCRAPE_WAIT_S = 180  # the Flink job and the indexer take a few seconds per ride; scrapes every 5 s


def _request(url: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url,
        data=data,
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST" if data else "GET",
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def committed_queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every target in the committed dashboard file."""
    board = json.loads(cli.GRAFANA_FILE.read_text(encoding="utf-8"))
    found = [
        (panel["title"], target["expr"])
        for panel in board["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]
    assert found == [(title, q.expr) for title, q in grafana.queries()], (
        "stale: run python -m dashboards generate"
    )
    return found


def prometheus_query(base: str, expr: str) -> dict[str, Any]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    status, body = _request(url)
    assert status == 200 and body["status"] == "success", f"{expr!r} is not valid PromQL: {body}"
    data: dict[str, Any] = body["data"]
    return data


def send_round(stack_env: dict[str, str], generator: RideGenerator) -> None:
    """20 single rides, a batch of 10, a 422, a 401 and one undecodable Kafka message."""
    api, key = stack_env["XRIDES_API_URL"], stack_env["XRIDES_API_KEY"]
    auth = {"Authorization": f"Bearer {key}"}
    now = datetime.now(UTC).astimezone(KOLKATA).replace(microsecond=0)
    for _ in range(20):
        status, body = _request(f"{api}/v1/rides", generator.ride(now), auth)
        assert status == 202, body
    status, body = _request(f"{api}/v1/rides/batch", [generator.ride(now) for _ in range(10)], auth)
    assert status == 202, body
    status, _ = _request(f"{api}/v1/rides", {**example_ride(), "user_id": "not a number"}, auth)
    assert status == 422
    status, _ = _request(f"{api}/v1/rides", example_ride())
    assert status == 401
    producer = DeliveryProducer(KafkaConfig(stack_env["XRIDES_KAFKA_BOOTSTRAP"], "dashboards-it"))
    try:
        poison = OutRecord(RIDES.name, b"{not json: dashboards test", key=b"dashtest-poison")
        producer.send_all([poison])  # blocks until Kafka acknowledged it (acks=all)
    finally:
        producer.close()


# Series the traffic creates: a labelled counter's first increment creates it, and rate() or
# increase() only see increments after a scrape saw it, so the traffic is sent twice.
CREATED = (
    'xrides_api_requests_total{status="422"}',
    'xrides_api_requests_total{status="401"}',
    'xrides_api_rejects_total{reason="validation_failed"}',
    'xrides_api_rejects_total{reason="unauthorized"}',
    'xrides_persister_dead_letters_total{reason="undecodable"}',
    'xrides_indexer_actions_total{outcome="ok"}',
)


@pytest.fixture(scope="module")
def traffic(stack_env: dict[str, str]) -> RideGenerator:
    """Rides, refusals and poison through the platform the stack runs, in two rounds."""
    status, body = _request(f"{stack_env['XRIDES_API_URL']}/healthz")
    assert status == 200, f"the platform's API is not up: {body}"
    base = stack_env["XRIDES_PROMETHEUS_URL"].rstrip("/")
    generator = RideGenerator(
        seed=random.randint(0, 10**6), first_booking_id=random.randint(3 * 10**12, 4 * 10**12)
    )
    send_round(stack_env, generator)
    deadline = time.monotonic() + SCRAPE_WAIT_S
    missing = list(CREATED)
    while missing and time.monotonic() < deadline:
        time.sleep(5)
        missing = [expr for expr in CREATED if not prometheus_query(base, expr)["result"]]
    assert not missing, f"Prometheus never saw {missing}"
    send_round(stack_env, generator)
    return generator


def test_every_dashboard_query_returns_series(stack_env: dict[str, str], traffic: RideGenerator) -> None:
    base = stack_env["XRIDES_PROMETHEUS_URL"].rstrip("/")
    queries = committed_queries()
    assert len(queries) >= 15
    # Valid PromQL first: a syntax error fails now, not after the wait.
    for _, expr in queries:
        prometheus_query(base, expr)

    def empty() -> list[str]:
        missing = []
        for title, expr in queries:
            data = prometheus_query(base, expr)
            assert data["resultType"] == "vector", (title, expr, data["resultType"])
            values = [float(series["value"][1]) for series in data["result"]]
            if not values or all(math.isnan(v) for v in values):
                missing.append(f"{title}: {expr}")
        return missing

    deadline = time.monotonic() + SCRAPE_WAIT_S
    missing = empty()
    while missing and time.monotonic() < deadline:
        time.sleep(5)
        missing = empty()
    assert not missing, "queries without a series (or only NaN):\n" + "\n".join(missing)


def test_queries_see_what_the_traffic_did(stack_env: dict[str, str], traffic: RideGenerator) -> None:
    base = stack_env["XRIDES_PROMETHEUS_URL"].rstrip("/")
    # Rates look back 1-5 minutes; the test before may have waited longer than that since the
    # fixture's traffic, so this test makes its own increments (every series exists by now).
    send_round(stack_env, traffic)
    # (query of the dashboard, label) -> label values that must show a positive value
    wanted = {
        ('sum by (status) (rate(xrides_api_requests_total{status=~"4..|5.."}[5m]))', "status"): {
            "401",
            "422",
        },
        ("sum by (reason) (rate(xrides_api_rejects_total[5m]))", "reason"): {
            "unauthorized",
            "validation_failed",
        },
        ("sum by (reason) (increase(xrides_persister_dead_letters_total[1h]))", "reason"): {"undecodable"},
        ("sum by (reason) (xrides_persister_dead_letters_total)", "reason"): {"undecodable"},
        ("sum by (outcome) (rate(xrides_indexer_actions_total[1m]))", "outcome"): {"ok"},
        (
            'sum by (route) (rate(xrides_api_requests_total{route=~"/v1/rides|/v1/rides/batch|/xride_data"}[1m]))',
            "route",
        ): {
            "/v1/rides",
            "/v1/rides/batch",
        },
        ("up", "job"): {process.name for process in REGISTRY} | {"prometheus"},
    }
    exprs = {expr for _, expr in committed_queries()}
    assert {expr for expr, _ in wanted} <= exprs, "the dashboard no longer has these queries"

    def positive(expr: str, label: str) -> set[str]:
        result = prometheus_query(base, expr)["result"]
        return {s["metric"].get(label, "") for s in result if float(s["value"][1]) > 0}

    deadline = time.monotonic() + SCRAPE_WAIT_S
    seen: dict[tuple[str, str], set[str]] = {}
    while time.monotonic() < deadline:
        seen = {key: positive(*key) for key in wanted}
        if all(want <= seen[key] for key, want in wanted.items()):
            break
        time.sleep(5)
    for key, want in wanted.items():
        assert want <= seen[key], f"{key[0]}: positive for {sorted(seen[key])}, expected {sorted(want)}"
    for name in (
        "sum(rate(xrides_api_rides_accepted_total[1m]))",
        "sum(rate(xrides_persister_rows_upserted_total[1m]))",
    ):
        assert name in exprs
        (series,) = prometheus_query(base, name)["result"]
        assert float(series["value"][1]) > 0, f"{name} shows no rides"
