"""The blocking client against the fake API: batching, answers, retries, idempotency, tracking."""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from xrides_client import Client, ClientClosedError, FatalError, Outcome, SpoolError, Stats, log_json_to

from tests.fake_api import FakeApi
from tests.helpers import FAST, ride


def make(api: FakeApi, spool: Path, **changes: Any) -> Client:
    return Client(api.url, api.api_key, spool=spool, options=FAST, **changes)


def outcomes_of(client: Client, rides: list[dict[str, Any]], timeout: float = 10) -> list[Outcome]:
    handles = client.send_many(rides)
    assert client.flush(timeout), "not every ride reached a final outcome"
    return [h.wait(0) for h in handles]


def test_a_batch_is_sent_stored_and_tracked(api: FakeApi, spool: Path) -> None:
    rides = [ride(i) for i in range(1, 11)]
    with make(api, spool) as client:
        outcomes = outcomes_of(client, rides)
        stats = client.stats()
    assert [o.kind for o in outcomes] == ["stored"] * 10
    assert [o.booking_id for o in outcomes] == list(range(1, 11))
    assert {o.batch_request_id for o in outcomes} == {"b0-0"}
    assert [o.request_id for o in outcomes] == [f"r0-{i}" for i in range(10)]
    assert all(o.tracked_after_s is not None and 0 <= o.tracked_after_s < 5 for o in outcomes)
    (post,) = api.posts
    assert post.path == "/v1/rides/batch"
    assert post.headers["Content-Type"] == "application/json"
    assert post.headers["Authorization"] == "Bearer test-key"
    assert post.key
    assert json.loads(post.body) == rides
    assert stats.outcomes == {"stored": 10}
    assert stats.spool_depth == 0
    assert stats.tracking_delay_count == 10
    assert stats.tracking_delay_p50_s is not None


def test_batches_are_cut_by_count(api: FakeApi, spool: Path) -> None:
    with make(api, spool, batch_size=4) as client:
        outcomes_of(client, [ride(i) for i in range(1, 11)])
    assert [len(json.loads(p.body)) for p in api.posts] == [4, 4, 2]
    assert len(set(api.keys_of())) == 3


def test_requests_share_one_kept_alive_connection(api: FakeApi, spool: Path) -> None:
    with make(api, spool, batch_size=2) as client:
        outcomes_of(client, [ride(i) for i in range(1, 7)])
    assert len(api.posts) == 3
    assert len({p.peer_port for p in api.posts}) == 1


def test_refused_rides_carry_the_platforms_errors(api: FakeApi, spool: Path) -> None:
    with make(api, spool) as client:
        good, bad, other = outcomes_of(client, [ride(1), ride(2, vehicle_model_id="28"), ride(3)])
        depth = client.stats().spool_depth
    assert (good.kind, other.kind) == ("stored", "stored")
    assert bad.kind == "refused"
    assert bad.reason == "vehicle_model_id data type mismatch, vehicle_model_id expected to be <class 'int'>"
    assert bad.error_code == "validation_failed"
    assert [e["field"] for e in bad.errors] == ["vehicle_model_id"]
    assert bad.http_status == 207
    assert not bad.ok
    assert depth == 0  # a refusal is final: nothing to resend


@pytest.mark.parametrize("batch", [True, False])
def test_a_request_id_on_a_refusal_is_kept(api: FakeApi, spool: Path, batch: bool) -> None:
    api.refusal_request_ids = True
    with make(api, spool, batch=batch) as client:
        (refused,) = outcomes_of(client, [ride(1, user_id="x")])
    assert refused.kind == "refused"
    assert refused.request_id in ("x0-0", "x0-1")


def test_503_is_retried_after_retry_after_with_the_same_key_and_body(api: FakeApi, spool: Path) -> None:
    api.retry_after = "1"
    api.script.append("503")
    started = time.monotonic()
    with make(api, spool) as client:
        (outcome,) = outcomes_of(client, [ride(1)])
        retries = client.stats().retries
    assert time.monotonic() - started >= 1.0
    assert outcome.kind == "stored"
    assert outcome.attempts == 2
    first, second = api.posts
    assert (first.status, second.status) == (503, 202)
    assert first.key == second.key
    assert first.body == second.body
    assert retries == 1


def test_429_is_retried(api: FakeApi, spool: Path) -> None:
    api.script.extend(["429", "429"])
    with make(api, spool) as client:
        (outcome,) = outcomes_of(client, [ride(1)])
    assert outcome.kind == "stored"
    assert [p.status for p in api.posts] == [429, 429, 202]
    assert len(set(api.keys_of())) == 1


def test_a_lost_answer_is_retried_without_duplicating_rides(api: FakeApi, spool: Path) -> None:
    api.script.extend(["drop", "drop"])  # processed twice over? no: the key makes the retries replays
    with make(api, spool) as client:
        outcomes = outcomes_of(client, [ride(i) for i in range(1, 6)])
        replayed = client.stats().replayed
    assert [o.kind for o in outcomes] == ["stored"] * 5
    assert api.accepted_bookings() == dict.fromkeys(range(1, 6), 1)
    assert len(api.posts) == 3
    assert len(set(api.keys_of())) == 1
    assert len({p.body for p in api.posts}) == 1
    assert api.posts[-1].replayed
    assert replayed == 1


def test_a_reset_before_processing_is_retried(api: FakeApi, spool: Path) -> None:
    api.script.append("reset")
    with make(api, spool) as client:
        (outcome,) = outcomes_of(client, [ride(1)])
    assert outcome.kind == "stored"
    assert api.accepted_bookings() == {1: 1}


def test_an_unreachable_api_fails_rides_after_bounded_attempts(spool: Path) -> None:
    with Client("http://127.0.0.1:9", "k", spool=spool, options=FAST, max_attempts=3) as client:
        (outcome,) = outcomes_of(client, [ride(1)])
    assert outcome.kind == "failed"
    assert "no answer" in (outcome.reason or "")
    assert "gave up after 3 attempts" in (outcome.reason or "")
    assert outcome.kept_in_spool


def test_bounded_retries_fail_the_rides_which_stay_for_the_next_client(api: FakeApi, spool: Path) -> None:
    api.script.extend(["503"] * 3)
    with make(api, spool, max_attempts=3) as client:
        outcomes = outcomes_of(client, [ride(1), ride(2)])
        stats = client.stats()
    assert [o.kind for o in outcomes] == ["failed", "failed"]
    assert all(
        "HTTP 503" in (o.reason or "") and "gave up after 3 attempts" in (o.reason or "") for o in outcomes
    )
    assert all(o.kept_in_spool and o.http_status == 503 for o in outcomes)
    assert len(api.posts) == 3
    assert api.accepted == []
    assert (stats.held, stats.spool_depth) == (2, 2)
    with make(api, spool) as again:
        assert again.flush(10)
        recovered = [h.wait(0) for h in again.recovered]
    assert [o.kind for o in recovered] == ["stored", "stored"]
    assert all(o.recovered for o in recovered)
    assert len(set(api.keys_of())) == 1  # the same request, resent with its key
    assert api.accepted_bookings() == {1: 1, 2: 1}


def test_max_retry_time_bounds_the_wait(api: FakeApi, spool: Path) -> None:
    api.retry_after = "2"
    api.script.extend(["503"] * 5)
    started = time.monotonic()
    with make(api, spool, max_retry_time_s=0.5) as client:
        (outcome,) = outcomes_of(client, [ride(1)])
    assert time.monotonic() - started < 1.5
    assert outcome.kind == "failed"
    assert "gave up after 1 attempts" in (outcome.reason or "")


def test_retriable_items_go_in_a_new_request_with_a_new_key(api: FakeApi, spool: Path) -> None:
    api.kafka_fails_once = {2}
    with make(api, spool) as client:
        outcomes = outcomes_of(client, [ride(1), ride(2), ride(3)])
    assert [o.kind for o in outcomes] == ["stored"] * 3
    first, second = api.posts
    assert first.key != second.key
    assert [r["booking_id"] for r in json.loads(second.body)] == [2]
    assert api.accepted_bookings() == {1: 1, 2: 1, 3: 1}


def test_a_refused_key_stops_the_client(api: FakeApi, spool: Path) -> None:
    with Client(api.url, "wrong", spool=spool, options=FAST) as client:
        outcomes = outcomes_of(client, [ride(1), ride(2)])
        with pytest.raises(FatalError) as raised:
            client.send(ride(3))
        depth = client.stats().spool_depth
    assert [o.kind for o in outcomes] == ["failed", "failed"]
    assert all(o.reason == "HTTP 401: unknown API key" and o.kept_in_spool for o in outcomes)
    assert raised.value.http_status == 401
    assert len(api.posts) == 1  # no retry of a refused key
    assert depth == 2


def test_409_fails_the_request_and_the_next_client_uses_a_new_key(api: FakeApi, spool: Path) -> None:
    api.script.append("409")
    with make(api, spool) as client:
        (outcome,) = outcomes_of(client, [ride(1)])
    assert outcome.kind == "failed"
    assert outcome.http_status == 409
    with make(api, spool) as again:
        assert again.flush(10)
        assert again.recovered[0].wait(0).kind == "stored"
    first, second = api.keys_of()
    assert first != second


def test_413_halves_the_batch(api: FakeApi, spool: Path) -> None:
    api.script.append("413")
    with make(api, spool) as client:
        outcomes = outcomes_of(client, [ride(i) for i in range(1, 5)])
    assert [o.kind for o in outcomes] == ["stored"] * 4
    assert [len(json.loads(p.body)) for p in api.posts] == [4, 2, 2]


def test_singles_go_to_v1_rides(api: FakeApi, spool: Path) -> None:
    rides = [ride(1), ride(2, driver_id=None)]
    with make(api, spool, batch=False) as client:
        stored, refused = outcomes_of(client, rides)
    assert [p.path for p in api.posts] == ["/v1/rides", "/v1/rides"]
    assert [json.loads(p.body) for p in api.posts] == rides
    assert len(set(api.keys_of("/v1/rides"))) == 2
    assert (stored.kind, stored.request_id, stored.batch_request_id) == ("stored", "r0-0", None)
    assert refused.kind == "refused"
    assert refused.http_status == 422
    assert refused.errors[0]["field"] == "driver_id"


def test_final_states_after_acceptance(api: FakeApi, spool: Path) -> None:
    api.polls_before_final = 2
    api.final_states = {2: ("superseded", None), 3: ("failed", "dead-lettered: bad row")}
    with make(api, spool) as client:
        stored, superseded, failed = outcomes_of(client, [ride(1), ride(2), ride(3)])
        depth = client.stats().spool_depth
    assert (stored.kind, stored.superseded) == ("stored", False)
    assert (superseded.kind, superseded.superseded) == ("stored", True)
    assert (failed.kind, failed.reason, failed.kept_in_spool) == ("failed", "dead-lettered: bad row", False)
    assert stored.stored_at is not None
    assert len(api.gets) >= 3  # one GET per poll answers for the whole batch
    assert set(api.gets) == {"b0-0"}
    assert depth == 0


def test_tracking_falls_back_to_each_rides_id(api: FakeApi, spool: Path) -> None:
    api.forget_batches = True
    with make(api, spool) as client:
        outcomes = outcomes_of(client, [ride(1), ride(2)])
    assert [o.kind for o in outcomes] == ["stored", "stored"]
    assert {"r0-0", "r0-1"} <= set(api.gets)


def test_without_tracking_accepted_is_final(api: FakeApi, spool: Path) -> None:
    with make(api, spool, track=False) as client:
        (outcome,) = outcomes_of(client, [ride(1)])
        depth = client.stats().spool_depth
    assert (outcome.kind, outcome.request_id, outcome.reason) == ("accepted", "r0-0", None)
    assert outcome.ok
    assert api.gets == []
    assert depth == 0


def test_tracking_gives_up_after_its_timeout(api: FakeApi, spool: Path) -> None:
    api.polls_before_final = 10**6
    with make(api, spool, track_timeout_s=0.2) as client:
        (outcome,) = outcomes_of(client, [ride(1)])
    assert outcome.kind == "accepted"
    assert (outcome.reason or "").startswith("tracking timed out")


def test_outcomes_reach_the_callback_and_the_iterator(api: FakeApi, spool: Path) -> None:
    seen: list[Outcome] = []
    with make(api, spool, on_outcome=seen.append) as client:
        client.send_many([ride(i) for i in range(1, 6)])
        iterated = list(client.outcomes(timeout=10))
    assert sorted(int(str(o.booking_id)) for o in iterated) == [1, 2, 3, 4, 5]
    assert sorted(o.spool_id for o in seen) == sorted(o.spool_id for o in iterated)


def test_a_raising_callback_does_not_stop_the_client(api: FakeApi, spool: Path) -> None:
    def explode(outcome: Outcome) -> None:
        raise RuntimeError("boom")

    with make(api, spool, on_outcome=explode) as client:
        outcomes = outcomes_of(client, [ride(1), ride(2)])
    assert [o.kind for o in outcomes] == ["stored", "stored"]


def test_stats_are_reported_periodically(api: FakeApi, spool: Path) -> None:
    reports: list[Stats] = []
    got = threading.Event()

    def on_stats(stats: Stats) -> None:
        reports.append(stats)
        if stats.outcomes.get("stored") == 2:
            got.set()

    with make(api, spool, on_stats=on_stats, stats_interval_s=0.05) as client:
        outcomes_of(client, [ride(1), ride(2)])
        assert got.wait(5), "no report counted the two stored rides"
    final = reports[-1]
    assert (final.requests, final.retries, final.spool_depth, final.queued, final.tracking) == (1, 0, 0, 0, 0)
    assert final.polls >= 1


def test_two_versions_of_a_booking_travel_in_order_in_separate_requests(api: FakeApi, spool: Path) -> None:
    with make(api, spool) as client:
        outcomes_of(client, [ride(7), ride(8), ride(7, car_cancellation=1)])
    assert [len(json.loads(p.body)) for p in api.posts] == [2, 1]
    assert [r.get("car_cancellation") for r in api.accepted] == [None, None, 1]


def test_a_ride_that_is_not_json_is_refused_before_anything_is_written(api: FakeApi, spool: Path) -> None:
    with make(api, spool) as client:
        with pytest.raises(ValueError, match="JSON"):
            client.send({"booking_id": float("nan")})
        with pytest.raises(TypeError):
            client.send([1, 2])  # type: ignore[arg-type]
        assert client.stats().spool_depth == 0


def test_send_after_close_raises(api: FakeApi, spool: Path) -> None:
    client = make(api, spool)
    client.close()
    with pytest.raises(ClientClosedError):
        client.send(ride(1))


def test_one_spool_serves_one_client(api: FakeApi, spool: Path) -> None:
    with make(api, spool), pytest.raises(SpoolError, match="in use"):
        make(api, spool)


def test_logs_are_json_lines(api: FakeApi, spool: Path) -> None:
    api.script.append("503")
    stream = io.StringIO()
    handler = log_json_to(stream, logging.INFO)
    try:
        with make(api, spool) as client:
            outcomes_of(client, [ride(1)])
    finally:
        logging.getLogger("xrides_client").removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    retry = next(line for line in lines if line["message"] == "retrying request")
    assert retry["log.logger"] == "xrides_client"
    assert retry["log.level"] == "warning"
    assert retry["http.response.status_code"] == 503
    assert retry["xrides.idempotency_key"] == api.posts[0].key
