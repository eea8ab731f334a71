"""The two checks: ``kubeconform -strict`` over deploy/k8s, ``docker-compose config`` over the
compose file. Both return what they found, so the CLI prints it and the unit tests assert on it."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from deploy.validate.toolchain import KUBERNETES_VERSION, REPO, Toolchain

K8S = REPO / "deploy" / "k8s"
COMPOSE_FILE = REPO / "docker-compose.yml"
# kustomize's own file is a build instruction, not a resource any API server has a schema for
NOT_RESOURCES = ("Kustomization",)


@dataclass(frozen=True)
class Resource:
    filename: str
    kind: str
    name: str
    status: str  # valid, invalid, error (no schema, bad YAML), skipped, or empty (a comment-only document)
    message: str = ""


@dataclass(frozen=True)
class KubeconformReport:
    resources: tuple[Resource, ...]
    returncode: int
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.problems()

    def problems(self) -> list[Resource]:
        return [r for r in self.resources if r.status not in ("valid", "skipped", "empty")]

    def valid(self) -> list[Resource]:
        return [r for r in self.resources if r.status == "valid"]


def kubeconform(tc: Toolchain, paths: Sequence[Path] = (K8S,)) -> KubeconformReport:
    """Validate every resource under ``paths`` strictly (unknown fields, duplicate keys, wrong
    types) against Kubernetes' schemas and the operators' CRD schemas; a kind without a schema is
    an error, never a skip."""
    crds = f"{tc.crd_schemas}/{{{{ .Group }}}}/{{{{ .ResourceKind }}}}_{{{{ .ResourceAPIVersion }}}}.json"
    cmd = [str(tc.kubeconform), "-strict", "-summary", "-verbose", "-output", "json"]
    cmd += ["-kubernetes-version", KUBERNETES_VERSION]
    cmd += ["-schema-location", str(tc.kubernetes_schemas), "-schema-location", crds]
    cmd += ["-skip", ",".join(NOT_RESOURCES), *map(str, paths)]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    try:
        listed = json.loads(result.stdout).get("resources") or []
    except json.JSONDecodeError:
        listed = []
    resources = tuple(
        Resource(
            str(item.get("filename", "")),
            str(item.get("kind", "")),
            str(item.get("name", "")),
            str(item.get("status") or "statusEmpty").removeprefix("status").lower(),
            str(item.get("msg", "")),
        )
        for item in listed
    )
    return KubeconformReport(resources, result.returncode, result.stderr + ("" if listed else result.stdout))


@dataclass(frozen=True)
class ComposeReport:
    profiles: tuple[str, ...]
    returncode: int
    output: str
    services: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and "variable is not set" not in self.output


def compose_profiles(compose_file: Path = COMPOSE_FILE) -> tuple[str, ...]:
    """Every profile a service of the file is behind."""
    services = (yaml.safe_load(compose_file.read_text(encoding="utf-8")) or {}).get("services") or {}
    return tuple(sorted({p for spec in services.values() for p in (spec or {}).get("profiles") or []}))


def compose_config(
    tc: Toolchain, compose_file: Path = COMPOSE_FILE, profiles: Sequence[str] = ()
) -> ComposeReport:
    """``docker-compose config`` as ``docker compose up`` would read the file on a machine with no
    ``.env`` and no XRIDES_* variables: schema, interpolation, merges, references. No engine needed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XRIDES_", "COMPOSE_", "DOCKER_"))}
    base = [str(tc.docker_compose), "-f", str(compose_file)]
    base += [arg for profile in profiles for arg in ("--profile", profile)]
    quiet = subprocess.run(
        [*base, "config", "--quiet"],
        cwd=compose_file.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    services: tuple[str, ...] = ()
    if quiet.returncode == 0:
        listed = subprocess.run(
            [*base, "config", "--services"],
            cwd=compose_file.parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        services = tuple(sorted(listed.stdout.split()))
    return ComposeReport(tuple(profiles), quiet.returncode, quiet.stdout + quiet.stderr, services)
