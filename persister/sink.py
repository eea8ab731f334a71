"""The persister as a sink of the worker loop (xrides/worker.py): decode, write, start offsets.

The loop around it (poll, dead letters, commit, back-off, health) is the platform's one worker
loop. What is the persister's own: the offsets it commits live in PostgreSQL, in the same
transaction as the rows they produced, so a newly assigned partition starts from them
(``start_offsets``) and Kafka's committed offsets only feed lag tools; and PostgreSQL being away is
``SinkUnavailable`` (the loop keeps the batch and retries), while a row PostgreSQL refuses is
isolated by the writer and dead-lettered.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg

from persister.writer import Message, RideWriter, stage_row
from xrides.errors import SinkUnavailable
from xrides.kafka import Record
from xrides.quarantine import decode_refusal
from xrides.ride import RideValidationError, decode_envelope
from xrides.topics import REFUSED
from xrides.worker import DeadLetter

log = logging.getLogger("persister.sink")

# Errors that mean "PostgreSQL is not there right now" (or a transient conflict with another
# persister during a rebalance): keep the batch, reconnect, retry. Data errors never get here:
# the writer isolates refused rows itself.
RETRIABLE = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a connection the server dropped mid-operation
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,  # shutdown, cannot connect now, query cancelled
    asyncpg.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.TransactionRollbackError,  # deadlock or serialization failure with another persister
)


def decode(record: Record, refused_topic: str = REFUSED.name) -> Message:
    """The record as a writer message: its envelope and stage row (a refusal, from the quarantine's
    topic), or why it is poison."""
    message = Message(record.topic, record.partition, record.offset, record.key, record.value)
    if record.topic == refused_topic:
        try:
            message.refusal = decode_refusal(message.value)
        except (ValueError, TypeError) as exc:
            message.error = f"undecodable message: {exc}"[:1000]
        return message
    try:
        message.envelope = decode_envelope(message.value)
        message.row = stage_row(message)
    except RideValidationError as exc:
        message.error = f"invalid ride: {exc.message}"[:1000]
    except (ValueError, TypeError) as exc:
        message.error = f"undecodable message: {exc}"[:1000]
    return message


def reason_label(error: str) -> str:
    """A bounded label for the dead-letter counter."""
    for prefix, label in (
        ("invalid ride", "invalid_ride"),
        ("undecodable", "undecodable"),
        ("refused", "db_refused"),
    ):
        if error.startswith(prefix):
            return label
    return "other"


class PostgresSink:
    """Rides into ``cab_rides``; refused rides (from ``refused_topic``) into the quarantine."""

    def __init__(self, writer: RideWriter, refused_topic: str = REFUSED.name) -> None:
        self.writer = writer
        self.refused_topic = refused_topic
        self.db_ok = False

    def decode(self, record: Record) -> Message:
        return decode(record, self.refused_topic)

    async def write(self, batch: list[Message]) -> list[DeadLetter]:
        by_topic: dict[str, list[Message]] = {}
        for message in batch:
            by_topic.setdefault(message.topic, []).append(message)
        dead: list[DeadLetter] = []
        for topic, messages in by_topic.items():
            next_offsets: dict[int, int] = {}
            for m in messages:
                next_offsets[m.partition] = max(next_offsets.get(m.partition, 0), m.offset + 1)
            write = self.writer.write_refused if topic == self.refused_topic else self.writer.write
            try:
                result = await write(topic, messages, next_offsets)
            except RETRIABLE as exc:
                self.db_ok = False
                await self.writer.close()
                raise SinkUnavailable(f"PostgreSQL unavailable: {type(exc).__name__}: {exc}"[:300]) from exc
            self.db_ok = True
            dead += [
                DeadLetter(
                    m.topic,
                    m.partition,
                    m.offset,
                    m.key,
                    m.value,
                    m.error or "unknown",
                    reason_label(m.error or ""),
                )
                for m in result.failed
            ]
        return dead

    async def start_offsets(self, topic: str, partitions: list[int]) -> dict[int, int]:
        return await self.writer.stored_offsets(topic, partitions)

    def health(self) -> dict[str, Any]:
        return {"postgres": self.db_ok}

    async def close(self) -> None:
        await self.writer.close()
