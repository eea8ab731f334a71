"""The client (client/, ``xrides_client``) against the running platform: its command line on a file
with refused rows, and a send killed mid-file and started again on the same spool."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from benchmarks.client_faults import make_rides

REPO = Path(__file__).resolve().parents[2]


def _cli(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "xrides_client", "send", *args, "--json", "--quiet"],
        cwd=REPO, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _summary(process: subprocess.Popen[str], timeout_s: float = 300) -> tuple[int, dict[str, Any]]:
    out, err = process.communicate(timeout=timeout_s)
    assert out.strip(), err[-2000:]
    return process.returncode, json.loads(out.strip().splitlines()[-1])


async def test_refused_rows_are_reported_with_the_platforms_messages(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    first = int(time.time() * 1000) % 10**9 + 6 * 10**13
    header = "booking_id,user_id,vehicle_model_id,package_id,travel_type_id,from_area_id,to_area_id,from_city_id,to_city_id,from_date,to_date,online_booking,mobile_site_booking,booking_created,from_lat,from_long,to_lat,to_long,driver_id"
    good = "{b},22177,28,NULL,2,83,448,NULL,NULL,1/1/2013 2:00,NULL,0,0,1/1/2013 1:39,12.92415,77.67229,12.92732,77.63575,0"
    lines = [header] + [good.format(b=first + n) for n in range(7)]
    lines.append(good.format(b=first + 7).replace(",28,", ",twenty-eight,", 1))
    lines.append(good.format(b=first + 8).replace("1/1/2013 1:39", "1/1-2013 1:39"))
    lines.append(good.format(b=first + 9).replace(",83,", ",NULL,", 1))  # no area and no city
    path = tmp_path / "export.csv"
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    code, summary = _summary(_cli(stack_env, str(path)))
    assert code == 0, summary
    assert (summary["sent"], summary["stored"], summary["refused"], summary["failed"]) == (10, 7, 3, 0)
    reasons = " | ".join(r["reason"] for r in summary["refused_reasons"])
    assert "vehicle_model_id data type mismatch, vehicle_model_id expected to be <class 'int'>" in reasons
    assert "booking_created format mismatch, please send month/date/year hour:minute:seconds" in reasons
    assert "from_area_id is missing" in reasons


async def test_a_killed_send_resumes_and_sends_nothing_twice(
    stack_env: dict[str, str], tmp_path: Path
) -> None:
    first = int(time.time()) % 100_000 * 10**6 + 7 * 10**13
    rides = make_rides(6000, first)
    path = tmp_path / "rides.ndjson"
    path.write_bytes(b"\n".join(orjson.dumps(r) for r in rides) + b"\n")
    bookings = [r["booking_id"] for r in rides]
    spool = str(tmp_path / "spool.sqlite3")
    conn = await asyncpg.connect(stack_env["XRIDES_PG_DSN"])
    try:
        process = _cli(stack_env, str(path), "--spool", spool, "--batch-size", "200")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # kill it once a quarter of the file is stored
            stored = await conn.fetchval(
                "SELECT count(*) FROM ride_receipts WHERE booking_id = ANY($1::bigint[])", bookings
            )
            if stored >= 1500:
                break
            await asyncio.sleep(0.2)
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        assert stored < len(rides), "the send finished before it could be killed"

        code, summary = _summary(_cli(stack_env, str(path), "--spool", spool, "--batch-size", "200"))
        assert code == 0, summary
        assert summary["resumed_after"] > 0  # the rides spooled before the kill were not read again
        assert summary["stored"] + summary.get("recovered", 0) >= len(rides) - summary["resumed_after"]
        copies = await conn.fetch(
            "SELECT booking_id, count(*) AS n FROM ride_receipts WHERE booking_id = ANY($1::bigint[])"
            " GROUP BY 1",
            bookings,
        )
        rows = await conn.fetchval(
            "SELECT count(*) FROM cab_rides WHERE booking_id = ANY($1::bigint[])", bookings
        )
    finally:
        await conn.close()
    assert rows == len(rides)  # every ride stored
    assert {r["booking_id"] for r in copies} == set(bookings)
    assert max(r["n"] for r in copies) == 1  # and none of them reached Kafka twice
