"""Every Prometheus rule file is valid and every alert has a passing promtool unit test."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

PROMETHEUS = Path(__file__).resolve().parents[2] / "dashboards" / "prometheus"
RUNBOOKS = Path(__file__).resolve().parents[2] / "docs" / "runbooks.md"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is missing: `make up` installs Debian's prometheus package, which has it")
    return path


def rule_files() -> list[Path]:
    return sorted((PROMETHEUS / "rules").glob("*.yml"))


def alerts() -> list[str]:
    names = []
    for path in rule_files():
        for group in yaml.safe_load(path.read_text())["groups"]:
            names += [rule["alert"] for rule in group["rules"] if "alert" in rule]
    return names


def test_rules_are_valid() -> None:
    files = rule_files()
    assert files
    result = subprocess.run(
        [promtool(), "check", "rules", *map(str, files)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_unit_tests_pass() -> None:
    tests = sorted((PROMETHEUS / "tests").glob("*.yml"))
    assert tests
    result = subprocess.run(
        [promtool(), "test", "rules", *map(str, tests)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_and_has_a_runbook() -> None:
    tested = "\n".join(path.read_text() for path in (PROMETHEUS / "tests").glob("*.yml"))
    runbooks = RUNBOOKS.read_text().lower()
    for name in alerts():
        assert f"alertname: {name}" in tested, f"{name} has no promtool test"
        assert f"## {name.lower()}" in runbooks, f"{name} has no runbook section in docs/runbooks.md"
