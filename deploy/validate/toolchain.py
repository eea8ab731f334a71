"""The validators and the schemas they need, fetched from the package registries and cached.

Everything lands under ``.stack/downloads/validate/`` (``XRIDES_VALIDATE_DIR`` moves it). Each part
is fetched once and marked complete with the versions it was made from, so a warm run costs a few
file checks and a version bump fetches again. What comes from where:

- **kubeconform** (a Go module): ``go install``.
- **Kubernetes' JSON schemas**: the ``kubernetes-validate`` wheel (PyPI), made self-contained
  (deploy/validate/schemas.py).
- **The operators' CRDs**, for every ``apiVersion`` deploy/k8s uses: ECK, CloudNativePG, Gateway API
  and prometheus-operator ship their CRD YAML inside their Go modules; Strimzi's ``io.strimzi:api``
  jar holds only the classes its CRDs are generated from, so they are generated with
  ``io.strimzi:crd-generator`` (Java 21 bytecode: the newest JDK found runs it); the Flink Kubernetes
  Operator's CRD is inside ``flink-kubernetes-operator-api``. Maven artifacts come through the
  launcher's own fetcher (deploy/stack/artifacts.py).
- **docker-compose**: built from its Go module (``go install`` refuses a module whose go.mod has
  ``exclude`` directives, so it is built in a copy); ``docker-compose config`` needs no engine.

Measured on the 2-core machine (docs/deployment.md): about 2.5 minutes cold, most of it the
compose build; well under a second warm. Needs Go (1.26, part of the machine image), Maven and a
JDK 21+, as the rest of the project does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from deploy.stack.artifacts import MavenArtifact, fetch_maven
from deploy.stack.errors import StackError
from deploy.stack.jvm import find_jdk
from deploy.validate import schemas

REPO = Path(__file__).resolve().parents[2]
MARKER = ".complete"

KUBECONFORM = ("github.com/yannh/kubeconform", "v0.8.0", "cmd/kubeconform")
# kubernetes-validate's version is the newest Kubernetes it has schemas for (it ships 1.25 and on).
KUBERNETES_VERSION = "1.37.0"
COMPOSE = ("github.com/docker/compose/v5", "v5.6.0")  # v5.7 needs a newer Go than the machine's


@dataclass(frozen=True)
class CrdModule:
    """A Go module that ships an operator's CRDs as YAML, and where they are inside it."""

    operator: str
    module: str
    version: str
    paths: tuple[str, ...]


CRD_MODULES = (
    CrdModule("ECK", "github.com/elastic/cloud-on-k8s/v3", "v3.5.0", ("config/crds/v1/all-crds.yaml",)),
    # exact versions download; the proxy refuses this module's version list
    CrdModule("CloudNativePG", "github.com/cloudnative-pg/cloudnative-pg", "v1.28.0", ("config/crd/bases",)),
    # CloudNativePG's backups to an object store: the Barman Cloud plugin's ObjectStore
    CrdModule(
        "Barman Cloud plugin",
        "github.com/cloudnative-pg/plugin-barman-cloud",
        "v0.15.0",
        ("config/crd/bases",),
    ),
    CrdModule("Gateway API", "sigs.k8s.io/gateway-api", "v1.6.3", ("config/crd/standard",)),
    CrdModule(
        "prometheus-operator",
        "github.com/prometheus-operator/prometheus-operator",
        "v0.85.0",
        ("example/prometheus-operator-crd",),
    ),
)
# Strimzi 0.51 is the last release serving kafka.strimzi.io/v1beta2, the version deploy/k8s uses;
# crd-generator is published for some releases only, and 1.2.0 generates from 0.51's classes.
STRIMZI = (
    MavenArtifact("io.strimzi", "api", "0.51.0"),
    MavenArtifact("io.strimzi", "crd-generator", "1.2.0"),
)
# The arguments of the api pom's generate-crd executions: (api versions, storage version, classes).
STRIMZI_CRDS = (
    (
        "v1beta2,v1",
        {
            "io.strimzi.api.kafka.model.kafka.Kafka": "040-Crd-kafka.yaml",
            "io.strimzi.api.kafka.model.nodepool.KafkaNodePool": "045-Crd-kafkanodepool.yaml",
        },
    ),
    (
        "v1alpha1,v1beta1,v1beta2,v1",
        {
            "io.strimzi.api.kafka.model.topic.KafkaTopic": "043-Crd-kafkatopic.yaml",
            "io.strimzi.api.kafka.model.user.KafkaUser": "044-Crd-kafkauser.yaml",
        },
    ),
)
# The newest flink-kubernetes-operator-api on Maven Central here; 1.12 and 1.13 are not served.
FLINK_OPERATOR = MavenArtifact("org.apache.flink", "flink-kubernetes-operator-api", "1.10.0")
# Its CRD's spec.flinkVersion enum ends at v1_20. Flink 2.x needs a later operator, whose CRD cannot
# be had here: the enum is widened by the 2.x lines, and every other field is checked against the
# 1.10 schema (tests/unit/test_k8s_manifests.py also checks the resource's fields by hand).
FLINK_VERSIONS_PAST_CRD = ("v2_0", "v2_1", "v2_2")


def say(message: str) -> None:
    print(f"[validate] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Toolchain:
    """Where the fetched validators and schemas are."""

    root: Path

    @property
    def kubeconform(self) -> Path:
        return self.root / "bin" / "kubeconform"

    @property
    def docker_compose(self) -> Path:
        return self.root / "bin" / "docker-compose"

    @property
    def kubernetes_schemas(self) -> Path:
        """kubeconform's default layout: ``v<version>-standalone[-strict]/<kind>-<group>-<version>.json``."""
        return self.root / "kubernetes"

    @property
    def crd_schemas(self) -> Path:
        """``<group>/<kind>_<version>.json``."""
        return self.root / "crds"

    def ready(self) -> bool:
        """Every part complete, made from the versions pinned here, its output present."""
        for part, listing in PARTS.items():
            marker = self.root / f"{part}{MARKER}"
            if not marker.is_file() or marker.read_text(encoding="utf-8") != listing():
                return False
        return self.kubeconform.is_file() and self.docker_compose.is_file()


def default_root(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    override = env.get("XRIDES_VALIDATE_DIR", "").strip()
    return Path(override).expanduser().resolve() if override else REPO / ".stack" / "downloads" / "validate"


# --- small helpers ------------------------------------------------------------------------------


def _run(
    cmd: list[str], what: str, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 900
) -> str:
    try:
        result = subprocess.run(
            cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"{what}: timed out after {timeout:.0f}s") from exc
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-20:])
        raise StackError(f"{what} failed (exit {result.returncode}):\n{tail}")
    return result.stdout


def _cached(root: Path, part: str, listing: str, build: Callable[[], None]) -> bool:
    """Run ``build`` unless ``part`` was completed from the same ``listing``; True when it ran."""
    marker = root / f"{part}{MARKER}"
    if marker.is_file() and marker.read_text(encoding="utf-8") == listing:
        return False
    marker.unlink(missing_ok=True)
    began = time.monotonic()
    build()
    marker.write_text(listing, encoding="utf-8")
    say(f"{part}: ready in {time.monotonic() - began:.1f}s")
    return True


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise StackError("Go is not installed (the machine image has Go 1.26 in /usr/local/go); install it")
    return go


def _go_env() -> dict[str, str]:
    env = dict(os.environ)
    # -mod=mod: a module copied out of the cache resolves its dependencies itself
    env["GOFLAGS"] = " ".join(filter(None, [env.get("GOFLAGS", ""), "-mod=mod"]))
    return env


def go_module_dir(module: str, version: str, scratch: Path) -> Path:
    """Download ``module@version`` into Go's module cache; its (read-only) directory there."""
    scratch.mkdir(parents=True, exist_ok=True)
    out = _run(
        [_go(), "mod", "download", "-json", f"{module}@{version}"],
        f"go mod download {module}@{version}",
        cwd=scratch,
        env=_go_env(),
    )
    return Path(json.loads(out)["Dir"])


# --- the parts ------------------------------------------------------------------------------------


def _kubeconform(tc: Toolchain) -> None:
    module, version, package = KUBECONFORM
    scratch = tc.root / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    env = _go_env() | {"GOBIN": str(tc.kubeconform.parent)}
    say(f"kubeconform: go install {module}@{version}")
    _run([_go(), "install", f"{module}/{package}@{version}"], "go install kubeconform", scratch, env)


def _kubernetes_schemas(tc: Toolchain) -> None:
    wheels = tc.root / "pypi"
    shutil.rmtree(wheels, ignore_errors=True)
    say(f"Kubernetes {KUBERNETES_VERSION} schemas: pip download kubernetes-validate=={KUBERNETES_VERSION}")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--only-binary=:all:",
            "--dest",
            str(wheels),
            f"kubernetes-validate=={KUBERNETES_VERSION}",
        ],
        "pip download kubernetes-validate",
        cwd=tc.root,
    )
    (wheel,) = wheels.glob("kubernetes_validate-*.whl")
    unpacked = wheels / "unpacked"
    prefix = f"kubernetes_validate/kubernetes-json-schema/v{KUBERNETES_VERSION}-local"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked, [name for name in archive.namelist() if name.startswith(prefix)])
    shutil.rmtree(tc.kubernetes_schemas, ignore_errors=True)
    count = schemas.standalone_kubernetes(
        unpacked / "kubernetes_validate" / "kubernetes-json-schema", tc.kubernetes_schemas, KUBERNETES_VERSION
    )
    if count < 500:
        raise StackError(f"kubernetes-validate {KUBERNETES_VERSION} gave only {count} schemas")
    shutil.rmtree(wheels, ignore_errors=True)


def _strimzi_crds(tc: Toolchain) -> Path:
    """Strimzi's CRD YAML, generated from its api classes as its own build does."""
    lib = fetch_maven("strimzi-crd-generator", STRIMZI, tc.root / "maven" / "strimzi", pinned=True)
    java = find_jdk("Strimzi's crd-generator", 21, os.environ, prefer_newest=True).home / "bin" / "java"
    out = tc.root / "strimzi-crds"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for api_versions, classes in STRIMZI_CRDS:
        cmd = [
            str(java),
            "-cp",
            f"{lib}/*",
            "io.strimzi.crdgenerator.CrdGenerator",
            "--crd-api-version",
            "v1",
        ]
        cmd += ["--api-versions", api_versions, "--storage-version", "v1beta2", "--yaml"]
        cmd += [f"{cls}={out / name}" for cls, name in classes.items()]
        _run(cmd, "Strimzi crd-generator", cwd=out, timeout=300)
    return out


def _crd_schemas(tc: Toolchain) -> None:
    scratch = tc.root / "scratch"
    sources: list[Path] = []
    for crd in CRD_MODULES:
        say(f"{crd.operator} CRDs: go mod download {crd.module}@{crd.version}")
        directory = go_module_dir(crd.module, crd.version, scratch)
        sources.extend(directory / path for path in crd.paths)
    sources.append(_strimzi_crds(tc))
    flink_lib = fetch_maven(
        "flink-kubernetes-operator-api",
        [FLINK_OPERATOR],
        tc.root / "maven" / "flink-operator",
        transitive=False,
        pinned=True,
    )
    sources.extend(sorted(flink_lib.glob("flink-kubernetes-operator-api-*.jar")))
    shutil.rmtree(tc.crd_schemas, ignore_errors=True)
    written = schemas.write_crd_schemas(tc.crd_schemas, sources)
    say(f"CRD schemas: {len(written)} from {len(sources)} sources")
    schemas.widen_enum(
        tc.crd_schemas / "flink.apache.org" / "flinkdeployment_v1beta1.json",
        ("spec", "flinkVersion"),
        FLINK_VERSIONS_PAST_CRD,
    )


def _docker_compose(tc: Toolchain) -> None:
    module, version = COMPOSE
    say(f"docker-compose: building {module}@{version} (about a minute cold)")
    source = go_module_dir(module, version, tc.root / "scratch")
    copy = tc.root / "compose-src"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(source, copy)
    for path in [copy, *copy.rglob("*")]:  # the module cache is read-only
        path.chmod(path.stat().st_mode | 0o200)
    ldflags = f"-s -w -X {module}/internal.Version={version}"
    cmd = [_go(), "build", "-trimpath", "-ldflags", ldflags, "-o", str(tc.docker_compose), "./cmd"]
    _run(cmd, "go build docker-compose", cwd=copy, env=_go_env())
    shutil.rmtree(copy, ignore_errors=True)


def _listing(*parts: object) -> str:
    return "".join(f"{part}\n" for part in parts)


PARTS: dict[str, Callable[[], str]] = {
    "kubeconform": lambda: _listing(*KUBECONFORM),
    "kubernetes-schemas": lambda: _listing(KUBERNETES_VERSION, "standalone-v2"),
    "crd-schemas": lambda: _listing(
        *(f"{m.module}@{m.version}" for m in CRD_MODULES),
        *(a.coordinate for a in (*STRIMZI, FLINK_OPERATOR)),
        *FLINK_VERSIONS_PAST_CRD,
    ),
    "docker-compose": lambda: _listing(*COMPOSE),
}
_BUILDERS: dict[str, Callable[[Toolchain], None]] = {
    "kubeconform": _kubeconform,
    "kubernetes-schemas": _kubernetes_schemas,
    "crd-schemas": _crd_schemas,
    "docker-compose": _docker_compose,
}


def ensure(root: Path | None = None) -> Toolchain:
    """Fetch and build whatever is missing (in parallel: the compose build is CPU, the rest
    downloads) and return the toolchain; a warm call only reads the markers."""
    tc = Toolchain(root or default_root())
    if tc.ready():
        return tc
    tc.root.mkdir(parents=True, exist_ok=True)
    # A part whose output went missing is rebuilt even if its marker is there.
    outputs = {"kubeconform": tc.kubeconform, "docker-compose": tc.docker_compose}
    for part, output in outputs.items():
        if not output.is_file():
            (tc.root / f"{part}{MARKER}").unlink(missing_ok=True)
    began = time.monotonic()

    def build(part: str) -> bool:
        return _cached(tc.root, part, PARTS[part](), lambda: _BUILDERS[part](tc))

    with ThreadPoolExecutor(max_workers=len(PARTS)) as pool:
        ran = list(pool.map(build, PARTS))
    if any(ran):
        say(f"toolchain ready in {time.monotonic() - began:.1f}s ({tc.root})")
    return tc
