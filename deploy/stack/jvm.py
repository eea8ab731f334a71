"""Finding a JDK of the right version for each Java service.

Kafka 4 and s3proxy 3 need Java 17+, Elasticsearch 9 needs 21+. Reading the
JDK's ``release`` file is instant, whereas ``java -version`` costs a JVM start,
which matters for a warm ``up`` that should take seconds.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from deploy.stack.errors import StackError

JVM_ROOT = Path("/usr/lib/jvm")


@dataclass(frozen=True)
class Jdk:
    """A Java installation and its feature version (17, 21, 25, ...)."""

    home: Path
    major: int

    @property
    def java(self) -> Path:
        """The ``java`` launcher of this JDK."""
        return self.home / "bin" / "java"


def parse_major(version: str) -> int | None:
    """Feature version from strings like ``17.0.15``, ``25``, ``1.8.0_392``."""
    match = re.match(r"(\d+)(?:\.(\d+))?", version.strip().strip('"'))
    if not match:
        return None
    first = int(match.group(1))
    if first == 1 and match.group(2):
        return int(match.group(2))
    return first


def inspect_home(home: Path) -> Jdk | None:
    """Describe the JDK at ``home``, or None if it is not a usable Java installation."""
    if not (home / "bin" / "java").is_file():
        return None
    release = home / "release"
    major: int | None = None
    if release.is_file():
        for line in release.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("JAVA_VERSION="):
                major = parse_major(line.split("=", 1)[1])
    if major is None:
        try:
            out = subprocess.run(
                [str(home / "bin" / "java"), "-version"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            ).stderr
        except (OSError, subprocess.TimeoutExpired):
            return None
        found = re.search(r'version "([^"]+)"', out)
        major = parse_major(found.group(1)) if found else None
    return Jdk(home=home.resolve(), major=major) if major is not None else None


def candidates(environ: Mapping[str, str], preferred_vars: tuple[str, ...]) -> list[Path]:
    """JDK homes in order of preference: explicit variables, ``java`` on PATH, then /usr/lib/jvm."""
    homes: list[Path] = []
    for var in preferred_vars:
        value = environ.get(var, "").strip()
        if value:
            homes.append(Path(value))
    on_path = shutil.which("java", path=environ.get("PATH"))
    if on_path:
        homes.append(Path(on_path).resolve().parent.parent)
    if JVM_ROOT.is_dir():
        homes.extend(
            sorted((p for p in JVM_ROOT.iterdir() if p.is_dir() and not p.is_symlink()), reverse=True)
        )
    return homes


def find_jdk(
    service: str,
    minimum: int,
    environ: Mapping[str, str],
    preferred_vars: tuple[str, ...] = ("JAVA_HOME",),
    prefer_newest: bool = False,
) -> Jdk:
    """Pick a JDK with at least ``minimum``; the error lists what was found instead."""
    seen: list[Jdk] = []
    for home in candidates(environ, preferred_vars):
        jdk = inspect_home(home)
        if jdk is not None and jdk not in seen:
            seen.append(jdk)
    fitting = [jdk for jdk in seen if jdk.major >= minimum]
    if not fitting:
        found = ", ".join(f"{jdk.home} (Java {jdk.major})" for jdk in seen) or "no Java at all"
        raise StackError(
            f"{service} needs Java {minimum}+, found {found}; install a JDK {minimum}+ "
            f"or point {preferred_vars[0]} at one"
        )
    if prefer_newest:
        return max(fitting, key=lambda jdk: jdk.major)
    return fitting[0]
