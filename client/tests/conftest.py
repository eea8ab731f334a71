from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_api import FakeApi


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi().start()
    yield fake
    fake.stop()


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    return tmp_path / "spool.sqlite3"
