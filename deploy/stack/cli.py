"""Command-line interface: ``python3 -m deploy.stack up|down|status|env|logs NAME``.

Expected failures are ``StackError``s and are printed as one clear line (plus
any log tail they carry) with exit code 1, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from deploy.stack import commands
from deploy.stack.errors import StackError
from deploy.stack.layout import Context


def _names(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (separate so tests and docs can inspect it)."""
    parser = argparse.ArgumentParser(
        prog="python3 -m deploy.stack", description="XRides local stack launcher"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="fetch what is missing and start everything that is not healthy")
    up.add_argument("--only", type=_names, default=None, help="comma-separated parts, e.g. postgres,kafka")
    down = sub.add_parser("down", help="stop platform processes and services (data is kept)")
    down.add_argument("--purge", action="store_true", help="also delete data directories (not downloads)")
    down.add_argument("--only", type=_names, default=None, help="comma-separated parts to stop")
    sub.add_parser("status", help="one line per part; exit 0 only if all are healthy")
    sub.add_parser("env", help="print the .stack/env file")
    logs = sub.add_parser("logs", help="print the end of a part's log")
    logs.add_argument("name")
    logs.add_argument("-n", "--lines", type=int, default=50)
    logs.add_argument("-f", "--follow", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the process exit code."""
    args = build_parser().parse_args(argv)
    ctx = Context.from_environ()
    try:
        if args.command == "up":
            commands.up(ctx, args.only)
        elif args.command == "down":
            commands.down(ctx, purge=args.purge, only=args.only)
        elif args.command == "status":
            return commands.status(ctx)
        elif args.command == "env":
            commands.show_env(ctx)
        elif args.command == "logs":
            commands.show_logs(ctx, args.name, args.lines, args.follow)
    except StackError as exc:
        print(f"[stack] error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("[stack] interrupted", file=sys.stderr)
        return 130
    return 0
