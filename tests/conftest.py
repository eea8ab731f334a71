"""Session-wide test ordering."""

from __future__ import annotations

import pytest

LAST = "test_zzz_main_data_reconciles.py"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The reconciler over the main data runs after every other test of the session (unit and
    client tests included), so whatever any of them wrote has been checked."""
    items.sort(key=lambda item: LAST in item.nodeid)
