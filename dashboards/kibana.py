"""The analysts' Kibana dashboard, each panel defined once.

From the definitions below come both the saved objects (``dashboards/kibana/xrides.ndjson``,
written by ``python -m dashboards generate``) and the Elasticsearch request each visualization
runs (:func:`es_request`), so the integration test and the PNG previews ask Elasticsearch exactly
what Kibana asks it. A unit test checks the committed NDJSON equals :func:`ndjson`.

The objects use Kibana's 8.x/9.x saved-object format (Lens ``formBased`` layers, a Maps heat map,
a Discover session, a dashboard whose panels are references); their migration versions tell a
newer Kibana which of its migrations still apply. The data view is ``rides-*`` (time field
``from_date``, the pickup), the daily indices of the Flink job's indexer.

Only standard library imports: ``kibana-import`` runs this package in a minimal container.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

DATA_VIEW_ID = "xrides-rides"
DATA_VIEW_TITLE = "rides-*"
TIME_FIELD = "from_date"
DASHBOARD_ID = "xrides-rides-dashboard"
TIME_FROM, TIME_TO = "now-30d", "now"

# The ride contract's travel types (xrides/ride/fields.py), shown by name instead of 1/2/3.
TRAVEL_TYPES = {1: "long distance", 2: "point to point", 3: "hourly rental"}

_CORE_MIGRATION = "8.8.0"
_TYPE_MIGRATION = {
    "index-pattern": "8.0.0",
    "lens": "8.9.0",
    "map": "8.4.0",
    "search": "8.0.0",
    "dashboard": "8.7.0",
}
_PANEL_VERSION = "8.8.0"
_RECORDS = "___records___"  # Lens's "field" of a document count


# --- building blocks ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Match:
    """``field : value`` in KQL; Kibana sends it to Elasticsearch as a ``match`` query."""

    field: str
    value: bool | int | str

    def kql(self) -> str:
        return f"{self.field} : {json.dumps(self.value)}"

    def es(self) -> dict[str, Any]:
        return {"match": {self.field: self.value}}


@dataclass(frozen=True, slots=True)
class DateHistogram:
    field: str
    label: str
    interval: str = "1d"
    kind: str = "date"


@dataclass(frozen=True, slots=True)
class Terms:
    field: str
    label: str
    size: int
    order_by: str  # id of the metric column the top values are ranked by
    kind: str = "number"  # Lens's data type of the field: number or string
    # Lens's "accuracy mode": each shard returns max(1000, 1.5 size + 10) terms, not 1.5 size + 10.
    # Daily indices split an area's rides over 30 shards; without it a busy area's count is
    # missing the days it was not in a shard's short list.
    accuracy_mode: bool = False

    def shard_size(self) -> int | None:
        return max(1000, int(self.size * 1.5 + 10)) if self.accuracy_mode else None


@dataclass(frozen=True, slots=True)
class Ranges:
    field: str
    label: str
    edges: tuple[float, ...]  # [edges[i], edges[i+1]) for each i
    kind: str = "number"

    def buckets(self) -> list[tuple[float, float]]:
        return list(zip(self.edges, self.edges[1:], strict=False))


Bucket = DateHistogram | Terms | Ranges


@dataclass(frozen=True, slots=True)
class Count:
    id: str
    label: str
    where: Match | None = None


@dataclass(frozen=True, slots=True)
class Ratio:
    """``count(kql='<where>') / count()``, a Lens formula shown as a percentage."""

    id: str
    label: str
    where: Match


Metric = Count | Ratio


@dataclass(frozen=True, slots=True)
class Grid:
    x: int
    y: int
    w: int
    h: int


@dataclass(frozen=True, slots=True)
class Chart:
    """A Lens visualization of one layer: buckets nest in the order given (outermost first)."""

    id: str
    title: str
    description: str
    shape: str  # bar_stacked | bar | donut | table
    buckets: tuple[Bucket, ...]
    metrics: tuple[Metric, ...]
    grid: Grid
    x: str = ""  # id of the bucket on the x axis (xy charts); the other bucket splits the series


@dataclass(frozen=True, slots=True)
class HeatMap:
    """A Maps heat map of a geo_point (a ``geotile_grid`` aggregation with centroids)."""

    id: str
    title: str
    description: str
    field: str
    center: tuple[float, float]  # lat, lon
    zoom: float
    grid: Grid

    @property
    def precision(self) -> int:
        """Geotile zoom Maps asks for at the saved view: the map's zoom + 3 at FINE resolution."""
        return math.ceil(self.zoom) + 3


@dataclass(frozen=True, slots=True)
class SavedSearch:
    id: str
    title: str
    description: str
    where: Match
    columns: tuple[str, ...]
    grid: Grid


def bucket_id(bucket: Bucket) -> str:
    return bucket.field


# --- the dashboard -----------------------------------------------------------------------------

RIDES_OVER_TIME = Chart(
    id="xrides-rides-over-time",
    title="Rides per day by travel type",
    description="Rides by pickup day (UTC), stacked by travel type.",
    shape="bar_stacked",
    buckets=(
        Terms("travel_type_id", "Travel type", size=5, order_by="rides"),
        DateHistogram(TIME_FIELD, "Pickup day", interval="1d"),
    ),
    metrics=(Count("rides", "Rides"),),
    x=TIME_FIELD,
    grid=Grid(0, 0, 48, 14),
)

PICKUP_MAP = HeatMap(
    id="xrides-pickup-map",
    title="Pickups",
    description="Heat map of pickup locations (the pickup geo_point).",
    field="pickup",
    center=(12.97, 77.59),  # Bangalore
    zoom=11.0,
    grid=Grid(0, 14, 24, 22),
)

CANCELLATION_BY_AREA = Chart(
    id="xrides-cancellation-by-area",
    title="Cancellation rate by pickup area",
    description="The 15 pickup areas with the most rides: rides and the share cancelled.",
    shape="table",
    buckets=(Terms("from_area_id", "Pickup area", size=15, order_by="rides", accuracy_mode=True),),
    metrics=(
        Count("rides", "Rides"),
        Ratio("cancellation_rate", "Cancellation rate", where=Match("is_cancelled", True)),
    ),
    grid=Grid(24, 14, 24, 22),
)

BOOKING_CHANNEL = Chart(
    id="xrides-booking-channel",
    title="Online vs mobile-site vs offline bookings",
    description="Share of rides by booking channel (online_booking / mobile_site_booking).",
    shape="donut",
    buckets=(Terms("booking_channel", "Booking channel", size=3, order_by="rides", kind="string"),),
    metrics=(Count("rides", "Rides"),),
    grid=Grid(0, 36, 16, 14),
)

LEAD_TIME = Chart(
    id="xrides-lead-time",
    title="Lead time: booking to pickup",
    description="Rides by minutes between booking and pickup (lead_time_min).",
    shape="bar",
    buckets=(
        Ranges("lead_time_min", "Lead time (minutes)", edges=(0, 15, 30, 60, 120, 240, 480, 1440, 10080)),
    ),
    metrics=(Count("rides", "Rides"),),
    x="lead_time_min",
    grid=Grid(16, 36, 32, 14),
)

CANCELLED_RIDES = SavedSearch(
    id="xrides-cancelled-rides",
    title="Cancelled rides",
    description="Every cancelled ride, newest pickup first.",
    where=Match("is_cancelled", True),
    columns=(
        "booking_id",
        "travel_type_id",
        "from_area_id",
        "to_area_id",
        "booking_channel",
        "lead_time_min",
        "distance_km",
    ),
    grid=Grid(0, 50, 48, 16),
)

CHARTS: tuple[Chart, ...] = (RIDES_OVER_TIME, CANCELLATION_BY_AREA, BOOKING_CHANNEL, LEAD_TIME)
PANELS: tuple[Chart | HeatMap | SavedSearch, ...] = (
    RIDES_OVER_TIME,
    PICKUP_MAP,
    CANCELLATION_BY_AREA,
    BOOKING_CHANNEL,
    LEAD_TIME,
    CANCELLED_RIDES,
)


# --- saved objects -----------------------------------------------------------------------------


def _saved_object(
    kind: str, object_id: str, attributes: dict[str, Any], references: list[dict[str, str]]
) -> dict[str, Any]:
    return {
        "id": object_id,
        "type": kind,
        "attributes": attributes,
        "references": references,
        "coreMigrationVersion": _CORE_MIGRATION,
        "typeMigrationVersion": _TYPE_MIGRATION[kind],
        "managed": False,
    }


def _dumps(value: Any) -> str:
    """JSON kept as a string inside an attribute (Kibana's ``*JSON`` attributes)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def data_view() -> dict[str, Any]:
    lookup = [{"key": str(k), "value": v} for k, v in TRAVEL_TYPES.items()]
    return _saved_object(
        "index-pattern",
        DATA_VIEW_ID,
        {
            "title": DATA_VIEW_TITLE,
            "name": "XRides rides",
            "timeFieldName": TIME_FIELD,
            "fieldFormatMap": _dumps(
                {
                    "travel_type_id": {
                        "id": "static_lookup",
                        "params": {"lookupEntries": lookup, "unknownKeyValue": None},
                    },
                    "lead_time_min": {"id": "number", "params": {"pattern": "0,0.[0]"}},
                }
            ),
        },
        [],
    )


def _bucket_column(bucket: Bucket, chart: Chart) -> dict[str, Any]:
    column: dict[str, Any] = {
        "label": bucket.label,
        "customLabel": True,
        "dataType": bucket.kind,
        "isBucketed": True,
        "sourceField": bucket.field,
    }
    if isinstance(bucket, DateHistogram):
        column |= {
            "operationType": "date_histogram",
            "scale": "interval",
            "params": {"interval": bucket.interval, "includeEmptyRows": True, "dropPartials": False},
        }
    elif isinstance(bucket, Terms):
        column |= {
            "operationType": "terms",
            "scale": "ordinal",
            "params": {
                "size": bucket.size,
                "orderBy": {"type": "column", "columnId": bucket.order_by},
                "orderDirection": "desc",
                "otherBucket": False,
                "missingBucket": False,
                "parentFormat": {"id": "terms"},
                "accuracyMode": bucket.accuracy_mode,
            },
        }
    else:
        column |= {
            "operationType": "range",
            "scale": "ordinal",
            "params": {
                "type": "range",
                "ranges": [
                    {"from": lo, "to": hi, "label": _range_label(lo, hi)} for lo, hi in bucket.buckets()
                ],
                "maxBars": "auto",
                "includeEmptyRows": True,
            },
        }
    return column


def _count_column(label: str, where: Match | None) -> dict[str, Any]:
    column: dict[str, Any] = {
        "label": label,
        "customLabel": True,
        "dataType": "number",
        "operationType": "count",
        "isBucketed": False,
        "scale": "ratio",
        "sourceField": _RECORDS,
        "params": {"emptyAsNull": False},
    }
    if where is not None:
        column["filter"] = {"query": where.kql(), "language": "kuery"}
    return column


def _metric_columns(metric: Metric) -> dict[str, dict[str, Any]]:
    if isinstance(metric, Count):
        return {metric.id: _count_column(metric.label, metric.where)}
    # A Lens formula is stored with its parts: two counts and the division of one by the other.
    text = f"count(kql='{metric.where.kql()}') / count()"
    part = f"Part of {metric.label}"
    ids = [f"{metric.id}X{i}" for i in range(3)]
    return {
        metric.id: {
            "label": metric.label,
            "customLabel": True,
            "dataType": "number",
            "operationType": "formula",
            "isBucketed": False,
            "scale": "ratio",
            "params": {
                "formula": text,
                "isFormulaBroken": False,
                "format": {"id": "percent", "params": {"decimals": 1}},
            },
            "references": [ids[2]],
        },
        ids[0]: _count_column(part, metric.where),
        ids[1]: _count_column(part, None),
        ids[2]: {
            "label": part,
            "customLabel": True,
            "dataType": "number",
            "operationType": "math",
            "isBucketed": False,
            "scale": "ratio",
            "params": {
                "tinymathAst": {
                    "type": "function",
                    "name": "divide",
                    "args": ids[:2],
                    "location": {"min": 0, "max": len(text)},
                    "text": text,
                }
            },
            "references": ids[:2],
        },
    }


def _lens_visualization(chart: Chart, layer: str) -> tuple[str, dict[str, Any]]:
    buckets = [bucket_id(b) for b in chart.buckets]
    metrics = [m.id for m in chart.metrics]
    if chart.shape == "donut":
        return "lnsPie", {
            "shape": "donut",
            "layers": [
                {
                    "layerId": layer,
                    "layerType": "data",
                    "primaryGroups": buckets,
                    "metrics": metrics,
                    "numberDisplay": "percent",
                    "categoryDisplay": "default",
                    "legendDisplay": "default",
                    "nestedLegend": False,
                }
            ],
        }
    if chart.shape == "table":
        return "lnsDatatable", {
            "layerId": layer,
            "layerType": "data",
            "columns": [{"columnId": c, "isTransposed": False} for c in [*buckets, *metrics]],
            "sorting": {"columnId": metrics[-1], "direction": "desc"},
            "rowHeight": "single",
            "rowHeightLines": 1,
        }
    split = [b for b in buckets if b != chart.x]
    layer_state: dict[str, Any] = {
        "layerId": layer,
        "layerType": "data",
        "seriesType": chart.shape,
        "xAccessor": chart.x,
        "accessors": metrics,
    }
    if split:
        layer_state["splitAccessor"] = split[0]
    return "lnsXY", {
        "preferredSeriesType": chart.shape,
        "legend": {"isVisible": bool(split), "position": "right"},
        "valueLabels": "hide",
        "fittingFunction": "None",
        "axisTitlesVisibilitySettings": {"x": True, "yLeft": True, "yRight": True},
        "layers": [layer_state],
    }


def lens(chart: Chart) -> dict[str, Any]:
    layer = "rides"
    columns: dict[str, dict[str, Any]] = {bucket_id(b): _bucket_column(b, chart) for b in chart.buckets}
    for metric in chart.metrics:
        columns |= _metric_columns(metric)
    vis_type, visualization = _lens_visualization(chart, layer)
    return _saved_object(
        "lens",
        chart.id,
        {
            "title": chart.title,
            "description": chart.description,
            "visualizationType": vis_type,
            "state": {
                "datasourceStates": {
                    "formBased": {
                        "layers": {
                            layer: {"columns": columns, "columnOrder": list(columns), "incompleteColumns": {}}
                        }
                    }
                },
                "visualization": visualization,
                "query": {"query": "", "language": "kuery"},
                "filters": [],
                "internalReferences": [],
                "adHocDataViews": {},
            },
        },
        [{"type": "index-pattern", "id": DATA_VIEW_ID, "name": f"indexpattern-datasource-layer-{layer}"}],
    )


def heat_map(view: HeatMap) -> dict[str, Any]:
    lat, lon = view.center
    layers = [
        {
            "id": "basemap",
            "label": None,
            "type": "EMS_VECTOR_TILE",
            "sourceDescriptor": {"type": "EMS_TMS", "isAutoSelect": True, "lightModeDefault": "road_map"},
            "style": {"type": "EMS_VECTOR_TILE"},
            "alpha": 1,
            "minZoom": 0,
            "maxZoom": 24,
            "visible": True,
            "includeInFitToBounds": True,
        },
        {
            "id": "pickups",
            "label": view.title,
            "type": "HEATMAP",
            "sourceDescriptor": {
                "type": "ES_GEO_GRID",
                "id": "pickups-grid",
                "geoField": view.field,
                "requestType": "heatmap",
                "resolution": "FINE",
                "metrics": [{"type": "count"}],
                "applyGlobalQuery": True,
                "applyGlobalTime": True,
                "applyForceRefresh": True,
                "indexPatternRefName": "layer_1_source_index_pattern",
            },
            "style": {"type": "HEATMAP", "colorRampName": "theclassic"},
            "alpha": 0.75,
            "minZoom": 0,
            "maxZoom": 24,
            "visible": True,
            "includeInFitToBounds": True,
        },
    ]
    state = {
        "zoom": view.zoom,
        "center": {"lat": lat, "lon": lon},
        "timeFilters": {"from": TIME_FROM, "to": TIME_TO},
        "refreshConfig": {"isPaused": True, "interval": 0},
        "query": {"query": "", "language": "kuery"},
        "filters": [],
        "settings": {"autoFitToDataBounds": False, "initialLocation": "LAST_SAVED_LOCATION"},
    }
    return _saved_object(
        "map",
        view.id,
        {
            "title": view.title,
            "description": view.description,
            "layerListJSON": _dumps(layers),
            "mapStateJSON": _dumps(state),
            "uiStateJSON": _dumps({"isLayerTOCOpen": True, "openTOCDetails": []}),
        },
        [{"type": "index-pattern", "id": DATA_VIEW_ID, "name": "layer_1_source_index_pattern"}],
    )


def saved_search(search: SavedSearch) -> dict[str, Any]:
    source = {
        "query": {"query": search.where.kql(), "language": "kuery"},
        "filter": [],
        "indexRefName": "kibanaSavedObjectMeta.searchSourceJSON.index",
    }
    return _saved_object(
        "search",
        search.id,
        {
            "title": search.title,
            "description": search.description,
            "columns": list(search.columns),
            "sort": [[TIME_FIELD, "desc"]],
            "grid": {},
            "hideChart": False,
            "isTextBasedQuery": False,
            "kibanaSavedObjectMeta": {"searchSourceJSON": _dumps(source)},
        },
        [
            {
                "type": "index-pattern",
                "id": DATA_VIEW_ID,
                "name": "kibanaSavedObjectMeta.searchSourceJSON.index",
            }
        ],
    )


def _panel_type(panel: Chart | HeatMap | SavedSearch) -> str:
    if isinstance(panel, Chart):
        return "lens"
    return "map" if isinstance(panel, HeatMap) else "search"


def dashboard() -> dict[str, Any]:
    panels, references = [], []
    for number, panel in enumerate(PANELS, start=1):
        index = str(number)
        g = panel.grid
        panels.append(
            {
                "version": _PANEL_VERSION,
                "type": _panel_type(panel),
                "gridData": {"x": g.x, "y": g.y, "w": g.w, "h": g.h, "i": index},
                "panelIndex": index,
                "embeddableConfig": {"enhancements": {}},
                "panelRefName": f"panel_{index}",
            }
        )
        references.append({"type": _panel_type(panel), "id": panel.id, "name": f"{index}:panel_{index}"})
    return _saved_object(
        "dashboard",
        DASHBOARD_ID,
        {
            "title": "XRides rides",
            "description": "Rides over time, where they start, cancellations, booking channels, lead time.",
            "panelsJSON": _dumps(panels),
            "optionsJSON": _dumps(
                {
                    "useMargins": True,
                    "syncColors": False,
                    "syncCursor": True,
                    "syncTooltips": False,
                    "hidePanelTitles": False,
                }
            ),
            "timeRestore": True,
            "timeFrom": TIME_FROM,
            "timeTo": TIME_TO,
            "refreshInterval": {"pause": True, "value": 60000},
            "kibanaSavedObjectMeta": {
                "searchSourceJSON": _dumps({"query": {"query": "", "language": "kuery"}, "filter": []})
            },
            "version": 1,
        },
        references,
    )


def saved_objects() -> list[dict[str, Any]]:
    """Every object, each after the objects it refers to (the order Kibana exports them in)."""
    objects = [data_view()]
    for panel in PANELS:
        if isinstance(panel, Chart):
            objects.append(lens(panel))
        elif isinstance(panel, HeatMap):
            objects.append(heat_map(panel))
        else:
            objects.append(saved_search(panel))
    objects.append(dashboard())
    return objects


def ndjson() -> str:
    return "".join(json.dumps(o, sort_keys=True, separators=(",", ":")) + "\n" for o in saved_objects())


# --- the Elasticsearch requests Kibana sends ---------------------------------------------------


def index_pattern(prefix: str = "rides-") -> str:
    """The data view's pattern for another prefix (the tests load theirs under ``dashtest-rides-``)."""
    return DATA_VIEW_TITLE.replace("rides-", prefix, 1)


def _time_filter(start: str, end: str) -> dict[str, Any]:
    return {"range": {TIME_FIELD: {"gte": start, "lte": end, "format": "strict_date_optional_time"}}}


def _range_label(lo: float, hi: float) -> str:
    return f"{lo:g} to {hi:g}"


def _bucket_agg(bucket: Bucket, start: str, end: str) -> dict[str, Any]:
    if isinstance(bucket, DateHistogram):
        return {
            "date_histogram": {
                "field": bucket.field,
                "calendar_interval": bucket.interval,
                "time_zone": "UTC",
                "min_doc_count": 0,
                "extended_bounds": {"min": start, "max": end},
            }
        }
    if isinstance(bucket, Terms):
        order = {"_count": "desc"}  # ranked by a count column: the bucket's doc_count
        terms: dict[str, Any] = {"field": bucket.field, "size": bucket.size, "order": order}
        if bucket.shard_size() is not None:
            terms["shard_size"] = bucket.shard_size()
        return {"terms": terms}
    return {
        "range": {
            "field": bucket.field,
            "ranges": [{"from": lo, "to": hi, "key": _range_label(lo, hi)} for lo, hi in bucket.buckets()],
        }
    }


def _filtered_counts(chart: Chart) -> dict[str, Match]:
    """The filter sub-aggregations a chart's metrics need, by name."""
    out: dict[str, Match] = {}
    for metric in chart.metrics:
        if isinstance(metric, Ratio):
            out[f"{metric.id}X0"] = metric.where
        elif metric.where is not None:
            out[metric.id] = metric.where
    return out


def es_request(panel: Chart | HeatMap | SavedSearch, start: str, end: str) -> dict[str, Any]:
    """The search body Kibana sends for ``panel`` over the time range [start, end]."""
    query: dict[str, Any] = {"bool": {"filter": [_time_filter(start, end)]}}
    if isinstance(panel, SavedSearch):
        query["bool"]["filter"].append(panel.where.es())
        return {
            "query": query,
            "sort": [{TIME_FIELD: {"order": "desc"}}],
            "_source": list(panel.columns),
            "size": 100,
            "track_total_hits": True,
        }
    if isinstance(panel, HeatMap):
        aggs: dict[str, Any] = {
            "grid": {
                "geotile_grid": {"field": panel.field, "precision": panel.precision, "size": 65535},
                "aggs": {"centroid": {"geo_centroid": {"field": panel.field}}},
            }
        }
        return {"size": 0, "query": query, "aggs": aggs, "track_total_hits": True}
    inner: dict[str, Any] = {name: {"filter": match.es()} for name, match in _filtered_counts(panel).items()}
    for bucket in reversed(panel.buckets):
        agg = _bucket_agg(bucket, start, end)
        if inner:
            agg["aggs"] = inner
        inner = {bucket_id(bucket): agg}
    return {"size": 0, "query": query, "aggs": inner, "track_total_hits": True}


def rows(chart: Chart, response: dict[str, Any]) -> list[dict[str, Any]]:
    """The table Lens draws from a response: one row per innermost bucket, keyed by column id."""
    filtered = _filtered_counts(chart)

    def walk(level: int, node: dict[str, Any], row: dict[str, Any]) -> list[dict[str, Any]]:
        if level == len(chart.buckets):
            out = dict(row)
            total = int(node["doc_count"])
            for metric in chart.metrics:
                if isinstance(metric, Ratio):
                    part = int(node[f"{metric.id}X0"]["doc_count"])
                    out[metric.id] = part / total if total else None
                elif metric.id in filtered:
                    out[metric.id] = int(node[metric.id]["doc_count"])
                else:
                    out[metric.id] = total
            return [out]
        bucket = chart.buckets[level]
        found: list[dict[str, Any]] = []
        for item in node[bucket_id(bucket)]["buckets"]:
            key = item.get("key_as_string", item["key"]) if isinstance(bucket, DateHistogram) else item["key"]
            found += walk(level + 1, item, {**row, bucket_id(bucket): key})
        return found

    return walk(0, response["aggregations"], {})
