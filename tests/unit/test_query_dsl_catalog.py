"""The catalog is derived from the ride contract and agrees with what the Flink job stores."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa
import pytest

from ingest_service.settings import ApiSettings
from loadgen.synthetic import make_rides
from query_dsl.catalog import FIELDS, POINTS, RATIOS, ValueType
from query_dsl.result import geohash, geohash_cells
from query_service.settings import QueryServiceSettings
from xrides.ride import RIDE_FIELDS, Kind, parquet_schema
from xrides.ride.enrich import ServiceRegion, enrich
from xrides.search.templates import ENRICHED_PROPERTIES, rides_template

ES_TYPES = {
    ValueType.INTEGER: {"long", "integer", "byte", "short"},
    ValueType.NUMBER: {"double", "float"},
    ValueType.STRING: {"keyword"},
    ValueType.BOOLEAN: {"boolean"},
    ValueType.TIMESTAMP: {"date"},
}


def test_raw_fields_are_exactly_the_ride_contract() -> None:
    raw = {name: f for name, f in FIELDS.items() if f.raw}
    assert list(raw) == [f.name for f in RIDE_FIELDS]
    for spec in RIDE_FIELDS:
        field = raw[spec.name]
        assert field.nullable == spec.nullable
        if spec.kind is Kind.TIMESTAMP:
            assert field.type is ValueType.TIMESTAMP
        elif spec.kind in (Kind.LATITUDE, Kind.LONGITUDE):
            assert field.type is ValueType.NUMBER
        else:
            assert field.type is ValueType.INTEGER


def test_every_catalog_field_is_stored_in_elasticsearch_with_a_matching_type() -> None:
    properties = rides_template("rides-")["template"]["mappings"]["properties"]
    for field in FIELDS.values():
        if field.window_sql:  # customer and driver fields: windows over the range, scanned on Elasticsearch
            assert not field.es
            continue
        assert field.es in properties, (
            f"{field.name}: Elasticsearch has no field {field.es} (no scripts here)"
        )
        assert properties[field.es]["type"] in ES_TYPES[field.type], field.name
    for point in POINTS.values():
        assert properties[point.es]["type"] == "geo_point"


def test_every_enriched_field_the_flink_job_stores_is_in_the_catalog() -> None:
    stored = set(ENRICHED_PROPERTIES) - {"pickup", "dropoff", "quality"}
    assert stored <= set(FIELDS)
    assert {"pickup", "dropoff"} == set(POINTS)


def test_ratios_divide_a_flag() -> None:
    kinds = {f.name: f.kind for f in RIDE_FIELDS}
    assert {r.flag for r in RATIOS.values()} <= {n for n, k in kinds.items() if k is Kind.FLAG}
    assert set(RATIOS) == {"cancellation_rate", "online_share", "mobile_share"}


def test_derived_fields_in_duckdb_equal_the_flink_enrichment() -> None:
    """The archive's SQL formulas give what xrides.ride.enrich stores in Elasticsearch (PostgreSQL's are
    checked the same way by the integration test, through whole queries)."""
    now = datetime(2026, 3, 29, 12, 0, tzinfo=UTC)
    rides = make_rides(300, now, 3, seed=11)
    columns = {f.name: [getattr(r, f.name) for r in rides] for f in RIDE_FIELDS}
    table = pa.Table.from_pydict(columns, schema=parquet_schema())
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("rides", table)
    derived = [f for f in FIELDS.values() if not f.raw and not f.window_sql]
    sql = "SELECT booking_id, " + ", ".join(f.duckdb for f in derived) + " FROM rides ORDER BY booking_id"
    got = con.execute(sql).fetchall()
    zone, region = ZoneInfo("Asia/Kolkata"), ServiceRegion()
    for ride, row in zip(sorted(rides, key=lambda r: r.booking_id), got, strict=True):
        doc = enrich(ride, zone, region)
        for field, value in zip(derived, row[1:], strict=True):
            expected = doc[field.es]
            if isinstance(expected, float) and value is not None:
                assert value == pytest.approx(expected, abs=1e-9), (field.name, ride.booking_id)
            else:
                assert value == expected, (field.name, ride.booking_id)


@pytest.mark.parametrize("precision", range(1, 9))
def test_geohash_cells_round_trip_and_match_the_reference_encoding(precision: int) -> None:
    rng = random.Random(precision)
    for _ in range(200):
        lat, lon = rng.uniform(-90, 90), rng.uniform(-180, 180)
        lat_bits, lon_bits = (5 * precision) // 2, (5 * precision + 1) // 2
        cells = (int((lat + 90) / 180 * 2**lat_bits), int((lon + 180) / 360 * 2**lon_bits))
        text = geohash(*cells, precision)
        assert geohash_cells(text) == cells
        assert text == _reference_geohash(lat, lon, precision)


def _reference_geohash(lat: float, lon: float, precision: int) -> str:
    """The textbook bisection algorithm."""
    alphabet = "0123456789bcdefghjkmnpqrstuvwxyz"
    lat_range, lon_range = [-90.0, 90.0], [-180.0, 180.0]
    bits, even = 0, True
    out: list[str] = []
    count = 0
    while len(out) < precision:
        rng, value = (lon_range, lon) if even else (lat_range, lat)
        mid = (rng[0] + rng[1]) / 2
        if value >= mid:
            bits = bits * 2 + 1
            rng[0] = mid
        else:
            bits *= 2
            rng[1] = mid
        even = not even
        count += 1
        if count == 5:
            out.append(alphabet[bits])
            bits, count = 0, 0
    return "".join(out)


def test_a_known_geohash() -> None:
    # Bangalore's centre (12.9716 N, 77.5946 E) is in cell tdr1v at precision 5
    lat, lon = 12.9716, 77.5946
    assert _reference_geohash(lat, lon, 5) == "tdr1v"
    cells = (int((lat + 90) / 180 * 2**12), int((lon + 180) / 360 * 2**13))
    assert geohash(*cells, 5) == "tdr1v"


def test_timestamps_survive_the_archive_schema() -> None:
    moment = datetime(2026, 11, 1, 6, 30, tzinfo=UTC)
    table = pa.Table.from_pydict({"t": [moment, moment + timedelta(hours=1)]})
    assert table.column("t").to_pylist()[0] == moment


def test_the_api_forwards_to_the_query_services_default_address() -> None:
    service = QueryServiceSettings()
    assert ApiSettings().query_url == f"http://{service.query_host}:{service.query_port}"
