"""PNG previews of the Kibana charts (``make dashboards-preview``), for docs/dashboards.md.

Each chart runs the very request its Kibana panel sends (:func:`dashboards.kibana.es_request`)
and draws the rows Lens would draw (:func:`dashboards.kibana.rows`) with matplotlib's Agg backend,
so the pictures show what the dashboard shows, without a Kibana. By default the rides are
synthetic (``loadgen.synthetic``: XRides' 2013 mix over the last 25 days), loaded under names
of their own (``preview-rides-*``, ``dash_preview.cab_rides``, ``s3://<bucket>/preview/rides``);
``--rides 0 --prefix rides-`` draws the platform's own indices instead.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dashboards import kibana
from query_dsl.settings import QuerySettings
from xrides.search.client import connect

PREVIEW_PREFIX = "preview-rides-"
PREVIEW_TABLE = "dash_preview.cab_rides"
PREVIEW_ARCHIVE = "preview/rides"
DAYS = 25
PANELS = (
    kibana.RIDES_OVER_TIME,
    kibana.PICKUP_MAP,
    kibana.CANCELLATION_BY_AREA,
    kibana.BOOKING_CHANNEL,
    kibana.LEAD_TIME,
)
FILES = {
    kibana.RIDES_OVER_TIME.id: "kibana-rides-per-day.png",
    kibana.PICKUP_MAP.id: "kibana-pickups.png",
    kibana.CANCELLATION_BY_AREA.id: "kibana-cancellation-by-area.png",
    kibana.BOOKING_CHANNEL.id: "kibana-booking-channel.png",
    kibana.LEAD_TIME.id: "kibana-lead-time.png",
}


def time_range(now: datetime) -> tuple[str, str]:
    """The dashboard's default range, now-30d to now, as Kibana resolves it."""
    start = now - timedelta(days=30)
    return start.isoformat(timespec="milliseconds"), now.isoformat(timespec="milliseconds")


async def load_synthetic(settings: QuerySettings, rides: int, now: datetime) -> QuerySettings:
    from loadgen.synthetic import load_all, make_rides  # noqa: PLC0415 - only when loading

    target = replace(
        settings,
        es_rides_prefix=PREVIEW_PREFIX,
        query_pg_table=PREVIEW_TABLE,
        archive_prefix=PREVIEW_ARCHIVE,
    )
    await load_all(target, [make_rides(rides, now, DAYS)])
    return target


async def fetch(es_url: str, prefix: str, now: datetime) -> dict[str, dict[str, Any]]:
    """The response of every previewed panel's request, by panel id."""
    start, end = time_range(now)
    es = connect(es_url, request_timeout=120)
    try:
        out = {}
        for panel in PANELS:
            response = await es.search(
                index=kibana.index_pattern(prefix), body=kibana.es_request(panel, start, end)
            )
            out[panel.id] = dict(response.body)
        return out
    finally:
        await es.close()


def render(responses: dict[str, dict[str, Any]], out_dir: Path) -> list[Path]:
    import matplotlib  # noqa: PLC0415 - a dev dependency, only for previews

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for panel in PANELS:
        fig, ax = plt.subplots(figsize=(9, 4.5) if panel is not kibana.PICKUP_MAP else (7, 6), dpi=100)
        response = responses[panel.id]
        if isinstance(panel, kibana.HeatMap):
            _draw_map(ax, panel, response)
        elif panel is kibana.RIDES_OVER_TIME:
            _draw_rides_per_day(ax, response)
        elif panel is kibana.CANCELLATION_BY_AREA:
            _draw_cancellation(ax, response)
        elif panel is kibana.BOOKING_CHANNEL:
            _draw_channels(ax, response)
        else:
            _draw_lead_time(ax, response)
        ax.set_title(panel.title)
        fig.tight_layout()
        path = out_dir / FILES[panel.id]
        # Fixed metadata: the same data gives the same bytes (no creation date in the PNG).
        fig.savefig(path, metadata={"Software": None})
        plt.close(fig)
        written.append(path)
    return written


def _draw_rides_per_day(ax: Any, response: dict[str, Any]) -> None:
    chart = kibana.RIDES_OVER_TIME
    series: dict[int, dict[str, int]] = defaultdict(dict)
    days: set[str] = set()
    for row in kibana.rows(chart, response):
        day = str(row[kibana.TIME_FIELD])[:10]
        series[int(row["travel_type_id"])][day] = int(row["rides"])
        days.add(day)
    ordered = sorted(days)
    bottom = [0] * len(ordered)
    for travel_type in sorted(series):
        values = [series[travel_type].get(day, 0) for day in ordered]
        ax.bar(
            range(len(ordered)),
            values,
            bottom=bottom,
            label=kibana.TRAVEL_TYPES.get(travel_type, travel_type),
        )
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    step = max(1, len(ordered) // 8)
    ax.set_xticks(range(0, len(ordered), step), [ordered[i][5:] for i in range(0, len(ordered), step)])
    ax.set_xlabel("Pickup day (UTC)")
    ax.set_ylabel("Rides")
    ax.legend(title="Travel type")


def _draw_map(ax: Any, panel: kibana.HeatMap, response: dict[str, Any]) -> None:
    buckets = response["aggregations"]["grid"]["buckets"]
    lats = [b["centroid"]["location"]["lat"] for b in buckets]
    lons = [b["centroid"]["location"]["lon"] for b in buckets]
    counts = [b["doc_count"] for b in buckets]
    points = ax.scatter(lons, lats, c=counts, s=40, marker="s", cmap="inferno_r", alpha=0.85)
    ax.figure.colorbar(points, ax=ax, label=f"Pickups per tile (zoom {panel.precision})")
    ax.set_xlabel("Longitude")
    ax.set_ylabel("Latitude")
    ax.set_aspect("equal", adjustable="datalim")


def _draw_cancellation(ax: Any, response: dict[str, Any]) -> None:
    table = sorted(kibana.rows(kibana.CANCELLATION_BY_AREA, response), key=lambda r: r["cancellation_rate"])
    labels = [f"area {r['from_area_id']} ({r['rides']} rides)" for r in table]
    ax.barh(range(len(table)), [100 * r["cancellation_rate"] for r in table], color="#e7664c")
    ax.set_yticks(range(len(table)), labels)
    ax.set_xlabel("Cancelled rides (%)")


def _draw_channels(ax: Any, response: dict[str, Any]) -> None:
    table = kibana.rows(kibana.BOOKING_CHANNEL, response)
    ax.pie(
        [r["rides"] for r in table],
        labels=[r["booking_channel"] for r in table],
        autopct="%1.1f%%",
        wedgeprops={"width": 0.45},
        startangle=90,
    )
    ax.set_aspect("equal")


def _draw_lead_time(ax: Any, response: dict[str, Any]) -> None:
    table = kibana.rows(kibana.LEAD_TIME, response)
    ax.bar(range(len(table)), [r["rides"] for r in table], color="#6092c0")
    ax.set_xticks(range(len(table)), [str(r["lead_time_min"]) for r in table], rotation=20)
    ax.set_xlabel("Minutes from booking to pickup")
    ax.set_ylabel("Rides")


async def preview(settings: QuerySettings, out_dir: Path, rides: int, prefix: str) -> list[Path]:
    now = datetime.now(UTC).replace(microsecond=0)
    if rides > 0:
        settings = await load_synthetic(settings, rides, now)
        prefix = settings.es_rides_prefix
    return render(await fetch(settings.es_url, prefix, now), out_dir)
