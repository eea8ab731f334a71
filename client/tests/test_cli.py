"""``python -m xrides_client send``: summary, exit codes, environment, spool resumption."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from xrides_client.cli import Progress, main

from tests.fake_api import FakeApi
from tests.helpers import HEADER, ROW

CLIENT_DIR = Path(__file__).resolve().parents[1]


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_bytes(("\r\n".join([HEADER, *rows]) + "\r\n").encode())
    return path


def row(booking_id: int, vehicle_model_id: str = "28") -> str:
    return ROW.replace("132512,", f"{booking_id},", 1).replace(",28,", f",{vehicle_model_id},", 1)


def run(
    args: list[str], api: FakeApi, capsys: pytest.CaptureFixture[str], env: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    environ = {"XRIDES_API_URL": api.url, "XRIDES_API_KEY": api.api_key} if env is None else env
    code = main(["send", *args, "--json"], environ)
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_a_csv_is_sent_and_summarised(
    api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_csv(tmp_path / "rides.csv", [row(1), row(2, "abc"), row(3), row(4, "abc")])
    code, summary = run([str(csv), "--set", "driver_id=0"], api, capsys)
    assert code == 0
    assert {k: summary[k] for k in ("sent", "stored", "refused", "failed", "unfinished")} == {
        "sent": 4,
        "stored": 2,
        "refused": 2,
        "failed": 0,
        "unfinished": 0,
    }
    message = "vehicle_model_id data type mismatch, vehicle_model_id expected to be <class 'int'>"
    assert summary["refused_reasons"] == [{"reason": message, "count": 2}]
    assert summary["ok"] is True
    assert summary["spool"] is None
    assert summary["duration_s"] > 0
    assert summary["rides_per_s"] > 0
    sent = json.loads(api.posts[0].body)
    assert sent[1]["vehicle_model_id"] == "abc"
    assert sent[0]["from_date"] == "1/1/2013 2:00"


def test_without_driver_id_the_platform_refuses_every_prototype_row(
    api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_csv(tmp_path / "rides.csv", [row(1)])
    code, summary = run([str(csv)], api, capsys)
    assert (code, summary["refused"]) == (0, 1)
    assert summary["refused_reasons"][0]["reason"] == "driver_id is missing"


def test_ndjson_is_chosen_by_extension_and_flags_override_the_environment(
    api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "rides.ndjson"
    rides = [
        {"booking_id": i, "user_id": 1, "vehicle_model_id": 1, "travel_type_id": 2, "driver_id": 0}
        for i in (1, 2)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rides))
    env = {"XRIDES_API_URL": "http://127.0.0.1:9", "XRIDES_API_KEY": "wrong"}
    code, summary = run([str(path), "--url", api.url, "--api-key", api.api_key, "--single"], api, capsys, env)
    assert (code, summary["sent"], summary["stored"]) == (0, 2, 2)
    assert [p.path for p in api.posts] == ["/v1/rides", "/v1/rides"]


def test_a_refused_key_fails_every_ride_and_exits_1(
    api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_csv(tmp_path / "rides.csv", [row(1), row(2)])
    env = {"XRIDES_API_URL": api.url, "XRIDES_API_KEY": "wrong"}
    code, summary = run([str(csv), "--set", "driver_id=0"], api, capsys, env)
    assert code == 1
    assert (summary["sent"], summary["failed"], summary["stored"]) == (2, 2, 0)
    assert summary["failed_reasons"] == [{"reason": "HTTP 401: unknown API key", "count": 2}]
    assert summary["ok"] is False
    assert summary["spool"] is not None  # the rides are kept, and the summary says where
    assert Path(summary["spool"]).exists()


def test_failed_rides_are_resent_from_the_named_spool(
    api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_csv(tmp_path / "rides.csv", [row(1), row(2)])
    spool = tmp_path / "cli.spool"
    api.script.append("503")
    code, summary = run(
        [str(csv), "--set", "driver_id=0", "--spool", str(spool), "--max-attempts", "1"], api, capsys
    )
    assert (code, summary["failed"], summary["spool"], summary["spool_rides"]) == (1, 2, str(spool), 2)
    empty = tmp_path / "empty.csv"
    write_csv(empty, [])
    code, summary = run([str(empty), "--spool", str(spool)], api, capsys)
    assert (code, summary["recovered"], summary["sent"], summary["stored"]) == (0, 2, 2, 2)
    assert summary["spool_rides"] == 0
    assert api.accepted_bookings() == {1: 1, 2: 1}


def test_a_timeout_exits_1_with_the_rides_unfinished(
    api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api.polls_before_final = 10**6
    csv = write_csv(tmp_path / "rides.csv", [row(1)])
    code, summary = run([str(csv), "--set", "driver_id=0", "--timeout", "0.5"], api, capsys)
    assert (code, summary["unfinished"], summary["ok"]) == (1, 1, False)


def test_no_track_stops_at_acceptance(
    api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    api.polls_before_final = 10**6
    csv = write_csv(tmp_path / "rides.csv", [row(1)])
    code, summary = run([str(csv), "--set", "driver_id=0", "--no-track"], api, capsys)
    assert (code, summary["accepted"], summary["stored"]) == (0, 1, 0)
    assert api.gets == []


def test_an_unreadable_line_exits_1(api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = write_csv(tmp_path / "rides.csv", [row(1), "1,2,3"])
    code, summary = run([str(csv), "--set", "driver_id=0"], api, capsys)
    assert (code, summary["stored"], summary["unreadable"]) == (1, 1, 1)
    assert summary["unreadable_lines"] == [{"line": 3, "reason": "3 cells for 19 columns"}]


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = write_csv(tmp_path / "rides.csv", [row(1)])
    assert main(["send", str(csv)], {}) == 2
    assert "XRIDES_API_KEY" in capsys.readouterr().err
    assert (
        main(["send", str(tmp_path / "rides.txt")], {"XRIDES_API_URL": "http://x", "XRIDES_API_KEY": "k"})
        == 2
    )
    assert "--format" in capsys.readouterr().err
    assert (
        main(["send", str(tmp_path / "missing.csv")], {"XRIDES_API_URL": "http://x", "XRIDES_API_KEY": "k"})
        == 2
    )


def test_the_text_summary_and_no_progress_off_a_terminal(
    api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_csv(tmp_path / "rides.csv", [row(1), row(2, "abc")])
    environ = {"XRIDES_API_URL": api.url, "XRIDES_API_KEY": api.api_key}
    assert main(["send", str(csv), "--set", "driver_id=0"], environ) == 0
    captured = capsys.readouterr()
    assert "sent 2 rides" in captured.out
    assert "refused            1" in captured.out
    assert "vehicle_model_id data type mismatch" in captured.out
    assert "\r" not in captured.err


def test_the_progress_line_is_drawn_on_a_terminal() -> None:
    stream = io.StringIO()
    progress = Progress(stream, enabled=True)
    progress.show("read  50.0%  sent 1,000", force=True)
    progress.clear()
    assert stream.getvalue().startswith("\rread  50.0%  sent 1,000")
    assert stream.getvalue().endswith("\r")
    silent = io.StringIO()
    Progress(silent, enabled=False).show("x", force=True)
    assert silent.getvalue() == ""


def test_python_dash_m_runs_the_command_line(api: FakeApi, tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "rides.csv", [row(1)])
    env = {
        **os.environ,
        "XRIDES_API_URL": api.url,
        "XRIDES_API_KEY": api.api_key,
        "PYTHONPATH": str(CLIENT_DIR),
    }
    done = subprocess.run(
        [sys.executable, "-m", "xrides_client", "send", str(csv), "--set", "driver_id=0", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stored"] == 1
