"""The Kibana dashboard proven without a Kibana: objects, references, fields, and answers.

Every saved object of ``dashboards/kibana/xrides.ndjson`` is parsed and every reference resolved;
every field an object names (time field, Lens columns and their KQL filters, the map's geo field,
the saved search's columns, sort and query) must exist with a fitting type in the live mapping
(``_field_caps``), both on indices made by the platform's index template and on the template
Elasticsearch would apply to a new ``rides-*`` index. Then each panel's own request
(:func:`dashboards.kibana.es_request`) runs against Elasticsearch loaded with synthetic rides,
and its answer is compared with PostgreSQL's over the same rides.

The rides go to test names only (``dashtest-rides-*``, ``dash_test.cab_rides``,
``s3://<bucket>/dashtest/rides``): the platform's ``rides-*`` indices are never touched.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from elasticsearch import Elasticsearch

from dashboards import cli, kibana
from loadgen.synthetic import load_all, make_rides
from query_dsl import QuerySettings

pytestmark = pytest.mark.integration

RIDES = 20_000
DAYS = 25
TEST_PREFIX = "dashtest-rides-"
TEST_TABLE = "dash_test.cab_rides"
TEST_ARCHIVE = "dashtest/rides"

# Lens data types and the Elasticsearch field types each accepts.
LENS_TYPES = {
    "date": {"date", "date_nanos"},
    "number": {"long", "integer", "short", "byte", "double", "float", "half_float", "scaled_float"},
    "string": {"keyword", "constant_keyword"},
    "boolean": {"boolean"},
}


# --- the objects -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    lines = cli.KIBANA_FILE.read_text(encoding="utf-8").splitlines()
    assert lines, "the NDJSON is empty"
    return [json.loads(line) for line in lines]


def by_type(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["type"] == kind]


def refs(obj: dict[str, Any]) -> dict[str, dict[str, str]]:
    return {r["name"]: r for r in obj["references"]}


def kql_fields(query: str) -> list[tuple[str, str]]:
    """(field, value) of each ``field : value`` clause (the only KQL the objects use)."""
    clauses = re.findall(r"([A-Za-z_][\w.]*)\s*:\s*(\"[^\"]*\"|[^\s()]+)", query)
    assert clauses or not query.strip(), f"unreadable KQL {query!r}"
    return clauses


def used_fields(objects: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Every field the objects name -> the Elasticsearch types that would fit its use."""
    uses: dict[str, set[str]] = {}

    def use(field: str, fits: set[str], where: str) -> None:
        assert field, f"{where}: empty field name"
        uses[field] = uses.get(field, fits) & fits
        assert uses[field], f"{where}: {field} is used with incompatible types"

    def kql(query: str, where: str) -> None:
        for field, value in kql_fields(query):
            fits = LENS_TYPES["boolean"] if value in ("true", "false") else set().union(*LENS_TYPES.values())
            use(field, fits, f"{where} KQL")

    for view in by_type(objects, "index-pattern"):
        use(view["attributes"]["timeFieldName"], LENS_TYPES["date"], view["id"])
        for field in json.loads(view["attributes"].get("fieldFormatMap", "{}")):
            use(field, set().union(*LENS_TYPES.values()), f"{view['id']} field format")
    for lens in by_type(objects, "lens"):
        state = lens["attributes"]["state"]
        kql(state["query"]["query"], lens["id"])
        for layer in state["datasourceStates"]["formBased"]["layers"].values():
            for column in layer["columns"].values():
                if column.get("sourceField") not in (None, "___records___"):
                    use(column["sourceField"], LENS_TYPES[column["dataType"]], lens["id"])
                if "filter" in column:
                    assert column["filter"]["language"] == "kuery"
                    kql(column["filter"]["query"], lens["id"])
    for map_ in by_type(objects, "map"):
        for layer in json.loads(map_["attributes"]["layerListJSON"]):
            geo = layer["sourceDescriptor"].get("geoField")
            if geo:
                use(geo, {"geo_point", "geo_shape"}, map_["id"])
    for search in by_type(objects, "search"):
        source = json.loads(search["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
        kql(source["query"]["query"], search["id"])
        for column in search["attributes"]["columns"]:
            use(column, set().union(*LENS_TYPES.values()), f"{search['id']} column")
        for field, _ in search["attributes"]["sort"]:
            use(field, LENS_TYPES["date"] | LENS_TYPES["number"], f"{search['id']} sort")
    return uses


def test_every_object_parses_and_every_reference_resolves(objects: list[dict[str, Any]]) -> None:
    ids = {(o["type"], o["id"]) for o in objects}
    assert len(ids) == len(objects), "duplicate (type, id)"
    assert Counter(o["type"] for o in objects) == {
        "index-pattern": 1,
        "lens": len(kibana.CHARTS),
        "map": 1,
        "search": 1,
        "dashboard": 1,
    }
    for obj in objects:
        assert obj["attributes"]["title"], obj["id"]
        assert obj["typeMigrationVersion"] and obj["coreMigrationVersion"], obj["id"]
        for ref in obj["references"]:
            assert (ref["type"], ref["id"]) in ids, f"{obj['id']} refers to missing {ref['type']} {ref['id']}"
    (view,) = by_type(objects, "index-pattern")
    assert view["attributes"]["title"] == "rides-*"
    assert view["attributes"]["timeFieldName"] == "from_date"

    # each name an object uses to point at another has its reference
    for lens in by_type(objects, "lens"):
        for layer_id in lens["attributes"]["state"]["datasourceStates"]["formBased"]["layers"]:
            assert refs(lens)[f"indexpattern-datasource-layer-{layer_id}"]["id"] == view["id"]
        layer = next(iter(lens["attributes"]["state"]["datasourceStates"]["formBased"]["layers"].values()))
        assert set(layer["columnOrder"]) == set(layer["columns"])
        for column in layer["columns"].values():
            for inner in column.get("references", []):
                assert inner in layer["columns"], f"{lens['id']}: column refers to missing {inner}"
    for map_ in by_type(objects, "map"):
        for layer in json.loads(map_["attributes"]["layerListJSON"]):
            name = layer["sourceDescriptor"].get("indexPatternRefName")
            if name:
                assert refs(map_)[name]["id"] == view["id"]
    for search in by_type(objects, "search"):
        source = json.loads(search["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
        assert refs(search)[source["indexRefName"]]["id"] == view["id"]
    (board,) = by_type(objects, "dashboard")
    panels = json.loads(board["attributes"]["panelsJSON"])
    assert len(panels) == len(kibana.PANELS)
    shown = set()
    for panel in panels:
        ref = refs(board)[f"{panel['panelIndex']}:{panel['panelRefName']}"]
        assert ref["type"] == panel["type"]
        shown.add((ref["type"], ref["id"]))
    assert shown == ids - {("index-pattern", view["id"]), ("dashboard", board["id"])}, (
        "an object is not on the dashboard"
    )
    # panels do not overlap on Kibana's 48-column grid
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        g = panel["gridData"]
        assert g["x"] + g["w"] <= 48
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"panel {panel['panelIndex']} overlaps another"
        cells |= mine


# --- the live stack ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def settings(stack_env: dict[str, str]) -> QuerySettings:
    return QuerySettings(
        pg_dsn=stack_env["XRIDES_PG_DSN"],
        es_url=stack_env["XRIDES_ES_URL"],
        es_rides_prefix=TEST_PREFIX,
        s3_endpoint=stack_env["XRIDES_S3_ENDPOINT"],
        s3_access_key=stack_env["XRIDES_S3_ACCESS_KEY"],
        s3_secret_key=stack_env["XRIDES_S3_SECRET_KEY"],
        s3_bucket=stack_env["XRIDES_S3_BUCKET"],
        archive_prefix=TEST_ARCHIVE,
        query_pg_table=TEST_TABLE,
    )


@pytest.fixture(scope="module")
def loaded(settings: QuerySettings) -> tuple[str, str]:
    """Synthetic rides in the test names; the dashboard's time range over them, as Kibana sends it."""
    now = datetime.now(UTC).replace(microsecond=0)
    asyncio.run(load_all(settings, [make_rides(RIDES, now, DAYS)]))
    return (now - timedelta(days=30)).isoformat(timespec="milliseconds"), now.isoformat(
        timespec="milliseconds"
    )


@pytest.fixture(scope="module")
def es(settings: QuerySettings) -> Iterator[Elasticsearch]:
    client = Elasticsearch(settings.es_url, request_timeout=120)
    yield client
    client.close()


def search(es: Elasticsearch, panel: Any, time_range: tuple[str, str]) -> dict[str, Any]:
    body = kibana.es_request(panel, *time_range)
    return dict(es.search(index=kibana.index_pattern(TEST_PREFIX), body=body).body)


def pg(settings: QuerySettings, sql: str, *args: Any) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(settings.pg_dsn)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


def pg_window(time_range: tuple[str, str]) -> tuple[datetime, datetime]:
    return datetime.fromisoformat(time_range[0]), datetime.fromisoformat(time_range[1])


def _check_types(caps: dict[str, Any], uses: dict[str, set[str]], where: str) -> None:
    for field, fits in sorted(uses.items()):
        assert field in caps, f"{where}: {field} is not in the mapping"
        types = set(caps[field])
        assert len(types) == 1, f"{where}: {field} has conflicting types {types}"
        assert types <= fits, f"{where}: {field} is {types}, the dashboard needs one of {sorted(fits)}"
        if fits & {"date", "long", "double", "keyword", "boolean", "geo_point", "integer"}:
            capability = next(iter(caps[field].values()))
            assert capability["aggregatable"], f"{where}: {field} cannot be aggregated"


def test_every_field_exists_with_its_type_in_the_live_mapping(
    objects: list[dict[str, Any]], es: Elasticsearch, loaded: tuple[str, str]
) -> None:
    uses = used_fields(objects)
    assert {
        "from_date",
        "travel_type_id",
        "pickup",
        "from_area_id",
        "is_cancelled",
        "booking_channel",
    } <= set(uses)
    caps = es.field_caps(index=kibana.index_pattern(TEST_PREFIX), fields="*").body["fields"]
    _check_types(caps, uses, kibana.index_pattern(TEST_PREFIX))

    # The platform's own template, as Elasticsearch would apply it to tomorrow's rides-* index.
    simulated = es.indices.simulate_index_template(name="rides-2099.01.01").body
    properties = simulated["template"]["mappings"]["properties"]

    def flatten(props: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name, spec in props.items():
            if "properties" in spec:
                out |= flatten(spec["properties"], f"{prefix}{name}.")
            else:
                out[f"{prefix}{name}"] = {spec["type"]: {"aggregatable": spec["type"] != "text"}}
        return out

    _check_types(flatten(properties), uses, "the rides-* index template")


def test_rides_per_day_by_travel_type_equal_postgres(
    es: Elasticsearch, settings: QuerySettings, loaded: tuple[str, str]
) -> None:
    chart = kibana.RIDES_OVER_TIME
    rows = kibana.rows(chart, search(es, chart, loaded))
    got = {(r["travel_type_id"], str(r["from_date"])[:10]): r["rides"] for r in rows if r["rides"]}
    start, end = pg_window(loaded)
    want = {
        (r["travel_type_id"], r["day"]): r["n"]
        for r in pg(
            settings,
            f"SELECT travel_type_id, to_char(from_date AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS day, count(*) AS n"
            f" FROM {TEST_TABLE} WHERE from_date >= $1 AND from_date <= $2 GROUP BY 1, 2",
            start,
            end,
        )
    }
    assert len(want) > 3 * 20, "the synthetic rides should cover every travel type on most days"
    assert got == want
    assert {t for t, _ in got} == set(kibana.TRAVEL_TYPES)


def test_pickup_heat_map_covers_every_pickup(
    es: Elasticsearch, settings: QuerySettings, loaded: tuple[str, str]
) -> None:
    response = search(es, kibana.PICKUP_MAP, loaded)
    buckets = response["aggregations"]["grid"]["buckets"]
    assert len(buckets) > 10, "pickups should spread over many tiles"
    start, end = pg_window(loaded)
    (row,) = pg(
        settings,
        f"SELECT count(*) AS n, avg(from_lat)::float8 AS lat, avg(from_long)::float8 AS lon FROM {TEST_TABLE}"
        " WHERE from_date >= $1 AND from_date <= $2 AND from_lat IS NOT NULL AND from_long IS NOT NULL",
        start,
        end,
    )
    assert sum(b["doc_count"] for b in buckets) == row["n"]
    lat = sum(b["centroid"]["location"]["lat"] * b["doc_count"] for b in buckets) / row["n"]
    lon = sum(b["centroid"]["location"]["lon"] * b["doc_count"] for b in buckets) / row["n"]
    assert abs(lat - row["lat"]) < 1e-4 and abs(lon - row["lon"]) < 1e-4
    centre_lat, centre_lon = kibana.PICKUP_MAP.center
    assert abs(lat - centre_lat) < 0.3 and abs(lon - centre_lon) < 0.3, (
        "the saved view should show the pickups"
    )


def test_cancellation_rate_by_area_equals_postgres(
    es: Elasticsearch, settings: QuerySettings, loaded: tuple[str, str]
) -> None:
    chart = kibana.CANCELLATION_BY_AREA
    rows = kibana.rows(chart, search(es, chart, loaded))
    assert len(rows) == 15
    start, end = pg_window(loaded)
    per_area = {
        r["from_area_id"]: (r["n"], r["cancelled"])
        for r in pg(
            settings,
            f"SELECT from_area_id, count(*) AS n, count(*) FILTER (WHERE car_cancellation = 1) AS cancelled"
            f" FROM {TEST_TABLE} WHERE from_date >= $1 AND from_date <= $2 GROUP BY 1",
            start,
            end,
        )
    }
    for row in rows:
        rides, cancelled = per_area[row["from_area_id"]]
        assert row["rides"] == rides
        assert row["cancellation_rate"] == pytest.approx(cancelled / rides)
    # the 15 busiest areas (ties at the edge may pick either area)
    sixteenth = sorted((n for n, _ in per_area.values()), reverse=True)[15]
    assert min(r["rides"] for r in rows) >= sixteenth
    assert any(r["cancellation_rate"] > 0 for r in rows)


def test_booking_channel_shares_equal_postgres(
    es: Elasticsearch, settings: QuerySettings, loaded: tuple[str, str]
) -> None:
    chart = kibana.BOOKING_CHANNEL
    got = {r["booking_channel"]: r["rides"] for r in kibana.rows(chart, search(es, chart, loaded))}
    start, end = pg_window(loaded)
    want = {
        r["channel"]: r["n"]
        for r in pg(
            settings,
            "SELECT CASE WHEN online_booking = 1 THEN 'online' WHEN mobile_site_booking = 1 THEN 'mobile_site'"
            f" ELSE 'offline' END AS channel, count(*) AS n FROM {TEST_TABLE}"
            " WHERE from_date >= $1 AND from_date <= $2 GROUP BY 1",
            start,
            end,
        )
    }
    assert got == want
    assert set(got) == {"online", "mobile_site", "offline"}


def test_lead_time_distribution_equals_postgres(
    es: Elasticsearch, settings: QuerySettings, loaded: tuple[str, str]
) -> None:
    chart = kibana.LEAD_TIME
    got = [r["rides"] for r in kibana.rows(chart, search(es, chart, loaded))]
    (bucket,) = chart.buckets
    assert isinstance(bucket, kibana.Ranges)
    start, end = pg_window(loaded)
    want = []
    for lo, hi in bucket.buckets():
        (row,) = pg(
            settings,
            f"SELECT count(*) AS n FROM {TEST_TABLE} WHERE from_date >= $1 AND from_date <= $2"
            " AND extract(epoch FROM from_date - booking_created) / 60 >= $3"
            " AND extract(epoch FROM from_date - booking_created) / 60 < $4",
            start,
            end,
            lo,
            hi,
        )
        want.append(row["n"])
    assert got == want
    assert sum(got) > RIDES * 0.5
    assert sum(1 for n in got if n) >= 5, "lead times should spread over most ranges"


def test_saved_search_finds_the_cancelled_rides_newest_first(
    es: Elasticsearch, settings: QuerySettings, loaded: tuple[str, str]
) -> None:
    search_def = kibana.CANCELLED_RIDES
    response = search(es, search_def, loaded)
    start, end = pg_window(loaded)
    (row,) = pg(
        settings,
        f"SELECT count(*) AS n FROM {TEST_TABLE} WHERE from_date >= $1 AND from_date <= $2 AND car_cancellation = 1",
        start,
        end,
    )
    assert response["hits"]["total"]["value"] == row["n"] > 0
    hits = response["hits"]["hits"]
    assert hits
    for hit in hits:
        assert set(hit["_source"]) <= set(search_def.columns)
        assert {"booking_id", "travel_type_id", "from_area_id"} <= set(hit["_source"])
    pickups = [hit["sort"][0] for hit in hits]
    assert pickups == sorted(pickups, reverse=True)


def test_every_panel_is_checked_against_postgres() -> None:
    checked = {
        kibana.RIDES_OVER_TIME.id,
        kibana.PICKUP_MAP.id,
        kibana.CANCELLATION_BY_AREA.id,
        kibana.BOOKING_CHANNEL.id,
        kibana.LEAD_TIME.id,
        kibana.CANCELLED_RIDES.id,
    }
    assert checked == {p.id for p in kibana.PANELS}, "a new panel needs its comparison test here"
