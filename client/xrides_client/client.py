"""The blocking client: ``send`` returns once the ride is in the spool; the I/O runs in threads."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from types import TracebackType
from typing import Any, Unpack

from xrides_client.engine import Engine, TransportFactory
from xrides_client.options import OptionChanges, Options
from xrides_client.outcomes import Handle, Outcome
from xrides_client.stats import Stats

DEFAULT_SPOOL = "xrides-spool.sqlite3"


class Client:
    """Send rides to the XRides API; each ``send`` gives a :class:`Handle` for the ride's outcome.

    ``on_outcome`` runs on the client's I/O threads: keep it short, and do not call ``flush`` or
    ``close`` from it. Rides left in the spool by an earlier client are resent at once; their
    handles are in :attr:`recovered` and their outcomes reach ``on_outcome`` and ``outcomes()``.
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
        self.options = replace(options or Options(), **changes)
        self._engine = Engine(
            url, api_key, os.fspath(spool), self.options, on_outcome, on_stats, transport_factory
        )

    @property
    def recovered(self) -> list[Handle]:
        return self._engine.recovered

    def send(self, ride: Mapping[str, Any]) -> Handle:
        """Spool the ride (durably, before returning) and queue it for the API.

        Blocks while ``max_queue`` rides wait to be sent (back-pressure). Raises TypeError/ValueError
        for a ride that is not JSON (nothing is written), FatalError after the API refused the key,
        ClientClosedError after ``close``.
        """
        return self._engine.submit([ride])[0]

    def send_many(
        self, rides: Iterable[Mapping[str, Any]], source: tuple[str, int] | None = None
    ) -> list[Handle]:
        """Like ``send`` for many rides, with one spool commit (one fsync) for all of them.

        ``source``: (a name for where the rides come from, how many of its rides are spooled once
        these are), committed with them; :meth:`source_position` reads it back after a restart."""
        return self._engine.submit(list(rides), source)

    def source_position(self, name: str) -> int:
        """How many rides of ``name`` an earlier client on this spool spooled (to resume after them)."""
        return self._engine.source_position(name)

    def flush(self, timeout: float | None = None) -> bool:
        """Send what waits without lingering, and wait until every ride has its final outcome.

        Returns False when ``timeout`` passed first.
        """
        return self._engine.flush(timeout)

    def outcomes(self, timeout: float | None = None) -> Iterator[Outcome]:
        """Finished outcomes as they come, until every ride sent so far has one (or ``timeout``).

        The client keeps the last ``outcome_buffer`` outcomes nobody has read yet.
        """
        return self._engine.outcomes(timeout)

    def stats(self) -> Stats:
        return self._engine.stats()

    def close(self, flush: bool = True, timeout: float | None = None) -> None:
        """Stop the threads; with ``flush``, first wait (up to ``timeout``) for every outcome.

        Rides without an outcome stay in the spool for the next client on it; waiting on their
        handles raises ClientClosedError.
        """
        self._engine.close(flush, timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close(flush=kind is None)
