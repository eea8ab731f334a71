"""The asyncio client: the same engine, its outcomes handed to the event loop.

The engine's threads never touch the loop directly: each outcome is passed with
``loop.call_soon_threadsafe``, and the spool write of ``send`` runs in a worker thread, so the loop
never waits for an fsync.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Mapping
from dataclasses import replace
from types import TracebackType
from typing import Any, Unpack

from xrides_client.client import DEFAULT_SPOOL
from xrides_client.engine import Engine, TransportFactory
from xrides_client.errors import ClientClosedError
from xrides_client.options import OptionChanges, Options
from xrides_client.outcomes import Handle, Outcome
from xrides_client.stats import Stats

log = logging.getLogger("xrides_client")


class AsyncHandle:
    """Await it for the ride's :class:`Outcome` (ClientClosedError if the client closed first)."""

    __slots__ = ("_future", "handle")

    def __init__(self, handle: Handle, future: asyncio.Future[Outcome]) -> None:
        self.handle = handle
        self._future = future

    @property
    def outcome(self) -> Outcome | None:
        return self.handle.outcome

    @property
    def spool_id(self) -> int:
        return self.handle.spool_id

    @property
    def booking_id(self) -> object:
        return self.handle.booking_id

    def done(self) -> bool:
        return self._future.done()

    def __await__(self) -> Generator[Any, None, Outcome]:
        return asyncio.shield(self._future).__await__()


class AsyncClient:
    """``AsyncClient(url, key, ...)`` takes the same arguments as :class:`~xrides_client.Client`.

    Create it inside a running event loop; ``on_outcome`` runs on that loop.
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        spool: str | os.PathLike[str] = DEFAULT_SPOOL,
        on_outcome: Callable[[Outcome], None] | None = None,
        on_stats: Callable[[Stats], None] | None = None,
        options: Options | None = None,
        transport_factory: TransportFactory | None = None,
        **changes: Unpack[OptionChanges],
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self.options = replace(options or Options(), **changes)
        self._on_outcome = on_outcome
        self._buffer: deque[Outcome] = deque(maxlen=self.options.outcome_buffer)
        self._waiting = 0  # handles of this client whose outcome has not reached the loop yet
        self._changed = asyncio.Event()
        self._engine = Engine(
            url,
            api_key,
            os.fspath(spool),
            self.options,
            None,
            on_stats,
            transport_factory,
            buffer_outcomes=False,
        )
        self.recovered = [self._wrap(h) for h in self._engine.recovered]

    def _wrap(self, handle: Handle) -> AsyncHandle:
        future: asyncio.Future[Outcome] = self._loop.create_future()
        self._waiting += 1
        wrapped = AsyncHandle(handle, future)

        def arrived(done: Handle) -> None:  # on the loop
            self._waiting -= 1
            outcome = done.outcome
            if not future.done():
                if outcome is None:
                    future.set_exception(ClientClosedError("the client closed before this ride finished"))
                    future.exception()  # retrieved: nobody has to await a ride left in the spool
                else:
                    future.set_result(outcome)
            self._changed.set()
            if outcome is not None:
                self._buffer.append(outcome)
                if self._on_outcome is not None:
                    try:
                        self._on_outcome(outcome)
                    except Exception:
                        log.exception("on_outcome raised", extra={"xrides.spool_id": outcome.spool_id})

        def from_engine(done: Handle) -> None:  # on an engine thread, or here if already done
            if self._loop.is_closed():
                return
            self._loop.call_soon_threadsafe(arrived, done)

        handle.add_listener(from_engine)
        return wrapped

    async def send(self, ride: Mapping[str, Any]) -> AsyncHandle:
        """Spool the ride (in a worker thread) and queue it; await the returned handle for its outcome."""
        (handle,) = await asyncio.to_thread(self._engine.submit, [ride])
        return self._wrap(handle)

    async def send_many(
        self, rides: Iterable[Mapping[str, Any]], source: tuple[str, int] | None = None
    ) -> list[AsyncHandle]:
        handles = await asyncio.to_thread(self._engine.submit, list(rides), source)
        return [self._wrap(h) for h in handles]

    def source_position(self, name: str) -> int:
        """How many rides of ``name`` an earlier client on this spool spooled."""
        return self._engine.source_position(name)

    async def _until_settled(self, timeout: float | None) -> bool:  # noqa: ASYNC109
        async def settled() -> None:
            while self._waiting > 0:
                self._changed.clear()
                await self._changed.wait()

        try:
            await asyncio.wait_for(settled(), timeout)
        except TimeoutError:
            return False
        return True

    # ``timeout`` (not asyncio.timeout) keeps the signatures of Client's methods: one API to learn.
    async def flush(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Send without lingering and wait until every ride of this client has its outcome."""
        self._engine.begin_flush()
        try:
            return await self._until_settled(timeout)
        finally:
            self._engine.end_flush()

    async def outcomes(self, timeout: float | None = None) -> AsyncIterator[Outcome]:  # noqa: ASYNC109
        """Finished outcomes as they come, until every ride sent so far has one (or ``timeout``)."""
        deadline = None if timeout is None else self._loop.time() + timeout
        while True:
            while self._buffer:
                yield self._buffer.popleft()
            if self._waiting <= 0:
                return
            self._changed.clear()
            remaining = None if deadline is None else deadline - self._loop.time()
            if remaining is not None and remaining <= 0:
                return
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return

    def stats(self) -> Stats:
        return self._engine.stats()

    async def close(self, flush: bool = True, timeout: float | None = None) -> None:  # noqa: ASYNC109
        if flush:
            await self.flush(timeout)
        await asyncio.to_thread(self._engine.close, False)
        await asyncio.sleep(0)  # let the outcomes of abandoned rides reach their futures

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close(flush=kind is None)
