"""AsyncClient: the same engine, outcomes delivered on the event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from xrides_client import AsyncClient, ClientClosedError, Outcome

from tests.fake_api import FakeApi
from tests.helpers import FAST, ride


async def test_send_and_await_the_outcome(api: FakeApi, spool: Path) -> None:
    async with AsyncClient(api.url, api.api_key, spool=spool, options=FAST) as client:
        handle = await client.send(ride(1))
        outcome = await handle
        assert handle.done()
        assert handle.outcome is outcome
    assert outcome.kind == "stored"
    assert outcome.request_id == "r0-0"


async def test_many_rides_flush_and_iterate(api: FakeApi, spool: Path) -> None:
    async with AsyncClient(api.url, api.api_key, spool=spool, options=FAST) as client:
        handles = await client.send_many([ride(1), ride(2, vehicle_model_id="x"), ride(3)])
        assert await client.flush(10)
        seen = [o async for o in client.outcomes(timeout=1)]
    assert [h.outcome.kind for h in handles if h.outcome] == ["stored", "refused", "stored"]
    assert sorted(o.spool_id for o in seen) == sorted(h.spool_id for h in handles)


async def test_on_outcome_runs_on_the_loop_thread(api: FakeApi, spool: Path) -> None:
    threads: list[int] = []

    def on_outcome(outcome: Outcome) -> None:
        threads.append(threading.get_ident())

    async with AsyncClient(api.url, api.api_key, spool=spool, options=FAST, on_outcome=on_outcome) as client:
        await client.send_many([ride(1), ride(2)])
        assert await client.flush(10)
    assert threads == [threading.get_ident()] * 2


async def test_the_loop_keeps_running_while_the_api_is_slow(api: FakeApi, spool: Path) -> None:
    api.retry_after = "1"
    api.script.append("503")
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    started = time.monotonic()
    async with AsyncClient(api.url, api.api_key, spool=spool, options=FAST) as client:
        outcome = await (await client.send(ride(1)))
    task.cancel()
    assert outcome.kind == "stored"
    assert time.monotonic() - started >= 1
    assert ticks > 30  # the loop was free during the second of Retry-After


async def test_close_without_flush_fails_the_awaiters(api: FakeApi, spool: Path) -> None:
    api.script.append("hang")
    client = AsyncClient(api.url, api.api_key, spool=spool, options=FAST)
    handle = await client.send(ride(1))
    while not api.posts:
        await asyncio.sleep(0.01)
    await client.close(flush=False)
    with pytest.raises(ClientClosedError):
        await handle
    async with AsyncClient(api.url, api.api_key, spool=spool, options=FAST) as again:
        (recovered,) = again.recovered
        assert (await recovered).kind == "stored"


async def test_flush_times_out(api: FakeApi, spool: Path) -> None:
    api.script.append("hang")
    client = AsyncClient(api.url, api.api_key, spool=spool, options=FAST)
    await client.send(ride(1))
    assert not await client.flush(0.2)
    await client.close(flush=False)
