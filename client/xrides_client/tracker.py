"""Following accepted rides to their final state through ``GET /v1/requests/{id}``.

One GET of a batch's id answers for every ride of that batch, so rides are polled by batch; a
ride without a batch id (single POSTs, a batch whose manifest was not written, or a batch id the
API no longer knows) is polled by its own ``r<partition>-<offset>`` id. Each poll id backs off from
``poll_min_s`` to ``poll_max_s`` while nothing changes, and honours ``Retry-After`` when the
tracking store is unavailable (503).

The delay reported on an outcome (``tracked_after_s``) runs from the moment the API's 202 reached
this client (a wall-clock time kept in the spool, so it survives a restart) to the poll that saw the
final state: it includes up to one polling interval.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from xrides_client.batcher import Pending
from xrides_client.options import Options
from xrides_client.outcomes import Outcome
from xrides_client.stats import StatsRecorder
from xrides_client.transport import Transport, TransportError

log = logging.getLogger("xrides_client")

FINAL_STATES = frozenset({"stored", "superseded", "failed", "refused"})

Finish = Callable[[list[tuple[Pending, Outcome]], bool], None]  # (outcomes, remove from the spool)
Fatal = Callable[[str, int | None], None]


@dataclass(slots=True)
class Tracked:
    pending: Pending
    request_id: str
    batch_request_id: str | None
    accepted_at: float  # wall clock of the 202


@dataclass(slots=True)
class _Group:
    poll_id: str
    members: dict[str, Tracked]  # by the ride's request id
    deadline: float  # monotonic; past it the rides end as ``accepted`` with a reason
    interval: float
    due: float = 0.0
    polls: int = 0
    last_error: str | None = field(default=None)


class Tracker:
    def __init__(
        self,
        options: Options,
        transport_factory: Callable[[], Transport],
        headers: Mapping[str, str],
        stats: StatsRecorder,
        finish: Finish,
        fatal: Fatal,
    ) -> None:
        self._options = options
        self._transport_factory = transport_factory
        self._headers = dict(headers)
        self._stats = stats
        self._finish = finish
        self._fatal = fatal
        self._cond = threading.Condition()
        self._groups: dict[str, _Group] = {}
        self._count = 0
        self._stopping = False
        self._transport: Transport | None = None

    @property
    def count(self) -> int:
        return self._count

    def add(self, poll_id: str, members: list[Tracked]) -> None:
        now = time.monotonic()
        budget = self._options.track_timeout_s - max(0.0, time.time() - min(m.accepted_at for m in members))
        with self._cond:
            group = self._groups.get(poll_id)
            if group is None:
                group = _Group(poll_id, {}, now + max(0.0, budget), self._options.poll_min_s)
                group.due = now + self._options.poll_min_s
                self._groups[poll_id] = group
            for member in members:
                group.members[member.request_id] = member
            self._count += len(members)
            self._cond.notify_all()

    def run(self) -> None:
        self._transport = self._transport_factory()
        try:
            while True:
                group = self._next_due()
                if group is None:
                    return
                self._poll(group)
        finally:
            self._transport.close()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._transport is not None:
            self._transport.abort()

    def abandon(self, reason: str) -> None:
        """Stop following every ride (the key was refused): they stay ``accepted``, and in the spool."""
        with self._cond:
            groups, self._groups = list(self._groups.values()), {}
            self._count = 0
        results = [
            (m.pending, _accepted(m, f"tracking stopped: {reason}", kept=True))
            for g in groups
            for m in g.members.values()
        ]
        if results:
            self._finish(results, False)

    def _next_due(self) -> _Group | None:
        with self._cond:
            while not self._stopping:
                now = time.monotonic()
                if self._groups:
                    group = min(self._groups.values(), key=lambda g: g.due)
                    if group.due <= now:
                        return group
                    self._cond.wait(group.due - now)
                else:
                    self._cond.wait()
            return None

    def _reschedule(self, group: _Group, progressed: bool, retry_after_s: float | None = None) -> None:
        if not progressed:
            group.interval = min(self._options.poll_max_s, group.interval * 2)
        group.due = time.monotonic() + max(group.interval, retry_after_s or 0.0)

    def _poll(self, group: _Group) -> None:
        assert self._transport is not None
        self._stats.count("polls")
        group.polls += 1
        try:
            response = self._transport.request("GET", f"/v1/requests/{group.poll_id}", None, self._headers)
        except TransportError as exc:
            group.last_error = str(exc)
            self._after_poll(group, {}, retry_after_s=None)
            return
        body = response.json()
        if response.status in (401, 403):
            reason = f"HTTP {response.status} while tracking"
            if isinstance(body, dict) and isinstance(body.get("error_message"), str):
                reason += f": {body['error_message']}"
            self._fatal(reason, response.status)
            return
        if response.status == 404 and group.poll_id.startswith("b"):
            self._split(group)
            return
        if response.status != 200 or not isinstance(body, dict) or not isinstance(body.get("items"), list):
            group.last_error = f"HTTP {response.status}"
            self._after_poll(group, {}, retry_after_s=response.retry_after_s)
            return
        group.last_error = None
        finished: dict[str, Outcome] = {}
        for item in body["items"]:
            if not isinstance(item, dict):
                continue
            request_id = str(item.get("request_id"))
            member = group.members.get(request_id)
            if member is not None and item.get("state") in FINAL_STATES:
                finished[request_id] = _final(member, item)
        self._after_poll(group, finished, retry_after_s=None)

    def _after_poll(self, group: _Group, finished: dict[str, Outcome], retry_after_s: float | None) -> None:
        done: list[tuple[Pending, Outcome]] = []
        timed_out: list[tuple[Pending, Outcome]] = []
        with self._cond:
            if self._groups.get(group.poll_id) is not group:
                return  # abandoned meanwhile
            for request_id, outcome in finished.items():
                done.append((group.members.pop(request_id).pending, outcome))
            if group.members and time.monotonic() >= group.deadline:
                why = f"tracking timed out after {self._options.track_timeout_s:g} s"
                if group.last_error:
                    why += f" (last poll: {group.last_error})"
                timed_out = [(m.pending, _accepted(m, why, kept=False)) for m in group.members.values()]
                group.members.clear()
            if not group.members:
                self._groups.pop(group.poll_id, None)
            else:
                self._reschedule(group, bool(finished), retry_after_s)
            self._count -= len(done) + len(timed_out)
        if timed_out:
            log.warning(
                "tracking timed out",
                extra={
                    "request.id": group.poll_id,
                    "rides": len(timed_out),
                    "error.message": group.last_error,
                },
            )
        if done or timed_out:
            self._finish(done + timed_out, True)

    def _split(self, group: _Group) -> None:
        """The API does not know the batch id (any more): follow each ride by its own id."""
        log.info(
            "batch id unknown to the API; tracking its rides one by one", extra={"request.id": group.poll_id}
        )
        with self._cond:
            self._groups.pop(group.poll_id, None)
            self._count -= len(group.members)
        for member in group.members.values():
            member.batch_request_id = None
            self.add(member.request_id, [member])


def _accepted(member: Tracked, reason: str, kept: bool) -> Outcome:
    return member.pending.outcome(
        "accepted",
        request_id=member.request_id,
        batch_request_id=member.batch_request_id,
        reason=reason,
        kept_in_spool=kept,
    )


def _final(member: Tracked, item: Mapping[str, Any]) -> Outcome:
    state = item.get("state")
    delay = max(0.0, time.time() - member.accepted_at)
    common: dict[str, Any] = {
        "request_id": member.request_id,
        "batch_request_id": member.batch_request_id,
        "tracked_after_s": delay,
    }
    reason = item.get("reason") if isinstance(item.get("reason"), str) else None
    if state in ("stored", "superseded"):
        stored_at = item.get("stored_at")
        return member.pending.outcome(
            "stored",
            superseded=state == "superseded",
            stored_at=stored_at if isinstance(stored_at, str) else None,
            **common,
        )
    if state == "refused":
        return member.pending.outcome("refused", reason=reason or "refused after acceptance", **common)
    return member.pending.outcome("failed", reason=reason or "the platform reported a failure", **common)
