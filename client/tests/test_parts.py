"""The pure parts: batch cutting, reading answers, backoff, options, and the spool file."""

from __future__ import annotations

import dataclasses
import json
import random
import sqlite3
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from xrides_client import Options, SpoolError
from xrides_client.answers import read_batch_answer, read_single_answer
from xrides_client.backoff import parse_retry_after, retry_delay
from xrides_client.batcher import Batcher, Pending, encode_batch
from xrides_client.csvfile import convert
from xrides_client.options import OptionChanges
from xrides_client.outcomes import Handle
from xrides_client.spool import Accepted, Spool
from xrides_client.transport import Response


def pending(i: int, booking: object = None, size: int = 10, at: float = 0.0) -> Pending:
    body = json.dumps({"booking_id": booking if booking is not None else i, "pad": "x" * size}).encode()
    return Pending(i, body, booking if booking is not None else i, Handle(i, i), at)


# -- batcher --------------------------------------------------------------------------------------


def test_a_batch_waits_for_linger_unless_full_or_flushing() -> None:
    batcher = Batcher(max_count=3, max_bytes=10_000, linger_s=0.05)
    batcher.add(pending(1, at=100.0))
    assert batcher.take(100.01) == []
    assert batcher.deadline() == pytest.approx(100.05)
    assert [p.spool_id for p in batcher.take(100.01, flushing=True)] == [1]
    for i in (2, 3, 4, 5):
        batcher.add(pending(i, at=200.0))
    assert [p.spool_id for p in batcher.take(200.0)] == [2, 3, 4]  # full by count
    assert batcher.take(200.01) == []
    assert [p.spool_id for p in batcher.take(200.06)] == [5]  # linger over


def test_a_batch_never_exceeds_the_byte_limit_unless_one_ride_does() -> None:
    items = [pending(i, size=100) for i in range(1, 8)]
    limit = len(encode_batch(items[:3]))
    batcher = Batcher(max_count=1000, max_bytes=limit, linger_s=0)
    for item in items:
        batcher.add(item)
    sizes = []
    while taken := batcher.take(0.0, flushing=True):
        sizes.append(len(taken))
        assert len(encode_batch(taken)) <= limit
    assert sizes == [3, 3, 1]
    huge = Batcher(max_count=1000, max_bytes=10, linger_s=0)
    huge.add(pending(9, size=500))
    assert [p.spool_id for p in huge.take(0.0, flushing=True)] == [9]


def test_a_repeated_booking_starts_a_new_batch() -> None:
    batcher = Batcher(max_count=10, max_bytes=10_000, linger_s=0)
    for i, booking in enumerate([7, 8, 7, 9], start=1):
        batcher.add(pending(i, booking=booking))
    assert [p.spool_id for p in batcher.take(0.0, flushing=True)] == [1, 2]
    assert [p.spool_id for p in batcher.take(0.0, flushing=True)] == [3, 4]


def test_rides_put_back_go_first_in_their_order() -> None:
    batcher = Batcher(max_count=10, max_bytes=10_000, linger_s=0)
    batcher.add(pending(5))
    batcher.put_back([pending(2), pending(3)])
    assert [p.spool_id for p in batcher.take(0.0, flushing=True)] == [2, 3, 5]


def test_single_mode_sends_one_ride_per_request_without_linger() -> None:
    batcher = Batcher(max_count=500, max_bytes=10_000, linger_s=5, single=True)
    batcher.add(pending(1))
    batcher.add(pending(2))
    assert [p.spool_id for p in batcher.take(0.0)] == [1]


# -- answers --------------------------------------------------------------------------------------


def answer(status: int, body: Any, **headers: str) -> Response:
    return Response(
        status, {k.lower().replace("_", "-"): v for k, v in headers.items()}, json.dumps(body).encode()
    )


def test_a_mixed_batch_answer() -> None:
    body = {
        "request_id": "b1-9",
        "status_url": "/v1/requests/b1-9",
        "accepted": 1,
        "rejected": 2,
        "items": [
            {"index": 0, "status": "Success", "booking_id": 1, "request_id": "r2-5"},
            {
                "index": 1,
                "status": "Failed",
                "booking_id": 2,
                "error_message": "user_id must not be null",
                "error_code": "validation_failed",
                "errors": [{"field": "user_id", "code": "null"}],
            },
            {"index": 2, "status": "Failed", "error_message": "Kafka...", "retriable": True},
        ],
    }
    verdict = read_batch_answer(answer(207, body, Idempotent_Replayed="true"), 3)
    assert verdict.action == "settle"
    assert verdict.batch_request_id == "b1-9"
    assert verdict.replayed
    accepted, refused, retry = verdict.items
    assert (accepted.kind, accepted.request_id) == ("accepted", "r2-5")
    assert (refused.kind, refused.reason, refused.error_code) == (
        "refused",
        "user_id must not be null",
        "validation_failed",
    )
    assert refused.errors == ({"field": "user_id", "code": "null"},)
    assert retry.kind == "retry"


def test_an_answer_without_one_item_per_ride_fails_the_request() -> None:
    verdict = read_batch_answer(answer(202, {"request_id": None, "items": []}), 2)
    assert verdict.action == "fail"
    assert "one item per ride" in verdict.reason


REQUEST_LEVEL = {503: "retry", 429: "retry", 500: "retry", 502: "retry", 408: "retry",
                 401: "fatal", 403: "fatal", 404: "fatal",
                 409: "fail", 400: "fail", 415: "fail", 413: "split"}  # fmt: skip


@pytest.mark.parametrize(("status", "action"), REQUEST_LEVEL.items())
def test_request_level_answers(status: int, action: str) -> None:
    verdict = read_batch_answer(
        answer(status, {"status": "Failed", "error_message": "why"}, Retry_After="3"), 4
    )
    assert verdict.action == action
    assert verdict.reason == f"HTTP {status}: why"
    assert verdict.retry_after_s == (3.0 if action == "retry" else None)
    assert verdict.forget_key == (status == 409)


def test_a_non_json_error_page_is_reported_with_its_text() -> None:
    verdict = read_batch_answer(Response(502, {}, b"<html>Bad Gateway</html>"), 1)
    assert (verdict.action, verdict.reason) == ("retry", "HTTP 502: <html>Bad Gateway</html>")


def test_single_ride_answers() -> None:
    ok = read_single_answer(answer(202, {"booking_id": 1, "status": "Success", "request_id": "r0-1"}))
    assert (ok.action, ok.items[0].kind, ok.items[0].request_id) == ("settle", "accepted", "r0-1")
    refusal = {
        "status": "Failed",
        "error_message": "bad",
        "error_code": "validation_failed",
        "request_id": "r0-2",
    }
    refused = read_single_answer(answer(422, refusal))
    assert (refused.items[0].kind, refused.items[0].request_id, refused.items[0].reason) == (
        "refused",
        "r0-2",
        "bad",
    )
    too_big = read_single_answer(answer(413, {"status": "Failed", "error_message": "too big"}))
    assert (too_big.action, too_big.items[0].kind) == ("settle", "refused")


# -- backoff --------------------------------------------------------------------------------------


def test_full_jitter_stays_under_an_exponential_ceiling() -> None:
    rng = random.Random(7)
    for attempt, ceiling in [(1, 0.2), (2, 0.4), (3, 0.8), (10, 5.0)]:
        draws = [retry_delay(attempt, 0.2, 5.0, rng=rng) for _ in range(500)]
        assert all(0 <= d <= ceiling for d in draws)
        assert max(draws) > 0.9 * ceiling
        assert min(draws) < 0.1 * ceiling


def test_retry_after_is_a_floor() -> None:
    rng = random.Random(1)
    assert all(retry_delay(1, 0.2, 5.0, retry_after_s=2.0, rng=rng) == 2.0 for _ in range(100))
    assert 0 <= retry_delay(8, 1.0, 30.0, retry_after_s=0.0, rng=rng) <= 30.0


def test_retry_after_forms() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


# -- options --------------------------------------------------------------------------------------


def test_the_keyword_form_lists_every_option() -> None:
    assert set(OptionChanges.__annotations__) == {f.name for f in dataclasses.fields(Options)}


@pytest.mark.parametrize(
    "changes",
    [{"batch_size": 1001}, {"batch_size": 0}, {"max_attempts": 0}, {"linger_s": -1}, {"spool_sync": "off"},
     {"poll_max_s": 0.01}],
)  # fmt: skip
def test_bad_options_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        Options(**changes)


# -- spool ----------------------------------------------------------------------------------------


def test_the_spool_keeps_requests_rides_and_tracking_across_opens(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    spool = Spool(path)
    a, b, c, d = spool.add(
        [b'{"booking_id":1}', b'{"booking_id":2}', b'{"booking_id":3}', b'{"booking_id":4}']
    )
    batch = spool.open_batch("/v1/rides/batch", "key-1", b"[exact bytes]", [b, a])
    spool.settle(spool.open_batch("/v1/rides/batch", "key-2", b"[...]", [c, d]),
                 tracking=[Accepted(c, "r0-1", "b0-0", "b0-0", 1234.5)], remove=[d])  # fmt: skip
    assert spool.depth == 3
    spool.close()

    again = Spool(path)
    found = again.recover()
    assert found.queued == []
    (resend,) = found.batches
    assert (resend.id, resend.idempotency_key, resend.body) == (batch, "key-1", b"[exact bytes]")
    assert [r.id for r in resend.rides] == [b, a]  # the body's order
    (tracked,) = found.tracking
    assert (tracked.id, tracked.request_id, tracked.group_id, tracked.accepted_at) == (
        c,
        "r0-1",
        "b0-0",
        1234.5,
    )
    again.dissolve(batch)
    assert [r.id for r in again.recover().queued] == [a, b]
    assert again.recover().batches == []
    again.remove([c])
    assert again.depth == 2
    again.close()


def test_the_spool_is_wal_with_full_sync_and_exclusive(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    spool = Spool(path)
    with pytest.raises(SpoolError, match="in use"):
        Spool(path)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()
    assert spool._db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    spool.close()
    Spool(path).close()  # the lock went with the first spool


def test_a_file_that_is_not_a_spool_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    path.write_bytes(b"not a database" * 100)
    with pytest.raises(SpoolError, match="cannot use"):
        Spool(path)
    path.unlink()
    Spool(path).close()  # and its lock was released


# -- properties -----------------------------------------------------------------------------------


@given(
    sizes=st.lists(st.integers(0, 300), min_size=1, max_size=60),
    bookings=st.lists(st.integers(1, 5), min_size=60, max_size=60),
    max_count=st.integers(1, 20),
    max_bytes=st.integers(50, 2000),
)
def test_batches_keep_every_ride_once_in_order_within_limits(
    sizes: list[int], bookings: list[int], max_count: int, max_bytes: int
) -> None:
    items = [pending(i, booking=bookings[i], size=size) for i, size in enumerate(sizes)]
    batcher = Batcher(max_count=max_count, max_bytes=max_bytes, linger_s=0)
    for item in items:
        batcher.add(item)
    taken: list[Pending] = []
    while batch := batcher.take(0.0, flushing=True):
        assert len(batch) <= max_count
        assert len(batch) == 1 or len(encode_batch(batch)) <= max_bytes
        assert len({p.booking_id for p in batch}) == len(batch)
        assert json.loads(encode_batch(batch)) == [json.loads(p.body) for p in batch]
        taken += batch
    assert [p.spool_id for p in taken] == [p.spool_id for p in items]


@given(st.integers(-(10**20), 10**20))
def test_an_integer_cell_becomes_that_integer(number: int) -> None:
    assert convert("user_id", str(number)) == number


@given(st.text(max_size=12))
def test_a_cell_is_null_a_number_or_exactly_its_text(cell: str) -> None:
    value = convert("vehicle_model_id", cell)
    if value is not None and not isinstance(value, int):
        assert value == cell
    if value is None:
        assert cell.strip() in ("", "NULL")


def test_a_sources_position_is_committed_with_its_rides(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db")
    assert spool.source_position("/data/rides.csv") == 0
    spool.add([b"{}", b"{}"], ("/data/rides.csv", 2))
    spool.add([b"{}"], ("/data/rides.csv", 3))
    spool.close()
    again = Spool(tmp_path / "s.db")  # a restarted client reads where the file's sending stopped
    assert again.source_position("/data/rides.csv") == 3
    assert again.depth == 3
    with pytest.raises(sqlite3.IntegrityError):  # a bad ride fails the whole transaction
        again.add([b"{}", None], ("/data/rides.csv", 5))  # type: ignore[list-item]
    assert (again.source_position("/data/rides.csv"), again.depth) == (3, 3)
    again.close()
