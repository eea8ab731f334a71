"""``python -m flink_jobs job|indexer``: the PyFlink job, or the Elasticsearch indexer."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from flink_jobs.settings import StreamSettings
from xrides.health import check_health
from xrides.logs import setup_logging
from xrides.settings import describe, load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flink_jobs", description=__doc__)
    parser.add_argument("command", choices=("job", "indexer"))
    parser.add_argument("--check", action="store_true", help="exit 0 if the running process is healthy")
    args = parser.parse_args(argv)
    settings = load_settings(StreamSettings)
    if args.check:
        port = settings.job_metrics_port if args.command == "job" else settings.indexer_metrics_port
        return check_health(settings.metrics_host, port)
    if args.command == "job":
        from flink_jobs.rides_job import run  # noqa: PLC0415 - PyFlink is heavy; only the job needs it

        setup_logging("xrides-flink-rides", settings.log_level)
        run(settings)
        return 0
    from flink_jobs.indexer import Indexer  # noqa: PLC0415

    setup_logging("xrides-es-indexer", settings.log_level)
    logging.getLogger("flink_jobs").info("starting", extra={"settings": describe(settings)})
    indexer = Indexer(settings)
    server = indexer.serve_health()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: indexer.stopping.set())
    try:
        indexer.run()
    finally:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
