"""The spool across a stop or a crash: what was not acknowledged is resent, with its key and body."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from xrides_client import Client, ClientClosedError

from tests.fake_api import FakeApi
from tests.helpers import FAST, ride

CLIENT_DIR = Path(__file__).resolve().parents[1]


def wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_close_without_flush_leaves_the_request_for_the_next_client(api: FakeApi, spool: Path) -> None:
    api.script.append("hang")  # the first request never gets an answer
    first = Client(api.url, api.api_key, spool=spool, options=FAST)
    handles = first.send_many([ride(1), ride(2), ride(3)])
    wait_for(lambda: len(api.posts) == 1)
    first.close(flush=False)
    with pytest.raises(ClientClosedError):
        handles[0].wait(1)
    hung = api.posts[0]

    with Client(api.url, api.api_key, spool=spool, options=FAST) as second:
        assert [h.booking_id for h in second.recovered] == [1, 2, 3]
        assert second.flush(10)
        outcomes = [h.wait(0) for h in second.recovered]
    assert [o.kind for o in outcomes] == ["stored"] * 3
    resent = api.posts[1]
    assert (resent.key, resent.body) == (hung.key, hung.body)
    assert api.accepted_bookings() == {1: 1, 2: 1, 3: 1}


def test_queued_rides_that_were_never_sent_are_sent_by_the_next_client(api: FakeApi, spool: Path) -> None:
    first = Client(api.url, api.api_key, spool=spool, options=FAST, linger_s=60)  # a batch that never fills
    first.send_many([ride(1), ride(2)])
    first.close(flush=False)
    assert api.posts == []
    with Client(api.url, api.api_key, spool=spool, options=FAST) as second:
        assert second.flush(10)
        assert [h.wait(0).kind for h in second.recovered] == ["stored", "stored"]
        assert second.stats().spool_depth == 0
    assert api.accepted_bookings() == {1: 1, 2: 1}


def test_an_answer_lost_before_a_crash_is_replayed_not_repeated(api: FakeApi, spool: Path) -> None:
    api.script.extend(["drop", "hang"])  # processed but unanswered; then the retry hangs
    first = Client(api.url, api.api_key, spool=spool, options=FAST)
    first.send_many([ride(1), ride(2)])
    wait_for(lambda: len(api.posts) == 2)
    first.close(flush=False)
    with Client(api.url, api.api_key, spool=spool, options=FAST) as second:
        assert second.flush(10)
        assert [h.wait(0).kind for h in second.recovered] == ["stored", "stored"]
    assert len(set(api.keys_of())) == 1
    assert api.posts[-1].replayed
    assert api.accepted_bookings() == {1: 1, 2: 1}


def test_tracking_continues_after_a_restart(api: FakeApi, spool: Path) -> None:
    api.polls_before_final = 10**6
    first = Client(api.url, api.api_key, spool=spool, options=FAST)
    first.send_many([ride(1), ride(2)])
    wait_for(lambda: len(api.gets) >= 2)
    first.close(flush=False)
    posts = len(api.posts)
    api.polls_before_final = 0
    with Client(api.url, api.api_key, spool=spool, options=FAST) as second:
        assert second.flush(10)
        outcomes = [h.wait(0) for h in second.recovered]
    assert [o.kind for o in outcomes] == ["stored", "stored"]
    assert all(o.request_id and o.batch_request_id == "b0-0" for o in outcomes)
    assert all((o.tracked_after_s or 0) > 0 for o in outcomes)
    assert len(api.posts) == posts  # nothing was sent again
    assert api.accepted_bookings() == {1: 1, 2: 1}


def test_a_killed_process_loses_nothing(api: FakeApi, spool: Path) -> None:
    api.script.append("hang")
    program = textwrap.dedent(
        f"""
        import sys, time
        from xrides_client import Client
        client = Client({api.url!r}, {api.api_key!r}, spool={str(spool)!r}, linger_s=0.01)
        client.send_many([{{"booking_id": i, "user_id": 1, "vehicle_model_id": 1, "travel_type_id": 2,
                           "driver_id": 0}} for i in range(1, 21)])
        client.send_many([{{"booking_id": i, "user_id": 1, "vehicle_model_id": 1, "travel_type_id": 2,
                           "driver_id": 0}} for i in range(21, 26)])
        print("spooled", flush=True)
        time.sleep(60)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", program],
        cwd=CLIENT_DIR,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(CLIENT_DIR)},
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "spooled"
        wait_for(lambda: len(api.posts) >= 1)  # the first batch is in flight (and hangs)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    in_flight = api.posts[0]
    with Client(api.url, api.api_key, spool=spool, options=FAST) as again:
        assert len(again.recovered) == 25
        assert again.flush(10)
        assert {h.wait(0).kind for h in again.recovered} == {"stored"}
    assert api.posts[1].key == in_flight.key
    assert api.posts[1].body == in_flight.body
    assert api.accepted_bookings() == dict.fromkeys(range(1, 26), 1)
