"""The contract's versions, and the compatibility rule every change must pass (BACKWARD, as a schema
registry means it): a ride valid under an earlier version stays valid, and every stored ride stays
readable.

``contract.lock.json`` beside this module holds the field table as it was at each released version.
The unit tests check that the current table is one of them or a backward-compatible next version of
the newest, and that the newest entry is the current table (``python -m xrides.ride.contract
--freeze`` appends it once a change is reviewed). Allowed: a new field that is nullable or optional,
with ``since`` the new version; a field that becomes nullable or optional; a wider range. Refused:
removing or renaming a field, changing its kind, making it required or non-null, a new required
field, a version that did not move when the table did.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from xrides.ride.fields import CONTRACT_VERSION, RIDE_FIELDS, FieldSpec

LOCK = Path(__file__).with_name("contract.lock.json")


def describe(fields: tuple[FieldSpec, ...]) -> dict[str, dict[str, Any]]:
    """The table as plain data: what a client and a store depend on, per field."""
    return {
        f.name: {
            "kind": f.kind.value,
            "nullable": f.nullable,
            "optional": f.optional,
            "date_only": f.date_only,
            "since": f.since,
        }
        for f in fields
    }


def check_backward(old: dict[str, dict[str, Any]], new: dict[str, dict[str, Any]], old_version: int,
                   new_version: int) -> list[str]:  # fmt: skip
    """Why ``new`` (at ``new_version``) would break clients or stored rides of ``old``; empty if it
    would not."""
    problems: list[str] = []
    if new != old and new_version <= old_version:
        problems.append(f"the field table changed but CONTRACT_VERSION stayed {new_version}")
    for name, spec in old.items():
        now = new.get(name)
        if now is None:
            problems.append(f"{name} was removed (stored rides and clients use it)")
        else:
            problems += _changed(name, spec, now)
    for name, spec in new.items():
        if name not in old:
            problems += _added(name, spec, new_version)
    return problems


def _changed(name: str, spec: dict[str, Any], now: dict[str, Any]) -> list[str]:
    problems = []
    if now["kind"] != spec["kind"]:
        problems.append(f"{name} changed kind {spec['kind']} -> {now['kind']}")
    if spec["nullable"] and not now["nullable"]:
        problems.append(f"{name} became non-null (stored rides hold nulls)")
    if (spec["nullable"] or spec["optional"]) and not (now["nullable"] or now["optional"]):
        problems.append(f"{name} became required (clients that leave it out would be refused)")
    if spec["date_only"] and not now["date_only"]:
        problems.append(f"{name} no longer accepts a bare date")
    if now["since"] != spec["since"]:
        problems.append(f"{name}: since changed {spec['since']} -> {now['since']}")
    return problems


def _added(name: str, spec: dict[str, Any], new_version: int) -> list[str]:
    problems = []
    if not (spec["nullable"] or spec["optional"]):
        problems.append(f"{name} is new and required (every existing client would be refused)")
    if spec["since"] != new_version:
        problems.append(f"{name} is new: its since must be the new version {new_version}")
    return problems


def load_lock(path: Path = LOCK) -> dict[int, dict[str, dict[str, Any]]]:
    raw: dict[str, dict[str, dict[str, Any]]] = json.loads(path.read_text(encoding="utf-8"))
    return {int(version): fields for version, fields in raw.items()}


def problems_against_lock(fields: tuple[FieldSpec, ...] = RIDE_FIELDS, version: int = CONTRACT_VERSION,
                          path: Path = LOCK) -> list[str]:  # fmt: skip
    """The current table against the newest locked version (or equal to its own locked entry)."""
    lock = load_lock(path)
    current = describe(fields)
    if version in lock:
        return [] if lock[version] == current else [f"contract {version} is locked and the table differs"]
    newest = max(lock)
    return check_backward(lock[newest], current, newest, version)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m xrides.ride.contract", description=__doc__)
    parser.add_argument("--freeze", action="store_true", help="lock the current table as its version")
    args = parser.parse_args(argv)
    problems = problems_against_lock()
    for problem in problems:
        print(f"incompatible: {problem}")
    if problems:
        return 1
    if args.freeze:
        lock = {str(v): f for v, f in load_lock().items()} if LOCK.exists() else {}
        lock[str(CONTRACT_VERSION)] = describe(RIDE_FIELDS)
        LOCK.write_text(json.dumps(lock, indent=2) + "\n", encoding="utf-8")
        print(f"contract {CONTRACT_VERSION} locked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
