"""An export of real shapes, replayed through the client and the running platform, compared field by
field in PostgreSQL, Elasticsearch and the archive's Parquet with the file: 0 differences.

The shapes a real export of this kind of booking system has (the ones contract 1 refused): bare
drop-off dates, long-distance rides with a pickup city and no pickup area or coordinates, ``NULL``
strings, CRLF line ends, minutes without seconds, the historical ``Car_Cancellation`` column and a
column the platform does not know (``fare_inr``, kept as an extra). Half the file is sent as single
rides, half in batches. The expected values are worked out here from the text, independently of the
platform's parser: local Bangalore time to UTC, a bare date as a day with no time.
"""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import orjson
import pyarrow as pa
from elasticsearch import AsyncElasticsearch
from xrides_client import Client, read_csv

from archiver.archive import Archiver, decode_parquet, encode_parquet
from archiver.settings import ArchiverSettings
from xrides.archive.schema import canonical
from xrides.archive.store import ArchiveStore

KOLKATA = ZoneInfo("Asia/Kolkata")
COLUMNS = (
    "booking_id,user_id,vehicle_model_id,package_id,travel_type_id,from_area_id,to_area_id,from_city_id,"
    "to_city_id,from_date,to_date,online_booking,mobile_site_booking,booking_created,from_lat,from_long,"
    "to_lat,to_long,driver_id,Car_Cancellation,fare_inr"
)
SHAPES = 24


def _local(moment: datetime) -> str:
    """``M/D/YYYY H:MM`` (no seconds, no leading zeros), as the export writes times."""
    return f"{moment.month}/{moment.day}/{moment.year} {moment.hour}:{moment.minute:02d}"


def _export(first_id: int, pickup_day: date) -> str:
    """The CSV text (CRLF line ends) and nothing else: every expected value is read back from it."""
    lines = [COLUMNS]
    for n in range(SHAPES):
        booking = first_id + n
        pickup = datetime(pickup_day.year, pickup_day.month, pickup_day.day, 6 + n % 12, (n * 7) % 60)
        booked = pickup - timedelta(minutes=30 + n)
        shape = n % 4
        if shape == 0:  # a point-to-point ride, drop-off known to the minute
            area, city, coords = str(80 + n), "NULL", ("12.9241", "77.6722", "12.9273", "77.6357")
            to_date = _local(pickup + timedelta(minutes=40))
        elif shape == 1:  # drop-off known only to the day
            area, city, coords = str(80 + n), "NULL", ("12.9241", "77.6722", "NULL", "NULL")
            to_date = f"{pickup.month}/{pickup.day}/{pickup.year}"
        elif shape == 2:  # long distance: a pickup city, no area, no coordinates
            area, city, coords = "NULL", "15", ("NULL", "NULL", "NULL", "NULL")
            to_date = f"{(pickup + timedelta(days=1)).month}/{(pickup + timedelta(days=1)).day}/{pickup.year}"
        else:  # not dropped off yet, cancelled; an empty cell is null too
            area, city, coords = str(90 + n), "", ("12.95", "77.6", "12.98", "77.64")
            to_date = "NULL"
        fare = str(200 + n) if n % 3 else "NULL"
        cancelled = "1" if shape == 3 else "0"
        lines.append(
            f"{booking},{7000 + n},{12 + n % 5},NULL,{1 if shape == 2 else 2},{area},NULL,{city},NULL,"
            f"{_local(pickup)},{to_date},{n % 2},0,{_local(booked)},{','.join(coords)},0,{cancelled},{fare}"
        )
    return "\r\n".join(lines) + "\r\n"


def _cell(text: str) -> str | None:
    return None if text in ("NULL", "") else text


def _instant(text: str) -> datetime:
    return datetime.strptime(text, "%m/%d/%Y %H:%M").replace(tzinfo=KOLKATA).astimezone(UTC)


def _expected(csv_text: str) -> dict[int, dict[str, Any]]:
    """What every store must hold for each booking, from the file's text."""
    rows = [line.split(",") for line in csv_text.strip().split("\r\n")]
    header, out = rows[0], {}
    for cells in rows[1:]:
        raw = dict(zip(header, cells, strict=True))
        to_text = _cell(raw["to_date"])
        bare = to_text is not None and " " not in to_text
        expected: dict[str, Any] = {
            name: None if _cell(raw[name]) is None else int(raw[name])
            for name in ("booking_id", "user_id", "vehicle_model_id", "package_id", "travel_type_id",
                         "from_area_id", "to_area_id", "from_city_id", "to_city_id", "online_booking",
                         "mobile_site_booking", "driver_id")
        }  # fmt: skip
        for name in ("from_lat", "from_long", "to_lat", "to_long"):
            expected[name] = None if _cell(raw[name]) is None else float(raw[name])
        expected["from_date"] = _instant(raw["from_date"])
        expected["booking_created"] = _instant(raw["booking_created"])
        expected["to_date"] = None if to_text is None or bare else _instant(to_text)
        expected["to_date_day"] = datetime.strptime(to_text, "%m/%d/%Y").date() if bare and to_text else None
        expected["car_cancellation"] = int(raw["Car_Cancellation"])
        # A column the platform does not know: every ride has the key (a NULL cell is a null, kept),
        # and its cells stay the text they were (neither the client nor the platform guesses a type).
        expected["extras"] = {"fare_inr": _cell(raw["fare_inr"])}
        out[expected["booking_id"]] = expected
    return out


def _differences(where: str, expected: dict[str, Any], got: dict[str, Any]) -> list[str]:
    return [f"{where} {expected['booking_id']} {name}: {got.get(name)!r} != {value!r}"
            for name, value in expected.items() if got.get(name) != value]  # fmt: skip


def _from_pg(row: asyncpg.Record) -> dict[str, Any]:
    out = dict(row)
    for name in ("from_lat", "from_long", "to_lat", "to_long"):
        out[name] = None if out[name] is None else float(Decimal(out[name]))
    out["extras"] = orjson.loads(out["extras"]) if out["extras"] else None
    return out


def _from_es(doc: dict[str, Any]) -> dict[str, Any]:
    out = dict(doc)
    for name in ("from_date", "to_date", "booking_created"):
        out[name] = None if doc.get(name) is None else datetime.fromisoformat(doc[name])
    out["to_date_day"] = None if doc.get("to_date_day") is None else date.fromisoformat(doc["to_date_day"])
    out["extras"] = doc.get("extras")
    return out


async def test_an_export_of_real_shapes_arrives_exactly(stack_env: dict[str, str], tmp_path: Any) -> None:
    first_id = int(time.time() * 1000) % 10**9 * 100 + 10**13  # far from generated ids, unique per run
    pickup_day = (datetime.now(KOLKATA) - timedelta(days=1)).date()  # hot: indexed by the job
    text = _export(first_id, pickup_day)
    expected = _expected(text)
    rides = list(read_csv(io.StringIO(text, newline="")))
    assert len(rides) == SHAPES and all(isinstance(r, dict) for r in rides)

    url, key = stack_env["XRIDES_API_URL"], stack_env["XRIDES_API_KEY"]
    outcomes = []
    for batch, half in ((False, rides[: SHAPES // 2]), (True, rides[SHAPES // 2 :])):
        with Client(url, key, spool=str(tmp_path / f"spool-{batch}.db"), batch=batch) as client:
            handles = client.send_many(half)  # type: ignore[arg-type]
            assert client.flush(timeout=120)
            outcomes += [h.outcome for h in handles]
    assert [o.kind for o in outcomes if o] == ["stored"] * SHAPES, outcomes

    differences: list[str] = []
    ids = sorted(expected)
    conn = await asyncpg.connect(stack_env["XRIDES_PG_DSN"])
    try:
        rows = await conn.fetch("SELECT * FROM cab_rides WHERE booking_id = ANY($1::bigint[])", ids)
        flags = {r["booking_id"]: list(r["quality"]) for r in rows}
    finally:
        await conn.close()
    assert sorted(r["booking_id"] for r in rows) == ids
    for row in rows:
        differences += _differences("postgres", expected[row["booking_id"]], _from_pg(row))
    assert all("no_pickup_area" in flags[b] for b, e in expected.items() if e["from_area_id"] is None)
    assert all("to_date_date_only" in flags[b] for b, e in expected.items() if e["to_date_day"] is not None)

    es = AsyncElasticsearch(stack_env["XRIDES_ES_URL"])
    try:
        docs: dict[int, dict[str, Any]] = {}
        for _ in range(120):  # searchable within a minute or two of being stored
            await es.indices.refresh(index="rides-*")
            found = await es.search(index="rides-*", query={"terms": {"booking_id": ids}}, size=SHAPES)
            docs = {int(h["_id"]): h["_source"] for h in found["hits"]["hits"]}
            if len(docs) == SHAPES:
                break
            await asyncio.sleep(1)
    finally:
        await es.close()
    assert sorted(docs) == ids
    for booking, doc in docs.items():
        differences += _differences("elasticsearch", expected[booking], _from_es(doc))
        assert doc["quality"]["no_pickup_area"] is (expected[booking]["from_area_id"] is None)

    differences += await _archive_differences(stack_env, expected, pickup_day)
    assert differences == []


async def _archive_differences(
    env: dict[str, str], expected: dict[int, dict[str, Any]], pickup_day: date
) -> list[str]:
    """Through the archiver's own encoding: the days' rows read from PostgreSQL (read only), written
    as Parquet to a test prefix of the bucket, read back and decoded (no bookkeeping is touched)."""
    tag = uuid.uuid4().hex[:8]
    settings = ArchiverSettings(
        pg_dsn=env["XRIDES_PG_DSN"],
        es_url=env["XRIDES_ES_URL"],
        s3_endpoint=env["XRIDES_S3_ENDPOINT"],
        s3_access_key=env["XRIDES_S3_ACCESS_KEY"],
        s3_secret_key=env["XRIDES_S3_SECRET_KEY"],
        s3_bucket=env["XRIDES_S3_BUCKET"],
        archive_prefix=f"test-real-shapes/{tag}",
    )
    store = ArchiveStore(settings.store_config())
    differences: list[str] = []
    try:
        async with Archiver(settings) as archiver:
            days = sorted({e["from_date"].date() for e in expected.values()})
            for day in days:
                table = await archiver.read_postgres_day(day)
                key = store.data_key(day, 1, 0)
                await asyncio.to_thread(store.put, key, encode_parquet(table, settings.row_group_rows))
                data = await asyncio.to_thread(store.get, key)
                assert data is not None
                back = canonical(decode_parquet(data))
                assert back.equals(table), f"{day}: the Parquet round trip changed the day"
                for row in back.filter(
                    pa.compute.is_in(back["booking_id"], pa.array(list(expected)))
                ).to_pylist():
                    got = {**row, "extras": orjson.loads(row["extras"]) if row["extras"] else None}
                    differences += _differences("archive", expected[row["booking_id"]], got)
    finally:
        for obj in store.objects(store.prefix + "/"):
            store.delete(obj.key)
    assert pickup_day  # the pickups' own day is among those read
    return differences
