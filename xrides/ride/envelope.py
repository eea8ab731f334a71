"""What travels on the ``rides`` topic: a validated ride plus ingestion metadata.

The key is the booking id (so all versions of one booking land on one partition, in order); the
value is JSON so any consumer, including PyFlink and a human with a console consumer, can read it.

``version`` orders versions of one booking: the API stamps the time it accepted the ride, in
microseconds. A later submission wins; a replay of an old message (re-consumption, restore from
the archive) carries its old version and never overwrites newer data.

``contract`` is the contract version the ride was validated under (stored with it), and
``extras`` the unknown fields the client sent, kept beside the ride (not inside it, so a consumer
re-validates the ride on the fast path).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from xrides.ride.fields import CONTRACT_VERSION
from xrides.ride.model import Ride, parse_ride

ENVELOPE_SCHEMA = 1
_UTC = ZoneInfo("UTC")


@dataclass(frozen=True, slots=True)
class RideEnvelope:
    ride: Ride
    version: int  # microseconds since the epoch at acceptance
    source: str = "api"  # api | replay | restore | quarantine
    contract: int = CONTRACT_VERSION  # the contract version the ride was accepted under

    @property
    def received_at(self) -> datetime:
        return datetime.fromtimestamp(self.version / 1_000_000, tz=UTC)

    def key(self) -> bytes:
        return str(self.ride.booking_id).encode()

    def encode(self) -> bytes:
        body: dict[str, Any] = {
            "schema": ENVELOPE_SCHEMA,
            "version": self.version,
            "source": self.source,
            "contract": self.contract,
            "ride": self.ride.to_wire(),
        }
        if self.ride.extras:
            body["extras"] = self.ride.extras
        return orjson.dumps(body)


def new_version() -> int:
    return time.time_ns() // 1000


def decode_envelope(raw: bytes) -> RideEnvelope:
    """Decode and re-validate a message; raises ``ValueError`` (or RideValidationError) when poisoned."""
    data: Any = orjson.loads(raw)
    if not isinstance(data, dict) or data.get("schema") != ENVELOPE_SCHEMA:
        raise ValueError("not a ride envelope of schema 1")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version <= 0:
        raise ValueError("envelope version must be a positive integer")
    source = data.get("source", "api")
    contract = data.get("contract", 1)  # envelopes written before contracts were versioned
    if not isinstance(contract, int) or isinstance(contract, bool) or contract < 1:
        raise ValueError("envelope contract must be a positive integer")
    ride = parse_ride(data.get("ride"), _UTC)
    extras = data.get("extras")
    if extras is not None:
        if not isinstance(extras, dict):
            raise ValueError("envelope extras must be an object")
        ride = replace(ride, extras=extras or None)
    return RideEnvelope(ride=ride, version=version, source=str(source), contract=contract)
