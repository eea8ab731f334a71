"""``python -m flink_jobs``: the PyFlink enrichment job.

``job`` runs it here (Flink's mini cluster, or attached to ``XRIDES_FLINK_REMOTE``); ``submit`` keeps
it running on a session cluster (flink_jobs/submit.py); ``graph`` is what ``flink run -py`` executes
for ``submit``. ``--check`` asks the running process's health.
"""

from __future__ import annotations

import argparse
import sys

from flink_jobs.settings import StreamSettings
from xrides.health import check_health
from xrides.logs import setup_logging
from xrides.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flink_jobs", description=__doc__)
    parser.add_argument("command", nargs="?", default="job", choices=("job", "submit", "graph"))
    parser.add_argument("--check", action="store_true", help="exit 0 if the running process is healthy")
    args = parser.parse_args(argv)
    settings = load_settings(StreamSettings)
    if args.check:
        return check_health(settings.metrics_host, settings.job_metrics_port)
    setup_logging("xrides-flink-rides", settings.log_level)
    if args.command == "submit":
        from flink_jobs.submit import supervise  # noqa: PLC0415

        supervise(settings)
        return 0
    from flink_jobs.rides_job import run, submit_graph  # noqa: PLC0415 - PyFlink is heavy; only the job needs it

    (submit_graph if args.command == "graph" else run)(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
