"""Tracking ids that cost nothing to store: they *are* a Kafka position.

A single ride's id names the partition and offset of its message on ``rides``:
``r<partition>-<offset>``. A batch's id names the position of its manifest message on
``requests`` (the list of its items' positions): ``b<partition>-<offset>``. A refused ride's id
names its position on ``rides.refused`` (the quarantine): ``q<partition>-<offset>``. Looking an id up means
reading Kafka and PostgreSQL; accepting a ride adds no database write to the hot path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from xrides.errors import NotFound

_PATTERN = re.compile(r"^([rbq])(\d{1,5})-(\d{1,19})$")


@dataclass(frozen=True, slots=True, order=True)
class Position:
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class RequestId:
    kind: Literal["r", "b", "q"]  # r: a ride on ``rides``; b: a batch manifest; q: a refused ride
    position: Position

    def __str__(self) -> str:
        return f"{self.kind}{self.position.partition}-{self.position.offset}"


def ride_request_id(partition: int, offset: int) -> str:
    return str(RequestId("r", Position(partition, offset)))


def batch_request_id(partition: int, offset: int) -> str:
    return str(RequestId("b", Position(partition, offset)))


def refused_request_id(partition: int, offset: int) -> str:
    return str(RequestId("q", Position(partition, offset)))


def parse_request_id(text: str) -> RequestId:
    match = _PATTERN.match(text)
    if not match:
        raise NotFound(f"unknown request id {text[:40]!r}")
    kind, partition, offset = match.groups()
    return RequestId(kind, Position(int(partition), int(offset)))  # type: ignore[arg-type]
