"""Just enough of the Kafka wire protocol to ask a broker for metadata.

A JVM start costs seconds, so health checks and the "which topics exist"
question are answered with one Metadata request (v4, valid on Kafka 4.x, which
dropped v0-v3) over a plain socket. Creating topics still goes through Kafka's
own ``TopicCommand`` so partition/config validation stays the broker's.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field

API_METADATA = 3
METADATA_VERSION = 4
CLIENT_ID = b"xrides-stack"


class KafkaWireError(OSError):
    """The broker's answer could not be read or parsed."""


@dataclass(frozen=True)
class ClusterView:
    """What a Metadata answer says: live brokers, topic -> partition count, and topic -> partition ->
    the node id of its leader (-1: none)."""

    brokers: int
    topics: dict[str, int] = field(default_factory=dict)
    leaders: dict[str, dict[int, int]] = field(default_factory=dict)


class _Reader:
    """Cursor over a big-endian Kafka response body."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise KafkaWireError("truncated Kafka response")
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return int(value)

    def string(self) -> str | None:
        length = self.take(">h")
        if length < 0:
            return None
        raw = self.data[self.pos : self.pos + length]
        self.pos += length
        return raw.decode("utf-8", errors="replace")

    def int32_array(self) -> list[int]:
        return [self.take(">i") for _ in range(max(0, self.take(">i")))]


def metadata_request(correlation_id: int, all_topics: bool) -> bytes:
    """Framed Metadata v4 request; ``all_topics`` asks for every topic (null array)."""
    header = struct.pack(">hhih", API_METADATA, METADATA_VERSION, correlation_id, len(CLIENT_ID)) + CLIENT_ID
    body = struct.pack(">i", -1 if all_topics else 0) + b"\x00"  # topics, allow_auto_topic_creation
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def parse_metadata(body: bytes) -> ClusterView:
    """Parse a Metadata v4 response body (after the 4-byte correlation id)."""
    reader = _Reader(body)
    reader.take(">i")  # throttle_time_ms
    brokers = reader.take(">i")
    for _ in range(max(0, brokers)):
        reader.take(">i")  # node_id
        reader.string()  # host
        reader.take(">i")  # port
        reader.string()  # rack
    reader.string()  # cluster_id
    reader.take(">i")  # controller_id
    topics: dict[str, int] = {}
    leaders: dict[str, dict[int, int]] = {}
    for _ in range(max(0, reader.take(">i"))):
        error_code = reader.take(">h")
        name = reader.string() or ""
        reader.take(">b")  # is_internal
        partitions = max(0, reader.take(">i"))
        led: dict[int, int] = {}
        for _ in range(partitions):
            reader.take(">h")  # error_code
            index = reader.take(">i")  # partition_index
            led[index] = reader.take(">i")  # leader_id
            reader.int32_array()  # replica_nodes
            reader.int32_array()  # isr_nodes
        if error_code == 0:
            topics[name] = partitions
            leaders[name] = led
    return ClusterView(brokers=max(0, brokers), topics=topics, leaders=leaders)


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise KafkaWireError("broker closed the connection")
        chunks.extend(chunk)
    return bytes(chunks)


def fetch_metadata(host: str, port: int, all_topics: bool = False, timeout: float = 3.0) -> ClusterView:
    """Ask the broker at ``host:port`` for metadata; raises OSError if it cannot answer."""
    correlation_id = 7
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(metadata_request(correlation_id, all_topics))
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        response = _recv_exact(sock, size)
    (got,) = struct.unpack_from(">i", response)
    if got != correlation_id:
        raise KafkaWireError(f"unexpected correlation id {got}")
    return parse_metadata(response[4:])
