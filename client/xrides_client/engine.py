"""The one engine behind ``Client`` and ``AsyncClient``: a sender thread and a tracker thread.

The sender sends one request at a time, oldest rides first, so the API accepts a booking's later
versions after its earlier ones (see batcher.py for why that matters). Each request's
Idempotency-Key and exact body are in the spool before its first attempt and are reused, byte for
byte, on every retry, in this process or a later one on the same spool.

Threads and locks: ``_cond`` guards the queue, the live handles and the flags; the spool has its own
lock; no lock is held during HTTP. Outcomes are delivered (handle, callback, ``outcomes()``) from the
thread that learned them, after the spool reflects them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from xrides_client.answers import Verdict, read_batch_answer, read_single_answer
from xrides_client.backoff import retry_delay
from xrides_client.batcher import Batcher, Pending, encode_batch
from xrides_client.errors import ClientClosedError, FatalError
from xrides_client.options import Options
from xrides_client.outcomes import Handle, Outcome
from xrides_client.spool import Accepted, Spool, SpooledRide
from xrides_client.stats import Stats, StatsRecorder
from xrides_client.tracker import Tracked, Tracker
from xrides_client.transport import HttpTransport, Transport, TransportError

log = logging.getLogger("xrides_client")

BATCH_PATH = "/v1/rides/batch"
SINGLE_PATH = "/v1/rides"

TransportFactory = Callable[[], Transport]


@dataclass(slots=True)
class Request:
    """One POST: its spool row, key and exact body, and the rides in body order."""

    batch_id: int
    path: str
    key: str
    body: bytes
    items: list[Pending]


def encode_ride(ride: Mapping[str, Any]) -> bytes:
    """The bytes that go to the spool and, unchanged, to the API; fails before anything is written."""
    if not isinstance(ride, Mapping):
        raise TypeError(f"a ride is a mapping of field names to values, got {type(ride).__name__}")
    return json.dumps(dict(ride), ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _booking_id(body: bytes) -> object:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value.get("booking_id") if isinstance(value, dict) else None


class Engine:
    def __init__(
        self,
        url: str,
        api_key: str,
        spool_path: str,
        options: Options,
        on_outcome: Callable[[Outcome], None] | None = None,
        on_stats: Callable[[Stats], None] | None = None,
        transport_factory: TransportFactory | None = None,
        buffer_outcomes: bool = True,
    ) -> None:
        if not api_key:
            raise ValueError("an API key is required")
        HttpTransport(url, options.timeout_s)  # a malformed URL fails here, not in a thread
        self.options = options
        self._transport_factory = transport_factory or (lambda: HttpTransport(url, options.timeout_s))
        auth = {"Authorization": f"Bearer {api_key}"}
        self._post_headers = {**auth, "Content-Type": "application/json"}
        self._on_outcome = on_outcome
        self._on_stats = on_stats
        self._stats = StatsRecorder()
        self._cond = threading.Condition()
        self._submit_lock = threading.Lock()
        self._batcher = Batcher(options.batch_size, options.batch_bytes, options.linger_s, not options.batch)
        self._resend: deque[Request] = deque()
        self._live: dict[int, Handle] = {}
        self._buffer: deque[Outcome] | None = (
            deque(maxlen=options.outcome_buffer) if buffer_outcomes else None
        )
        self._flushing = 0
        self._stopping = False
        self._closed = False
        self._fatal: FatalError | None = None
        self._pause_until = 0.0
        self._stop = threading.Event()
        self._send_transport: Transport | None = None
        self._spool = Spool(spool_path, options.spool_sync)
        self._tracker = Tracker(
            options, self._transport_factory, auth, self._stats, self._finish_tracked, self.fatal
        )
        try:
            self.recovered: list[Handle] = self._recover()
        except BaseException:
            self._spool.close()
            raise
        self._threads = [
            threading.Thread(target=self._send_loop, name="xrides-client-sender", daemon=True),
            threading.Thread(target=self._tracker.run, name="xrides-client-tracker", daemon=True),
        ]
        if on_stats is not None:
            self._threads.append(
                threading.Thread(target=self._stats_loop, name="xrides-client-stats", daemon=True)
            )
        for thread in self._threads:
            thread.start()

    # -- the caller's side ------------------------------------------------------------------------

    def source_position(self, name: str) -> int:
        return self._spool.source_position(name)

    def submit(
        self, rides: Sequence[Mapping[str, Any]], source: tuple[str, int] | None = None
    ) -> list[Handle]:
        bodies = [encode_ride(ride) for ride in rides]
        with self._submit_lock:  # spool order == queue order, whatever the callers' threads
            with self._cond:
                self._check_open()
                while len(self._batcher) >= self.options.max_queue and not (self._stopping or self._fatal):
                    self._cond.wait()
                self._check_open()
            ids = self._spool.add(bodies, source)
            now = time.monotonic()
            pending = [
                Pending(i, body, ride.get("booking_id"), Handle(i, ride.get("booking_id")), now)
                for i, body, ride in zip(ids, bodies, rides, strict=True)
            ]
            with self._cond:
                fatal = self._fatal
                if fatal is None and not self._stopping:
                    for item in pending:
                        self._live[item.spool_id] = item.handle
                        self._batcher.add(item)
                    self._cond.notify_all()
                    return [p.handle for p in pending]
                if fatal is not None:
                    for item in pending:
                        self._live[item.spool_id] = item.handle
        # A refused key or a close raced with this call: the rides are spooled for a later client.
        if fatal is not None:
            self._give_up(pending, fatal.reason, fatal.http_status)
        else:
            for item in pending:
                item.handle._finish(None)
        return [p.handle for p in pending]

    def _check_open(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self._stopping:
            raise ClientClosedError("the client is closed")

    def begin_flush(self) -> None:
        with self._cond:
            self._flushing += 1
            self._cond.notify_all()

    def end_flush(self) -> None:
        with self._cond:
            self._flushing -= 1

    def flush(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        self.begin_flush()
        try:
            with self._cond:
                while self._live and not self._stopping:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        break
                    self._cond.wait(remaining)
                return not self._live
        finally:
            self.end_flush()

    def outcomes(self, timeout: float | None = None) -> Iterator[Outcome]:
        if self._buffer is None:
            raise RuntimeError("this engine does not buffer outcomes")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._cond:
                while not self._buffer and self._live and not self._stopping:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return
                    self._cond.wait(remaining)
                if not self._buffer:
                    return
                outcome = self._buffer.popleft()
            yield outcome

    @property
    def unresolved(self) -> int:
        return len(self._live)

    def stats(self) -> Stats:
        with self._cond:
            queued = len(self._batcher) + sum(len(r.items) for r in self._resend)
        return self._stats.snapshot(self._spool.depth, queued, self._tracker.count)

    def close(self, flush: bool = True, timeout: float | None = None) -> None:
        if self._closed:
            return
        if flush and self._fatal is None:
            self.flush(timeout)
        with self._cond:
            self._closed = True
            self._stopping = True
            self._cond.notify_all()
        self._stop.set()
        self._tracker.stop()
        if self._send_transport is not None:
            self._send_transport.abort()
        for thread in self._threads:
            thread.join(self.options.timeout_s + 5)
        with self._cond:
            left, self._live = list(self._live.values()), {}
            self._cond.notify_all()
        for handle in left:
            handle._finish(None)  # waiting on it raises ClientClosedError; the ride stays in the spool
        self._spool.close()
        if left:
            log.info("client closed with rides in the spool", extra={"xrides.rides": len(left)})

    # -- recovery ---------------------------------------------------------------------------------

    def _recover(self) -> list[Handle]:
        found = self._spool.recover()
        now = time.monotonic()

        def pending(ride: SpooledRide) -> Pending:
            booking = _booking_id(ride.body)
            return Pending(ride.id, ride.body, booking, Handle(ride.id, booking, recovered=True), now)

        handles: list[Handle] = []
        for batch in found.batches:
            items = [pending(r) for r in batch.rides]
            self._resend.append(Request(batch.id, batch.path, batch.idempotency_key, batch.body, items))
            handles += [p.handle for p in items]
        for ride in found.queued:
            item = pending(ride)
            self._batcher.add(item)
            handles.append(item.handle)
        groups: dict[str, list[Tracked]] = defaultdict(list)
        untrackable: list[tuple[Pending, Outcome]] = []
        for ride in found.tracking:
            item = pending(ride)
            handles.append(item.handle)
            if self.options.track and ride.group_id and ride.request_id:
                accepted_at = ride.accepted_at or time.time()
                groups[ride.group_id].append(
                    Tracked(item, ride.request_id, ride.batch_request_id, accepted_at)
                )
            else:
                outcome = item.outcome(
                    "accepted", request_id=ride.request_id, batch_request_id=ride.batch_request_id
                )
                untrackable.append((item, outcome))
        for handle in handles:
            self._live[handle.spool_id] = handle
        for poll_id, members in groups.items():
            self._tracker.add(poll_id, members)
        if untrackable:
            self._finish_tracked(untrackable, True)
        if handles:
            log.info(
                "rides recovered from the spool",
                extra={
                    "xrides.spool": self._spool.path,
                    "xrides.requests_to_resend": len(found.batches),
                    "xrides.queued": len(found.queued),
                    "xrides.tracking": len(found.tracking),
                },
            )
        return handles

    # -- the sender thread ------------------------------------------------------------------------

    def _send_loop(self) -> None:
        transport = self._send_transport = self._transport_factory()
        try:
            while True:
                work = self._next_work()
                if work is None:
                    return
                items = work.items if isinstance(work, Request) else work
                try:
                    request = work if isinstance(work, Request) else self._open(work)
                    self._stats.in_flight = len(items)
                    self._deliver(transport, request)
                except Exception as exc:  # a bug must not strand the rides' handles
                    log.exception("sending failed unexpectedly", extra={"xrides.rides": len(items)})
                    self._give_up(items, f"client error: {exc!r}", None)
                finally:
                    self._stats.in_flight = 0
        finally:
            transport.close()

    def _next_work(self) -> Request | list[Pending] | None:
        with self._cond:
            while not self._stopping:
                now = time.monotonic()
                if self._fatal is not None:
                    self._cond.wait()
                    continue
                if now < self._pause_until:
                    self._cond.wait(self._pause_until - now)
                    continue
                if self._resend:
                    return self._resend.popleft()
                items = self._batcher.take(now, self._flushing > 0)
                if items:
                    self._cond.notify_all()  # room for callers blocked on max_queue
                    return items
                deadline = self._batcher.deadline()
                self._cond.wait(None if deadline is None else max(0.0, deadline - now) + 0.0005)
            return None

    def _open(self, items: list[Pending]) -> Request:
        if self.options.batch:
            path, body = BATCH_PATH, encode_batch(items)
        else:
            path, body = SINGLE_PATH, items[0].body
        key = uuid.uuid4().hex
        batch_id = self._spool.open_batch(path, key, body, [p.spool_id for p in items])
        return Request(batch_id, path, key, body, items)

    def _deliver(self, transport: Transport, request: Request) -> None:
        headers = {**self._post_headers, "Idempotency-Key": request.key}
        is_batch = request.path == BATCH_PATH
        started = time.monotonic()
        attempt = 0
        while not self._stop.is_set():
            attempt += 1
            for item in request.items:
                item.attempts += 1
            self._stats.count("requests")
            if attempt > 1:
                self._stats.count("retries")
            try:
                response = transport.request("POST", request.path, request.body, headers)
            except TransportError as exc:
                verdict = Verdict("retry", reason=f"no answer: {exc}")
            else:
                if is_batch:
                    verdict = read_batch_answer(response, len(request.items))
                else:
                    verdict = read_single_answer(response)
            if verdict.replayed:
                self._stats.count("replayed")
            if verdict.action != "retry":
                self._conclude(request, verdict)
                return
            if self._stop.is_set():
                return  # the request stays in the spool, key and body included
            delay = retry_delay(
                attempt, self.options.backoff_base_s, self.options.backoff_max_s, verdict.retry_after_s
            )
            elapsed = time.monotonic() - started
            if attempt >= self.options.max_attempts or elapsed + delay > self.options.max_retry_time_s:
                reason = f"{verdict.reason} (gave up after {attempt} attempts in {elapsed:.1f} s)"
                log.error(
                    "request abandoned; its rides stay in the spool",
                    extra=self._request_fields(request, verdict, attempt),
                )
                self._give_up(request.items, reason, verdict.http_status)
                return
            log.warning(
                "retrying request",
                extra={
                    **self._request_fields(request, verdict, attempt),
                    "xrides.retry_in_s": round(delay, 3),
                },
            )
            if self._stop.wait(delay):
                return

    def _request_fields(self, request: Request, verdict: Verdict, attempt: int) -> dict[str, Any]:
        return {
            "xrides.idempotency_key": request.key,
            "xrides.rides": len(request.items),
            "xrides.attempt": attempt,
            "http.response.status_code": verdict.http_status,
            "error.message": verdict.reason,
        }

    def _conclude(self, request: Request, verdict: Verdict) -> None:
        if verdict.action == "settle":
            self._settle(request, verdict)
        elif verdict.action == "fatal":
            self.fatal(verdict.reason, verdict.http_status, request.items)
        elif verdict.action == "split":
            log.warning(
                "the API refused the request's size; halving the batch limits",
                extra=self._request_fields(request, verdict, 0),
            )
            self._spool.dissolve(request.batch_id)
            with self._cond:
                self._batcher.shrink(len(request.items), len(request.body))
                self._batcher.put_back(request.items)
                self._cond.notify_all()
        else:
            if verdict.forget_key:  # the next client must not reuse this key: a new request, new key
                self._spool.dissolve(request.batch_id)
            log.error("request failed", extra=self._request_fields(request, verdict, 0))
            self._give_up(request.items, verdict.reason, verdict.http_status)

    def _settle(self, request: Request, verdict: Verdict) -> None:
        track = self.options.track
        now = time.time()
        batch_request_id = verdict.batch_request_id
        accepted: list[Accepted] = []
        remove: list[int] = []
        requeue: list[Pending] = []
        held: list[Pending] = []
        groups: dict[str, list[Tracked]] = defaultdict(list)
        results: list[tuple[Pending, Outcome]] = []
        for item, result in zip(request.items, verdict.items, strict=True):
            if result.kind == "accepted" and track and result.request_id:
                poll_id = batch_request_id or result.request_id
                accepted.append(Accepted(item.spool_id, result.request_id, poll_id, batch_request_id, now))
                groups[poll_id].append(Tracked(item, result.request_id, batch_request_id, now))
            elif result.kind == "accepted":
                remove.append(item.spool_id)
                note = "accepted without a request id to track" if track else None
                outcome = item.outcome(
                    "accepted", request_id=result.request_id, batch_request_id=batch_request_id, reason=note
                )
                results.append((item, outcome))
            elif result.kind == "refused":
                remove.append(item.spool_id)
                outcome = item.outcome(
                    "refused",
                    request_id=result.request_id,
                    reason=result.reason,
                    error_code=result.error_code,
                    errors=result.errors,
                    http_status=verdict.http_status,
                )
                results.append((item, outcome))
            elif item.attempts >= self.options.max_attempts:
                held.append(item)
            else:
                requeue.append(item)
        self._spool.settle(
            request.batch_id, accepted, remove, [p.spool_id for p in requeue] + [p.spool_id for p in held]
        )
        for poll_id, members in groups.items():
            self._tracker.add(poll_id, members)
        if requeue:
            pause = retry_delay(
                max(p.attempts for p in requeue), self.options.backoff_base_s, self.options.backoff_max_s
            )
            with self._cond:
                self._batcher.put_back(requeue)
                self._pause_until = time.monotonic() + pause
                self._cond.notify_all()
        log.debug(
            "request answered",
            extra={
                "xrides.idempotency_key": request.key,
                "http.response.status_code": verdict.http_status,
                "request.id": batch_request_id,
                "xrides.accepted": len(accepted) + sum(r.kind == "accepted" for _, r in results),
                "xrides.refused": sum(r.kind == "refused" for _, r in results),
                "xrides.retry": len(requeue) + len(held),
                "xrides.replayed": verdict.replayed,
            },
        )
        self._resolve(results)
        if held:
            why = f"Kafka did not acknowledge the ride after {self.options.max_attempts} attempts"
            self._give_up(held, why, verdict.http_status)

    def _give_up(self, items: Sequence[Pending], reason: str, http_status: int | None) -> None:
        """Fail rides for this client; they stay in the spool, so the next client resends them."""
        failed = [
            (p, p.outcome("failed", reason=reason, http_status=http_status, kept_in_spool=True))
            for p in items
        ]
        self._resolve(failed)

    def fatal(self, reason: str, http_status: int | None, in_hand: Sequence[Pending] = ()) -> None:
        """The API refused this client's key (or URL): fail everything pending; ``send`` raises."""
        with self._cond:
            first = self._fatal is None
            if first:
                self._fatal = FatalError(reason, http_status)
            queued = self._batcher.drain()
            resend = [p for r in self._resend for p in r.items]
            self._resend.clear()
            self._cond.notify_all()
        if first:
            log.error(
                "the API refused this client; every pending ride fails", extra={"error.message": reason}
            )
        self._give_up([*in_hand, *resend, *queued], reason, http_status)
        self._tracker.abandon(reason)

    # -- outcomes ---------------------------------------------------------------------------------

    def _finish_tracked(self, results: list[tuple[Pending, Outcome]], remove: bool) -> None:
        if remove:
            self._spool.remove([p.spool_id for p, _ in results])
        self._resolve(results)

    def _resolve(self, results: Sequence[tuple[Pending, Outcome]]) -> None:
        delivered: list[Outcome] = []
        for item, outcome in results:
            if not item.handle._finish(outcome):
                continue
            delivered.append(outcome)
            held = outcome.kind == "failed" and outcome.kept_in_spool
            self._stats.outcome(outcome.kind, outcome.superseded, outcome.tracked_after_s, held)
        if not delivered:
            return
        with self._cond:
            for outcome in delivered:
                self._live.pop(outcome.spool_id, None)
                if self._buffer is not None:
                    self._buffer.append(outcome)
            self._cond.notify_all()
        if self._on_outcome is not None:
            for outcome in delivered:
                try:
                    self._on_outcome(outcome)
                except Exception:
                    log.exception("on_outcome raised", extra={"xrides.spool_id": outcome.spool_id})

    def _stats_loop(self) -> None:
        assert self._on_stats is not None
        while not self._stop.wait(self.options.stats_interval_s):
            try:
                self._on_stats(self.stats())
            except Exception:
                log.exception("on_stats raised")
