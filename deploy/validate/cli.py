"""``python -m deploy.validate [fetch|k8s|compose|all]``: the deployment files, checked by the
real validators (``make validate``; ``make test`` runs it first).

``fetch`` only makes sure the toolchain is there (deploy/validate/toolchain.py); ``k8s`` runs
kubeconform over deploy/k8s; ``compose`` runs docker-compose config over docker-compose.yml, with
no profile and with every profile; ``all`` (the default) does the three. Exit 1 on any finding.
"""

from __future__ import annotations

import argparse
import sys
import time

from deploy.stack.errors import StackError
from deploy.validate import checks, toolchain


def _k8s(tc: toolchain.Toolchain) -> bool:
    began = time.monotonic()
    report = checks.kubeconform(tc)
    took = time.monotonic() - began
    for resource in report.problems():
        print(f"{resource.filename}: {resource.kind}/{resource.name}: {resource.status}: {resource.message}")
    if report.stderr.strip():
        print(report.stderr.strip())
    files = len({r.filename for r in report.resources})
    verdict = "ok" if report.ok else "FAILED"
    print(
        f"kubeconform -strict deploy/k8s: {len(report.valid())} resources valid, "
        f"{len(report.problems())} not, in {files} files ({took:.2f}s): {verdict}"
    )
    return report.ok


def _compose(tc: toolchain.Toolchain) -> bool:
    ok = True
    every = checks.compose_profiles()
    for profiles in ((), every) if every else ((),):
        began = time.monotonic()
        report = checks.compose_config(tc, profiles=profiles)
        took = time.monotonic() - began
        label = "profiles " + ",".join(profiles) if profiles else "no profile"
        if not report.ok:
            print(report.output.strip())
        verdict = "ok" if report.ok else "FAILED"
        print(f"docker-compose config ({label}): {len(report.services)} services ({took:.2f}s): {verdict}")
        ok = ok and report.ok
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.validate", description=__doc__)
    parser.add_argument("what", nargs="?", default="all", choices=("fetch", "k8s", "compose", "all"))
    args = parser.parse_args(argv)
    began = time.monotonic()
    try:
        tc = toolchain.ensure()
    except StackError as exc:
        print(f"validate: {exc}", file=sys.stderr)
        return 1
    print(f"toolchain: {tc.root} ({time.monotonic() - began:.2f}s)")
    ok = True
    if args.what in ("k8s", "all"):
        ok = _k8s(tc) and ok
    if args.what in ("compose", "all"):
        ok = _compose(tc) and ok
    return 0 if ok else 1
