"""Schemathesis fuzzes every operation of ``/openapi.json``: no input may cause a 5xx."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import PlatformProcess

pytestmark = pytest.mark.integration


def test_no_server_errors_for_any_generated_input(
    start_api: Callable[..., tuple[str, PlatformProcess]], stack_env: dict[str, str]
) -> None:
    # A high rate limit: the fuzzer must reach the handlers, not the limiter.
    base, api = start_api(rate_limit_per_s="100000", rate_limit_burst="100000")
    schemathesis = Path(sys.executable).parent / "schemathesis"
    result = subprocess.run(
        [
            str(schemathesis),
            "run",
            f"{base}/openapi.json",
            "--url",
            base,
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--max-examples",
            "40",
            "--seed",
            "7",
            "--request-timeout",
            "15",
            "-H",
            f"Authorization: Bearer {stack_env['XRIDES_API_KEY']}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    report = result.stdout[-6000:] + result.stderr[-2000:]
    assert result.returncode == 0, report
    assert "No issues found" in report or "passed" in report, report
    assert api.proc is not None
    assert api.proc.poll() is None, "the API died under fuzzing:\n" + api.log_tail()
