"""``python -m dashboards``: generate the dashboard files, import them into Kibana, preview them.

generate [--check]          write dashboards/kibana/xrides.ndjson and dashboards/grafana/xrides.json
                            from dashboards/kibana.py and dashboards/grafana.py (--check: fail if stale)
kibana-import [--url ...]   POST the NDJSON to Kibana's saved-objects import (overwrite)
preview [--out docs/img]    render the Kibana charts to PNG from Elasticsearch (matplotlib)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from dashboards import grafana, kibana
from dashboards.settings import DashboardSettings
from xrides.errors import XRidesError
from xrides.logs import setup_logging
from xrides.settings import load_settings

log = logging.getLogger("dashboards")

HERE = Path(__file__).resolve().parent
KIBANA_FILE = HERE / "kibana" / "xrides.ndjson"
GRAFANA_FILE = HERE / "grafana" / "xrides.json"


def generated() -> dict[Path, str]:
    """The text each generated file must hold."""
    return {
        KIBANA_FILE: kibana.ndjson(),
        GRAFANA_FILE: json.dumps(grafana.dashboard(), indent=2, ensure_ascii=False) + "\n",
    }


def _generate(check: bool) -> int:
    stale = []
    for path, text in generated().items():
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current == text:
            continue
        stale.append(path)
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    for path in stale:
        print(f"{'stale' if check else 'wrote'} {path.relative_to(HERE.parent)}")
    return 1 if check and stale else 0


def _kibana_import(args: argparse.Namespace) -> int:
    from dashboards.kibana_import import import_saved_objects  # noqa: PLC0415 - aiohttp only here

    settings = load_settings(DashboardSettings)
    result = asyncio.run(
        import_saved_objects(
            args.url or settings.kibana_url,
            Path(args.file).read_bytes(),
            user=args.user if args.user is not None else settings.kibana_user,
            password=args.password if args.password is not None else settings.kibana_password,
            space=args.space if args.space is not None else settings.kibana_space,
            timeout_s=settings.kibana_timeout_s,
            attempts=settings.kibana_attempts,
        )
    )
    for item in result.objects:
        print(f"imported {item.get('type')} {item.get('id')}: {item.get('meta', {}).get('title', '')}")
    print(f"{result.success_count} objects imported into {args.url or settings.kibana_url}")
    return 0


def _preview(args: argparse.Namespace) -> int:
    from dashboards.preview import preview  # noqa: PLC0415 - matplotlib and elasticsearch only here
    from query_dsl.settings import QuerySettings  # noqa: PLC0415

    settings = load_settings(QuerySettings)
    for path in asyncio.run(preview(settings, Path(args.out), args.rides, args.prefix)):
        print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="write the Kibana NDJSON and the Grafana JSON")
    gen.add_argument("--check", action="store_true", help="exit 1 if a committed file differs")
    imp = commands.add_parser("kibana-import", help="import the saved objects into Kibana")
    imp.add_argument("--url", help="Kibana's base URL (default XRIDES_KIBANA_URL, http://127.0.0.1:5601)")
    imp.add_argument("--user", help="basic-auth user (default XRIDES_KIBANA_USER; none when empty)")
    imp.add_argument("--password", help="basic-auth password (default XRIDES_KIBANA_PASSWORD)")
    imp.add_argument("--space", help="Kibana space id (default: the default space)")
    imp.add_argument("--file", default=str(KIBANA_FILE), help="NDJSON to import")
    pre = commands.add_parser("preview", help="render the Kibana charts to PNG")
    pre.add_argument("--out", default="docs/img", help="directory for the PNG files")
    pre.add_argument("--rides", type=int, default=20_000, help="synthetic rides to load first (0: none)")
    pre.add_argument("--prefix", default="rides-", help="index prefix to draw when --rides is 0")
    args = parser.parse_args(argv)
    setup_logging("xrides-dashboards", "INFO")
    try:
        if args.command == "generate":
            return _generate(args.check)
        if args.command == "kibana-import":
            return _kibana_import(args)
        return _preview(args)
    except XRidesError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
