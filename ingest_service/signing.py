"""The API's request signing: the checker both key-taking processes share (:mod:`xrides.signing`),
its refusals counted in ``xrides_api_signature_failures_total``."""

from __future__ import annotations

import time
from collections.abc import Callable

from ingest_service.metrics import SIGNATURE_FAILURES
from xrides.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature
from xrides.signing import SignatureChecker as SharedChecker


def _count(reason: str) -> None:
    SIGNATURE_FAILURES.labels(reason).inc()


class SignatureChecker(SharedChecker):
    def __init__(
        self, window_s: float = 300.0, max_remembered: int = 1_000_000, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(window_s, max_remembered, clock, on_failure=_count)


__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "SignatureChecker", "signature"]
