"""``python -m xrides_client send FILE``: send a CSV or NDJSON file of rides and report their fate.

Exit status: 0 when every ride reached a final state on the platform (stored, or refused with the
platform's reasons; accepted, with --no-track); 1 when any ride failed, had no final state within
--timeout, or a line of the file could not be read; 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TextIO

from xrides_client.client import Client
from xrides_client.csvfile import Row, Unreadable, read_csv
from xrides_client.errors import ClientError, FatalError
from xrides_client.logs import log_json_to
from xrides_client.ndjsonfile import read_ndjson
from xrides_client.outcomes import Outcome
from xrides_client.stats import Stats

CHUNK = 500  # rides per spool commit while reading
FORMATS = {".csv": "csv", ".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "ndjson"}


class UsageError(Exception):
    pass


class Summary:
    """Counts outcomes as they arrive (on the client's threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.kinds: Counter[str] = Counter()
        self.refused_reasons: Counter[str] = Counter()
        self.failed_reasons: Counter[str] = Counter()
        self.superseded = 0
        self.delays: list[float] = []

    def add(self, outcome: Outcome) -> None:
        with self._lock:
            self.kinds[outcome.kind] += 1
            self.superseded += outcome.superseded
            if outcome.kind == "refused":
                self.refused_reasons[outcome.reason or outcome.error_code or "refused"] += 1
            elif outcome.kind == "failed":
                self.failed_reasons[outcome.reason or "failed"] += 1
            if outcome.tracked_after_s is not None:
                self.delays.append(outcome.tracked_after_s)

    @property
    def finished(self) -> int:
        with self._lock:
            return sum(self.kinds.values())


class Progress:
    """One line on stderr, redrawn at most ten times a second; silent when stderr is not a terminal."""

    def __init__(self, stream: TextIO, enabled: bool) -> None:
        self._stream = stream
        self.enabled = enabled
        self._last = 0.0
        self._width = 0

    def show(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._last < 0.1):
            return
        self._last = now
        width = max(self._width, len(text))
        self._stream.write("\r" + text.ljust(width))
        self._stream.flush()
        self._width = width

    def clear(self) -> None:
        if self.enabled and self._width:
            self._stream.write("\r" + " " * self._width + "\r")
            self._stream.flush()
            self._width = 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m xrides_client", description="XRides API client")
    commands = parser.add_subparsers(dest="command", required=True)
    send = commands.add_parser("send", help="send the rides of a CSV or NDJSON file")
    send.add_argument("file", help="a .csv or .ndjson/.jsonl file; - reads stdin (give --format)")
    send.add_argument("--format", choices=["csv", "ndjson"], help="default: from the file's extension")
    send.add_argument("--url", help="the API's base URL (default: $XRIDES_API_URL)")
    send.add_argument("--api-key", help="the API key (default: $XRIDES_API_KEY, which keeps it out of ps)")
    send.add_argument(
        "--spool",
        help="spool file; rides an earlier run left in it are sent first "
        "(default: a temporary file, kept and named in the summary only if rides remain in it)",
    )
    send.add_argument("--batch-size", type=int, default=500, help="rides per request, 1..1000 (500)")
    send.add_argument("--single", action="store_true", help="one POST /v1/rides per ride instead of batches")
    send.add_argument("--no-track", action="store_true", help="stop at acceptance: do not wait for storage")
    send.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds to wait for final states once the file is read (600)",
    )
    send.add_argument("--max-attempts", type=int, default=8, help="attempts per request (8)")
    send.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=JSON",
        help="a value for a field the file has no column for, e.g. --set driver_id=0",
    )
    send.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    send.add_argument("--quiet", action="store_true", help="no progress line")
    send.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    return parser


def _defaults(pairs: Sequence[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--set wants FIELD=JSON, got {pair!r}")
        try:
            out[name] = json.loads(text)
        except ValueError:
            out[name] = text
    return out


def _format(args: argparse.Namespace) -> str:
    if args.format:
        return str(args.format)
    found = FORMATS.get(Path(args.file).suffix.lower())
    if found is None:
        raise UsageError(f"cannot tell the format of {args.file!r}: give --format csv or --format ndjson")
    return found


def _top(counter: Counter[str], n: int = 5) -> list[dict[str, Any]]:
    return [{"reason": reason, "count": count} for reason, count in counter.most_common(n)]


def _quantile(values: list[float], q: float) -> float | None:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3) if ordered else None


def _rows(stream: TextIO, fmt: str, defaults: Mapping[str, object]) -> Iterator[Row | Unreadable]:
    return read_csv(stream, defaults) if fmt == "csv" else read_ndjson(stream, defaults)


class Run:
    """One send of a file: what was read and sent, what came back, and the progress line."""

    def __init__(self, args: argparse.Namespace, stderr: TextIO) -> None:
        self.args = args
        self.summary = Summary()
        self.progress = Progress(stderr, enabled=not args.quiet and stderr.isatty())
        self.started = time.monotonic()
        self.sent = 0
        self.recovered = 0
        self.resumed_at = 0  # rides of the file an earlier run had already spooled
        self.unreadable: list[Unreadable] = []
        self.error: str | None = None
        self.interrupted = False

    def line(self, stage: str) -> str:
        done, rate = self.summary.finished, self.sent / max(1e-9, time.monotonic() - self.started)
        kinds = self.summary.kinds
        return (
            f"{stage}  sent {self.sent:,}  final {done:,}  stored {kinds['stored']:,}  "
            f"refused {kinds['refused']:,}  failed {kinds['failed']:,}  {rate:,.0f} rides/s"
        )

    def execute(self, client: Client, rows: Iterator[Row | Unreadable], stream: TextIO, size: int) -> Stats:
        self.recovered = self.sent = len(client.recovered)
        try:
            self._feed(client, rows, stream, size)
            deadline = time.monotonic() + self.args.timeout
            while not client.flush(timeout=min(0.2, max(0.0, deadline - time.monotonic()))):
                self.progress.show(self.line("waiting"))
                if time.monotonic() >= deadline:
                    break
        except FatalError as exc:
            self.error = exc.reason
        except KeyboardInterrupt:
            self.interrupted = True
            self.error = "interrupted"
        finally:
            self.progress.clear()
            stats = client.stats()
            client.close(flush=False)
        return stats

    def _feed(self, client: Client, rows: Iterator[Row | Unreadable], stream: TextIO, size: int) -> None:
        """Spool the file's rides chunk by chunk, each chunk committed with the file's position in
        the spool: a send killed mid-file and started again on the same spool skips the rides it
        already spooled (they are resent from the spool if they were not acknowledged), so nothing
        is sent twice and nothing is skipped."""
        source = os.path.abspath(self.args.file) if self.args.file != "-" else None
        skip = client.source_position(source) if source else 0
        self.resumed_at = skip
        position = 0
        chunk: list[Row] = []
        for row in rows:
            if isinstance(row, Unreadable):
                self.unreadable.append(row)
                continue
            position += 1
            if position <= skip:
                continue
            chunk.append(row)
            if len(chunk) >= CHUNK:
                client.send_many(chunk, (source, position) if source else None)
                self.sent += len(chunk)
                chunk = []
                read = f"read {100 * stream.buffer.tell() / size:5.1f}%" if size else "reading"
                self.progress.show(self.line(read))
        if chunk:
            client.send_many(chunk, (source, position) if source else None)
            self.sent += len(chunk)

    def report(self, stats: Stats, spool: str | None) -> dict[str, Any]:
        duration = time.monotonic() - self.started
        summary, kinds = self.summary, self.summary.kinds
        final = kinds["stored"] + kinds["refused"] + (kinds["accepted"] if self.args.no_track else 0)
        return {
            "sent": self.sent,
            "stored": kinds["stored"],
            "refused": kinds["refused"],
            "failed": kinds["failed"],
            "accepted": kinds["accepted"],
            "unfinished": self.sent - sum(kinds.values()),
            "superseded": summary.superseded,
            "unreadable": len(self.unreadable),
            "recovered": self.recovered,
            "resumed_after": self.resumed_at,
            "refused_reasons": _top(summary.refused_reasons),
            "failed_reasons": _top(summary.failed_reasons),
            "unreadable_lines": [{"line": u.line, "reason": u.reason} for u in self.unreadable[:5]],
            "duration_s": round(duration, 3),
            "rides_per_s": round(self.sent / duration, 1) if duration > 0 else None,
            "tracking_delay_p50_s": _quantile(summary.delays, 0.5),
            "tracking_delay_p95_s": _quantile(summary.delays, 0.95),
            "retries": stats.retries,
            "spool": spool,
            "spool_rides": stats.spool_depth,
            "error": self.error,
            "ok": final == self.sent and not self.unreadable and self.error is None,
        }


def _credentials(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[str, str]:
    url = args.url or environ.get("XRIDES_API_URL")
    api_key = args.api_key or environ.get("XRIDES_API_KEY")
    if not url or not api_key:
        raise UsageError("give the API's URL and key: --url/--api-key or XRIDES_API_URL/XRIDES_API_KEY")
    return url, api_key


def _open_input(name: str, stack: ExitStack) -> tuple[TextIO, int]:
    """The file as text (CRLF left to the CSV reader, a byte-order mark dropped) and its size."""
    if name == "-":
        return sys.stdin, 0
    try:
        stream = stack.enter_context(Path(name).open(newline="", encoding="utf-8-sig"))  # noqa: SIM115 (closed by the stack)
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror or exc}") from exc
    return stream, os.fstat(stream.fileno()).st_size


def send_file(args: argparse.Namespace, environ: Mapping[str, str], stdout: TextIO, stderr: TextIO) -> int:
    url, api_key = _credentials(args, environ)
    fmt = _format(args)
    defaults = _defaults(args.set)
    run = Run(args, stderr)
    with ExitStack() as stack:
        stream, size = _open_input(args.file, stack)
        temporary = None if args.spool else tempfile.mkdtemp(prefix="xrides-spool-")
        spool = args.spool or os.path.join(temporary or "", "spool.sqlite3")
        try:
            client = Client(
                url,
                api_key,
                spool=spool,
                on_outcome=run.summary.add,
                batch=not args.single,
                batch_size=args.batch_size,
                track=not args.no_track,
                max_attempts=args.max_attempts,
            )
        except (ClientError, ValueError) as exc:
            if temporary:
                shutil.rmtree(temporary, ignore_errors=True)
            raise UsageError(str(exc)) from exc
        stats = run.execute(client, _rows(stream, fmt, defaults), stream, size)
        kept = stats.spool_depth > 0
        if temporary and not kept:
            shutil.rmtree(temporary, ignore_errors=True)
    report = run.report(stats, spool if kept else None)
    stdout.write(json.dumps(report) + "\n" if args.json else _text(report))
    if run.interrupted:
        return 130
    return 0 if report["ok"] else 1


def _text(report: Mapping[str, Any]) -> str:
    rate = report["rides_per_s"] or 0
    lines = [f"sent {report['sent']:,} rides in {report['duration_s']:.1f} s ({rate:,} rides/s)"]
    stored = f"  stored     {report['stored']:>9,}"
    if report["superseded"]:
        stored += f"  ({report['superseded']:,} superseded: a newer version was already stored)"
    lines.append(stored)
    if report["tracking_delay_p50_s"] is not None:
        lines[-1] += f"  accepted -> stored p50 {report['tracking_delay_p50_s']} s"
    for key in ("refused", "failed"):
        lines.append(f"  {key:<10} {report[key]:>9,}")
        lines += [f"      {r['count']:>7,}  {r['reason']}" for r in report[f"{key}_reasons"]]
    for key in ("accepted", "unfinished", "unreadable"):
        if report[key]:
            lines.append(f"  {key:<10} {report[key]:>9,}")
    lines += [f"      line {u['line']}: {u['reason']}" for u in report["unreadable_lines"]]
    if report["spool"]:
        lines.append(
            f"{report['spool_rides']:,} rides remain in {report['spool']}; send again with --spool to resume"
        )
    if report["error"]:
        lines.append(f"stopped: {report['error']}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = log_json_to(sys.stderr, getattr(logging, args.log_level.upper()))
    try:
        return send_file(args, os.environ if environ is None else environ, sys.stdout, sys.stderr)
    except UsageError as exc:
        sys.stderr.write(f"xrides_client: {exc}\n")
        return 2
    finally:
        logging.getLogger("xrides_client").removeHandler(handler)
