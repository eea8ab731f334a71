"""Results of a ``make bench`` run: JSON, the ``BENCHMARKS.md`` table and two PNG plots."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import orjson

HEADLINE = (
    ("max_sustainable_single_rps", "Max sustainable single-ride POST rate (rides/s)"),
    ("single_p99_ms", "p99 ack latency at that rate (ms)"),
    (
        "max_sustainable_single_rps_ack_path_only",
        "... with the consumers paused: API + Kafka alone (rides/s)",
    ),
    ("single_p99_ms_ack_path_only", "p99 ack latency at that rate (ms)"),
    (
        "max_sustainable_single_rps_durable_path",
        "... with the stream side paused: API + Kafka + persister + PostgreSQL (rides/s)",
    ),
    ("stored_p99_ms_durable_path", "POST -> stored in PostgreSQL p99 at that rate (ms)"),
    ("batch_rides_per_s", "Batch endpoint (rides/s acknowledged)"),
    ("client_rides_per_s", "... through the client library, same API, same run (rides/s acknowledged)"),
    ("e2e_postgres_p99_ms", "POST -> stored in PostgreSQL, p99 (ms)"),
    ("e2e_elasticsearch_p99_ms", "POST -> searchable in Elasticsearch, p99 (ms)"),
    ("kafka_producer_limit_rps", "Kafka's own producer tool, acks=all (records/s)"),
    ("postgres_copy_limit_rps", "PostgreSQL COPY (rows/s)"),
    ("elasticsearch_bulk_limit_dps", "Elasticsearch bulk (docs/s)"),
)


def headline(results: dict[str, Any], e2e_scenario: str) -> dict[str, Any]:
    """The top-level numbers ``latest.json`` promises, and the ratios to the parts' limits."""
    sweep = results.get("max_sustainable") or {}
    batch = results.get("batch") or {}
    limits = results.get("limits") or {}
    scenario = next((s for s in results.get("scenarios", ()) if s["name"] == e2e_scenario), None)
    top: dict[str, Any] = {
        "max_sustainable_single_rps": sweep.get("max_sustainable_rps"),
        "single_p99_ms": sweep.get("p99_ms_at_max"),
        "batch_rides_per_s": batch.get("batch_rides_per_s"),
        "client_rides_per_s": (batch.get("client") or {}).get("rides_per_s"),
        "e2e_postgres_p99_ms": scenario["e2e_postgres_ms"].get("p99") if scenario else None,
        "e2e_elasticsearch_p99_ms": (
            scenario["e2e_elasticsearch_ms"]["latency_ms"].get("p99")
            if scenario and scenario.get("e2e_elasticsearch_ms")
            else None
        ),
        "e2e_measured_in": e2e_scenario,
        "kafka_producer_limit_rps": (limits.get("kafka") or {}).get("records_per_s"),
        "postgres_copy_limit_rps": (limits.get("postgres") or {}).get("rows_per_s"),
        "elasticsearch_bulk_limit_dps": (limits.get("elasticsearch") or {}).get("docs_per_s"),
    }
    ack_path = results.get("max_sustainable_ack_path") or {}
    top["max_sustainable_single_rps_ack_path_only"] = ack_path.get("max_sustainable_rps")
    top["single_p99_ms_ack_path_only"] = ack_path.get("p99_ms_at_max")
    durable = results.get("max_sustainable_durable_path") or {}
    top["max_sustainable_single_rps_durable_path"] = durable.get("max_sustainable_rps")
    top["stored_p99_ms_durable_path"] = durable.get("stored_p99_ms_at_max")
    top["ratios"] = {
        "single_to_kafka_limit": _ratio(top["max_sustainable_single_rps"], top["kafka_producer_limit_rps"]),
        "batch_to_kafka_limit": _ratio(top["batch_rides_per_s"], top["kafka_producer_limit_rps"]),
        "client_to_batch": _ratio(top["client_rides_per_s"], top["batch_rides_per_s"]),
    }
    return top


def _ratio(a: float | None, b: float | None) -> float | None:
    if not a or not b:
        return None
    return round(a / b, 3)


def write(results: dict[str, Any], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    stamp = results["started_at_utc"].replace(":", "").replace("-", "")
    path = directory / f"{stamp}.json"
    text = orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    path.write_bytes(text + b"\n")
    (directory / "latest.json").write_bytes(text + b"\n")
    return path


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _ratio_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _row(*cells: Any) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _triple(figures: dict[str, Any], *keys: str) -> str:
    return " / ".join(_fmt(figures.get(k)) for k in keys)


def _sweep_table(sweep: dict[str, Any], title: str) -> list[str]:
    if not sweep.get("steps"):
        return []
    lines = [
        "",
        f"## {title} ({sweep['criterion']})",
        "",
        _row(
            "Offered/s", "Achieved/s", "Ack p50 / p99 / p99.9 ms", "Stored p99 ms", "Unexpected", "API CPU %"
        ),
        _row(*["---"] * 6),
    ]
    for step in sweep["steps"]:
        lines.append(
            _row(
                _fmt(step["offered_rps"]),
                _fmt(step["achieved_rps"]),
                _triple(step["ack_latency_ms"], "p50", "p99", "p99.9"),
                _fmt(step["e2e_postgres_ms"].get("p99")),
                step["unexpected_answers"],
                _fmt(step["cpu_percent"].get("api")),
            )
        )
    return lines


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m benchmarks.harness`); the full figures are in",
        "`benchmarks/results/latest.json`. Measured on the machine in `machine`, with the whole local",
        "stack running on it (the load generator too), at commit "
        f"`{results['git_commit']}` on {results['started_at_utc']}.",
        *(
            [f"Parts merged from earlier runs (`--merge`), measured at: `{results['part_commits']}`."]
            if results.get("part_commits")
            else []
        ),
        "",
        "| Figure | Value |",
        "|---|---|",
    ]
    lines += [f"| {label} | {_fmt(results.get(key))} |" for key, label in HEADLINE]
    ratios = results.get("ratios", {})
    lines += [
        f"| Single-ride rate / Kafka's limit | {_ratio_text(ratios.get('single_to_kafka_limit'))} |",
        f"| Batch rate / Kafka's limit | {_ratio_text(ratios.get('batch_to_kafka_limit'))} |",
        f"| Client rate / raw batch rate | {_ratio_text(ratios.get('client_to_batch'))} |",
        "",
        f"End-to-end figures are from the `{results.get('e2e_measured_in')}` scenario.",
        "",
        "## Scenarios",
        "",
        "| Scenario | Offered/s | Accepted | Unexpected | Ack p50 / p99 / p99.9 ms | Stored p50 / p99 ms |"
        " Searchable p50 / p99 ms | Peak lag (persister / flink / indexer) | Caught up after (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in results.get("scenarios", ()):
        ack, pg = s["ack_latency_ms"], s["e2e_postgres_ms"]
        es = (s.get("e2e_elasticsearch_ms") or {}).get("latency_ms", {})
        lag = s["consumer_lag_peak"]
        lines.append(
            _row(
                s["name"],
                _fmt(s["offered_rps"]),
                _fmt(s["rides_accepted"]),
                s["unexpected_answers"],
                _triple(ack, "p50", "p99", "p99.9"),
                _triple(pg, "p50", "p99"),
                _triple(es, "p50", "p99"),
                " / ".join(f"{lag.get(n, 0):,}" for n in ("persister", "flink-job", "es-indexer")),
                _fmt(s["catch_up_seconds_after_load"]),
            )
        )
    for key, title in (
        ("max_sustainable", "Single-ride rate sweep"),
        ("max_sustainable_ack_path", "Ack path alone"),
        ("max_sustainable_durable_path", "Path to PostgreSQL alone"),
    ):
        lines += _sweep_table(results.get(key) or {}, title)
    batch = results.get("batch") or {}
    if batch.get("steps"):
        lines += [
            "",
            f"## Batch endpoint ({batch['criterion']})",
            "",
            _row("Batches/s offered", "Rides/s acknowledged", "Ack p50 / p99 ms", "Passed"),
            _row(*["---"] * 4),
        ]
        for step in batch["steps"]:
            lines.append(
                _row(
                    _fmt(step["offered_rps"]),
                    _fmt(step["rides_per_s"]),
                    _triple(step["ack_latency_ms"], "p50", "p99"),
                    "yes" if step["passed"] else "no",
                )
            )
        if client := batch.get("client"):
            lines += [
                "",
                f"The client library (`python -m xrides_client send --no-track`, batches of"
                f" {client['batch_size']}) sent {_fmt(client['rides'])} rides to the same API in this run:"
                f" {_fmt(client['rides_per_s'])} rides/s by its own clock, {_fmt(client['wall_rides_per_s'])}"
                f" rides/s for the whole command, {client['retries']} retries.",
            ]
    lines += ["", "## CPU and memory per process", ""]
    for s in results.get("scenarios", ()):
        lines += [f"**{s['name']}** (CPU % of one core, mean / peak; peak RSS MB)", "",
                  "| Process | CPU mean | CPU peak | RSS MB |", "|---|---|---|---|"]  # fmt: skip
        for name, f in sorted(s["processes"].items()):
            lines.append(f"| {name} | {f['cpu_percent_mean']} | {f['cpu_percent_max']} | {f['rss_mb_max']} |")
        lines.append("")
    limits = results.get("limits") or {}
    lines += ["## Limits of the parts (same run, same machine)", ""]
    for name, figures in limits.items():
        lines.append(f"- **{name}**: `{orjson.dumps(figures).decode()}`")
    lines += ["", "Plots: `docs/img/bench-latency-throughput.png`, `docs/img/bench-burst-timeline.png`.", ""]
    return "\n".join(lines)


def plots(results: dict[str, Any], directory: Path, burst: str) -> list[Path]:
    import matplotlib  # noqa: PLC0415 - only the report needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    steps = (results.get("max_sustainable") or {}).get("steps") or []
    if steps:
        fig, ax = plt.subplots(figsize=(7, 4))
        x = [s["achieved_rps"] for s in steps]
        for key, style in (("p50", "o-"), ("p99", "s-"), ("p99.9", "^-")):
            ax.plot(x, [s["ack_latency_ms"][key] for s in steps], style, label=f"ack {key}")
        ax.plot(x, [s["e2e_postgres_ms"].get("p99") for s in steps], "d--", label="POST->stored p99")
        ax.axhline(25, color="grey", linestyle=":", label="25 ms target")
        ax.set_yscale("log")
        ax.set_xlabel("single-ride POST/s (achieved)")
        ax.set_ylabel("latency (ms)")
        ax.set_title("Latency versus throughput (whole stack on this machine)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = directory / "bench-latency-throughput.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    scenario = next((s for s in results.get("scenarios", ()) if s["name"] == burst), None)
    if scenario:
        ack, lag = scenario["timeline"]["ack"], scenario["timeline"]["lag"]
        fig, (top, mid, low) = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
        top.plot([p["t"] for p in ack], [p["sent"] for p in ack], color="tab:blue")
        top.set_ylabel("requests/s")
        mid.plot([p["t"] for p in ack], [p["p99_ms"] for p in ack], color="tab:red", label="p99")
        mid.plot([p["t"] for p in ack], [p["p50_ms"] for p in ack], color="tab:orange", label="p50")
        mid.set_yscale("log")
        mid.set_ylabel("ack latency (ms)")
        mid.legend(fontsize=8)
        for name in ("persister", "flink-job", "es-indexer"):
            low.plot([p["t"] for p in lag], [p.get(name, 0) for p in lag], label=name)
        low.set_ylabel("consumer lag (messages)")
        low.set_xlabel("seconds since the load started")
        low.legend(fontsize=8)
        top.set_title(f"Burst timeline: {scenario['description']}")
        fig.tight_layout()
        path = directory / "bench-burst-timeline.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
