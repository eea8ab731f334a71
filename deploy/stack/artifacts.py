"""Fetching what the services run: Maven artifacts and Debian packages.

Maven Central is the one place all the Java parts (Kafka, Elasticsearch's
integ-test zip, s3proxy) can come from here, so each fetch is a tiny generated
pom plus ``mvn dependency:copy-dependencies`` into one directory. A ``.complete``
marker makes the fetch a no-op on later runs, which keeps a warm ``up`` fast.
"""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from deploy.stack.errors import StackError
from deploy.stack.progress import say

COMPLETE_MARKER = ".complete"


@dataclass(frozen=True)
class MavenArtifact:
    """One Maven coordinate; ``type``/``classifier`` select zips and fat jars."""

    group: str
    artifact: str
    version: str
    type: str = "jar"
    classifier: str = ""

    @property
    def coordinate(self) -> str:
        """``group:artifact:version[:type[:classifier]]`` as used in messages."""
        tail = f":{self.type}" if self.type != "jar" or self.classifier else ""
        tail += f":{self.classifier}" if self.classifier else ""
        return f"{self.group}:{self.artifact}:{self.version}{tail}"

    def dependency_xml(self) -> str:
        """The ``<dependency>`` element for the generated pom."""
        parts = [
            f"<groupId>{escape(self.group)}</groupId>",
            f"<artifactId>{escape(self.artifact)}</artifactId>",
            f"<version>{escape(self.version)}</version>",
        ]
        if self.type != "jar":
            parts.append(f"<type>{escape(self.type)}</type>")
        if self.classifier:
            parts.append(f"<classifier>{escape(self.classifier)}</classifier>")
        return "<dependency>" + "".join(parts) + "</dependency>"


def render_pom(name: str, artifacts: Sequence[MavenArtifact]) -> str:
    """A packaging=pom project whose only purpose is to list dependencies to copy."""
    deps = "\n    ".join(a.dependency_xml() for a in artifacts)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.xrides.stack</groupId>
  <artifactId>{escape(name)}</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    {deps}
  </dependencies>
</project>
"""


def fetch_maven(
    name: str,
    artifacts: Sequence[MavenArtifact],
    dest: Path,
    transitive: bool = True,
    timeout: float = 900,
    pinned: bool = False,
) -> Path:
    """Copy ``artifacts`` (and, if ``transitive``, their runtime deps) into ``dest/lib``.

    Returns the lib directory. Cached by a marker file: a second call is free. With ``pinned`` the
    marker lists the coordinates, so adding an artifact to the list fetches again.
    """
    lib = dest / "lib"
    marker = dest / COMPLETE_MARKER
    listing = "".join(f"{a.coordinate}\n" for a in artifacts) if pinned else "ok\n"
    if marker.exists() and (not pinned or marker.read_text(encoding="utf-8") == listing):
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(f"{name}: Maven ('mvn') is not installed; apt-get install -y maven")
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "pom.xml").write_text(render_pom(name, artifacts), encoding="utf-8")
    if lib.exists():
        shutil.rmtree(lib)
    coords = ", ".join(a.coordinate for a in artifacts)
    say(f"{name}: fetching {coords}")
    cmd = [
        mvn,
        "-B",
        "-q",
        "-U",  # do not trust a cached "not found" from an earlier failed attempt
        "-f",
        str(dest / "pom.xml"),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={lib}",
        "-DincludeScope=runtime",
    ]
    if not transitive:
        cmd.append("-DexcludeTransitive=true")
    try:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"download of {coords} timed out after {timeout:.0f}s") from exc
    if result.returncode != 0:
        output = mvn_error_tail(result.stdout + result.stderr)
        raise StackError(f"download of {coords} failed (mvn exit {result.returncode}):\n{output}")
    marker.write_text(listing, encoding="utf-8")
    return lib


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_MVN_BOILERPLATE = ("re-run maven", "for more information", "[help 1]", "to see the full stack trace")


def mvn_error_tail(output: str, lines: int = 15) -> str:
    """The informative part of Maven's output: ERROR lines without colour codes and boilerplate."""
    clean = [_ANSI.sub("", line).rstrip() for line in output.strip().splitlines()]
    errors = []
    for line in clean:
        text = line.replace("[ERROR]", "", 1).strip()
        if "ERROR" in line and text and not text.lower().startswith(_MVN_BOILERPLATE):
            errors.append(line)
    return "\n".join((errors or clean)[-lines:])


def extract_zip(archive: Path, dest: Path) -> Path:
    """Unpack ``archive`` into ``dest`` keeping Unix modes (zipfile drops them by default).

    A single top-level folder (``elasticsearch-9.2.4/``) is stripped, so ``dest``
    is the installation itself.

    Unpacks into a sibling temp directory and renames, so an interrupted extract
    never leaves a half-installed tree that looks complete.
    """
    if (dest / COMPLETE_MARKER).exists():
        return dest
    tmp = dest.with_name(dest.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            target = zf.extract(info, tmp)
            mode = (info.external_attr >> 16) & 0o7777
            if mode:
                Path(target).chmod(mode)
            elif not info.is_dir():
                Path(target).chmod(stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
    entries = list(tmp.iterdir())
    root = entries[0] if len(entries) == 1 and entries[0].is_dir() else tmp
    if dest.exists():
        shutil.rmtree(dest)
    root.replace(dest)
    if root != tmp:
        tmp.rmdir()
    (dest / COMPLETE_MARKER).write_text("ok\n", encoding="ascii")
    return dest


def ensure_debian_package(binary: Path, package: str) -> None:
    """Install ``package`` with apt-get when ``binary`` is missing (root only)."""
    if binary.exists():
        return
    if shutil.which("apt-get") is None:
        raise StackError(f"{binary} is missing and apt-get is not available; install {package} yourself")
    say(f"installing Debian package {package} (missing {binary})")
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    for cmd in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", package],
    ):
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=900)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
            raise StackError(
                f"installing {package} failed ({' '.join(cmd)} exit {result.returncode}):\n{tail}"
            )
    if not binary.exists():
        raise StackError(f"installed {package} but {binary} is still missing")
