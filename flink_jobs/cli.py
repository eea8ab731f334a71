"""``python -m flink_jobs``: the PyFlink enrichment job (``--check``: ask the running one's health)."""

from __future__ import annotations

import argparse
import sys

from flink_jobs.settings import StreamSettings
from xrides.health import check_health
from xrides.logs import setup_logging
from xrides.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flink_jobs", description=__doc__)
    parser.add_argument("command", nargs="?", default="job", choices=("job",))
    parser.add_argument("--check", action="store_true", help="exit 0 if the running process is healthy")
    args = parser.parse_args(argv)
    settings = load_settings(StreamSettings)
    if args.check:
        return check_health(settings.metrics_host, settings.job_metrics_port)
    from flink_jobs.rides_job import run  # noqa: PLC0415 - PyFlink is heavy; only the job needs it

    setup_logging("xrides-flink-rides", settings.log_level)
    run(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
