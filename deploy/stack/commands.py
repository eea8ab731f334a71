"""The ``up``, ``down``, ``status``, ``env`` and ``logs`` commands.

``up`` is written to be run again and again: it only starts what is not
healthy, starts everything that needs starting before waiting (so Kafka and
Elasticsearch boot in parallel), and re-runs the idempotent post-start steps
(database, topics, migrations) every time.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from deploy.stack import envfile
from deploy.stack.artifacts import MavenArtifact, fetch_maven
from deploy.stack.errors import StackError
from deploy.stack.layout import Context, Layout
from deploy.stack.platform import PlatformProcess, platform_processes
from deploy.stack.preflight import ensure_disk_space, ensure_ports_free
from deploy.stack.probes import http_ok
from deploy.stack.processes import LaunchSpec, group_members, live_pid, rss_kib, start, stop, tail
from deploy.stack.progress import say
from deploy.stack.services import Service, all_services, make_dir, service_names, service_phases

POLL_SECONDS = 0.3


@contextlib.contextmanager
def stack_lock(layout: Layout) -> Iterator[None]:
    """Serialise ``up``/``down`` so two launchers never start the same service twice."""
    make_dir(layout.run)
    with (layout.run / "launcher.lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("another up/down is running on this stack; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def processes(ctx: Context) -> tuple[PlatformProcess, ...]:
    """The platform processes of the stack's profile."""
    return platform_processes(ctx.topology)


def select(ctx: Context, only: Sequence[str] | None) -> tuple[set[str], set[str]]:
    """Split ``--only`` names into services and platform processes; unknown names fail."""
    services = set(service_names(ctx))
    platform_names = {proc.name for proc in processes(ctx)}
    if not only:
        return services, platform_names
    unknown = [name for name in only if name not in services and name not in platform_names]
    if unknown:
        known = ", ".join([*service_names(ctx), *sorted(platform_names)])
        raise StackError(f"unknown part(s) {', '.join(unknown)}; known: {known}")
    return {n for n in only if n in services}, {n for n in only if n in platform_names}


def stack_env(ctx: Context) -> dict[str, str]:
    """The variables of ``.stack/env`` (the API key and role passwords are created on first use)."""
    return envfile.stack_variables(
        envfile.ensure_api_key(ctx.layout.api_key_file),
        envfile.ensure_pg_passwords(ctx.layout.pg_passwords_file),
        ctx.topology,
        ctx.layout.root,
    )


def record_profile(ctx: Context) -> None:
    """Write the profile this stack runs; refuse to switch while parts of the other one run (their
    ports and data directories differ: ``down`` first, then ``up`` in the other profile)."""
    layout = ctx.layout
    recorded = layout.recorded_profile()
    wanted = ctx.topology.profile
    if recorded not in (None, wanted):
        running = [p.name for p in layout.run.glob("*.pid") if live_pid(p) is not None]
        if running:
            raise StackError(
                f"this stack runs the {recorded} profile ({', '.join(sorted(running))} up); "
                f"run 'down' before 'up' with XRIDES_PROFILE={wanted}"
            )
    layout.profile_file.write_text(wanted + "\n", encoding="ascii")


def write_env_file(ctx: Context) -> None:
    """(Re)write ``.stack/env``; cheap and unchanged content is left alone."""
    envfile.write(ctx.layout.env_file, stack_env(ctx))


@dataclass
class Starting:
    """A process started (or found starting) in this ``up`` that we still wait for."""

    name: str
    log: Path
    pid_file: Path
    started_at: float
    proc: subprocess.Popen[bytes] | None


def _log_tail(starting: Starting) -> str:
    return f"last 30 lines of {starting.log}:\n{tail(starting.log, current_run_only=True)}"


def check_once(starting: Starting, check: Callable[[], bool], timeout: float) -> float | None:
    """Seconds to health if ``check`` passes now, None if not yet; raises if it died or timed out."""
    if check():
        return time.monotonic() - starting.started_at
    if starting.proc is not None:
        code = starting.proc.poll()
        if code is not None:
            raise StackError(
                f"{starting.name} exited with code {code} during start-up; {_log_tail(starting)}"
            )
    elif live_pid(starting.pid_file) is None:
        raise StackError(f"{starting.name} died during start-up; {_log_tail(starting)}")
    if time.monotonic() - starting.started_at > timeout:
        raise StackError(f"{starting.name} not healthy after {timeout:.0f}s; {_log_tail(starting)}")
    return None


def wait_until_healthy(starting: Starting, check: Callable[[], bool], timeout: float) -> float:
    """Poll ``check`` until it passes; fail fast if the process dies, with its log tail."""
    while True:
        took = check_once(starting, check, timeout)
        if took is not None:
            return took
        time.sleep(POLL_SECONDS)


def _start_platform_process(ctx: Context, proc: PlatformProcess, spec: LaunchSpec) -> float:
    """Start one platform process and wait for its health; one more try if it exits while starting.

    As a supervisor would (Kubernetes restarts a crashed container): PyFlink once failed to find
    the Kafka connector's classes on a restart and succeeded on the next start. A process that
    exits twice, or one that stays up but never becomes healthy, fails ``up`` with its log tail.
    """
    pid_file = ctx.layout.pid_file(proc.name)
    for attempt in (1, 2):
        starting = _start(ctx, proc.name, spec)
        say(f"{proc.name}: launched pid {live_pid(pid_file)}")
        try:
            return wait_until_healthy(
                starting, functools.partial(http_ok, proc.health_url), proc.health_timeout
            )
        except StackError as exc:
            exited = starting.proc is not None and starting.proc.poll() is not None
            if attempt == 2 or not exited:
                raise
            first_line = str(exc).splitlines()[0][:200]
            say(f"{proc.name}: exited while starting ({first_line}); starting it once more")
            stop(pid_file)
    raise AssertionError("unreachable")


def _start(ctx: Context, name: str, spec: LaunchSpec) -> Starting:
    layout = ctx.layout
    proc = start(spec, layout.log_file(name), layout.pid_file(name))
    return Starting(name, layout.log_file(name), layout.pid_file(name), time.monotonic(), proc)


def up_services(ctx: Context, services: Sequence[Service]) -> None:
    """Start every selected service that is not healthy, then wait for all of them."""
    layout = ctx.layout
    for service in services:
        service.preflight()
    to_start: list[Service] = []
    waiting: dict[str, Starting] = {}
    for service in services:
        pid_file = layout.pid_file(service.name)
        pid = live_pid(pid_file)
        if pid is not None and service.healthy():
            say(f"{service.name}: already running (pid {pid}), healthy")
            continue
        if pid is not None:
            say(f"{service.name}: running (pid {pid}) but not healthy yet; waiting")
            waiting[service.name] = Starting(
                service.name, layout.log_file(service.name), pid_file, time.monotonic(), None
            )
            continue
        stop(pid_file)  # clears a stale pid file and kills what is left of its process group
        to_start.append(service)
    for service in to_start:  # every port check before anything starts
        ensure_ports_free(service.name, service.ports)
    for service in to_start:
        service.prepare()
    for service in to_start:
        waiting[service.name] = _start(ctx, service.name, service.launch())
        pid = live_pid(layout.pid_file(service.name))
        say(f"{service.name}: launched pid {pid}")
    wait_all(ctx, [(service, waiting[service.name]) for service in services if service.name in waiting])
    for service in services:
        service.after_healthy()
        service.refresh()


def wait_all(ctx: Context, pending: list[tuple[Service, Starting]]) -> None:
    """Wait for several services at once, so each reports its own time to health.

    A service that was found running but never becomes healthy (hung, not
    crashed) is restarted once; one we just started and that fails is an error.
    """
    layout = ctx.layout
    while pending:
        still: list[tuple[Service, Starting]] = []
        for service, starting in pending:
            try:
                took = check_once(starting, service.healthy, service.health_timeout)
            except StackError:
                if starting.proc is not None:
                    raise
                say(f"{service.name}: still unhealthy, restarting")
                stop(layout.pid_file(service.name), service.stop_signal, service.stop_timeout)
                ensure_ports_free(service.name, service.ports)
                service.prepare()
                still.append((service, _start(ctx, service.name, service.launch())))
                continue
            if took is None:
                still.append((service, starting))
            else:
                pid = live_pid(layout.pid_file(service.name))
                say(f"{service.name}: started pid {pid}, healthy in {took:.1f}s")
        pending = still
        if pending:
            time.sleep(POLL_SECONDS)


def run_migrations(ctx: Context) -> None:
    """Optional hook: ``.venv/bin/python -m persister migrate`` once the module exists."""
    layout = ctx.layout
    if not layout.venv_python.exists() or not (layout.repo / "xrides" / "db" / "migrations").exists():
        return
    env = dict(ctx.environ) | stack_env(ctx)
    result = subprocess.run(
        [str(layout.venv_python), "-m", "persister", "migrate"],
        cwd=layout.repo,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if result.returncode != 0:
        output = "\n".join((result.stdout + result.stderr).strip().splitlines()[-30:])
        raise StackError(f"persister migrate failed (exit {result.returncode}):\n{output}")
    say("postgres: migrations applied (persister migrate)")


def runnable(ctx: Context, proc: PlatformProcess) -> bool:
    """A platform process is started only once its module and the venv exist."""
    return ctx.layout.venv_python.exists() and proc.module_present(ctx.layout.repo)


def up_platform(ctx: Context, names: set[str]) -> None:
    """Start the platform's own processes with ``.stack/env`` in their environment.

    One failing process does not keep the others from starting; the failures
    are reported together at the end.
    """
    layout = ctx.layout
    env = dict(ctx.environ) | stack_env(ctx)
    failures: list[str] = []
    for proc in processes(ctx):
        if proc.name not in names or not runnable(ctx, proc):
            continue
        pid_file = layout.pid_file(proc.name)
        pid = live_pid(pid_file)
        if pid is not None and http_ok(proc.health_url):
            say(f"{proc.name}: already running (pid {pid}), healthy")
            continue
        try:
            stop(pid_file)
            ensure_ports_free(proc.name, (proc.port,))
            spec = LaunchSpec(
                argv=proc.resolved_argv(layout.repo),
                env=envfile.process_env(proc.module, env, dict(proc.env)),
                cwd=layout.repo,
                nice=proc.nice,
            )
            took = _start_platform_process(ctx, proc, spec)
        except StackError as exc:
            failures.append(str(exc))
            continue
        say(f"{proc.name}: started pid {live_pid(pid_file)}, healthy in {took:.1f}s")
    if failures:
        raise StackError("\n".join(failures))


FLINK_JARS = (
    MavenArtifact("org.apache.flink", "flink-sql-connector-kafka", "5.0.0-2.2"),
    # The mini cluster's Prometheus reporter (the pip package ships no plugins/ folder).
    MavenArtifact("org.apache.flink", "flink-metrics-prometheus", "2.2.1"),
)


def fetch_flink_jars(layout: Layout) -> Path:
    """The jars the PyFlink job loads (``.stack/downloads/flink-jars/lib``)."""
    return fetch_maven(
        "flink-jars", FLINK_JARS, layout.downloads / "flink-jars", transitive=False, pinned=True
    )


def up(ctx: Context, only: Sequence[str] | None = None) -> None:
    """Bring the selected parts up; idempotent and self-healing."""
    began = time.monotonic()
    layout = ctx.layout
    wanted_services, platform_names = select(ctx, only)
    make_dir(layout.root)
    ensure_disk_space(layout.root)
    with stack_lock(layout):
        for directory in (layout.downloads, layout.logs, layout.run, layout.bin):
            make_dir(directory)
        record_profile(ctx)
        write_env_file(ctx)
        if platform_names or ctx.topology.cluster:
            fetch_flink_jars(layout)  # the job's, and the session cluster's lib/
        for phase in service_phases(ctx):
            up_services(ctx, [s for s in phase if s.name in wanted_services])
            if "postgres" in {s.name for s in phase} & wanted_services:
                run_migrations(ctx)
        up_platform(ctx, platform_names)
    say(f"up: done in {time.monotonic() - began:.1f}s; variables in {layout.env_file}")


def down(ctx: Context, purge: bool = False, only: Sequence[str] | None = None) -> None:
    """Stop platform processes, then services (graceful, then SIGKILL); keep data unless ``purge``."""
    layout = ctx.layout
    if not layout.root.exists():
        say("down: nothing to stop (no stack directory)")
        return
    wanted_services, platform_names = select(ctx, only)
    with stack_lock(layout):
        for proc in reversed(processes(ctx)):
            if proc.name in platform_names:
                _stop_one(layout, proc.name, signal.SIGTERM, 30.0)
        services = [s for s in all_services(ctx) if s.name in wanted_services]
        for service in reversed(services):
            _stop_one(layout, service.name, service.stop_signal, service.stop_timeout)
        if purge:
            for service in services:
                for path in service.data_dirs():
                    if path.is_dir():
                        shutil.rmtree(path)
                    else:
                        path.unlink(missing_ok=True)
                say(f"{service.name}: data deleted")


def _stop_one(layout: Layout, name: str, sig: int, timeout: float) -> None:
    began = time.monotonic()
    pid = stop(layout.pid_file(name), sig, timeout)
    if pid is not None:
        say(f"{name}: stopped pid {pid} in {time.monotonic() - began:.1f}s")


@dataclass(frozen=True)
class PartStatus:
    """One line of ``status``."""

    name: str
    pid: int | None
    port: int
    state: str
    rss_kib: int

    @property
    def counts(self) -> bool:
        """Parts whose module does not exist yet do not affect the exit code."""
        return self.state != "absent"

    def line(self) -> str:
        """Aligned, grep-friendly output."""
        pid = str(self.pid) if self.pid is not None else "-"
        rss = f"{self.rss_kib / 1024:.0f}MiB" if self.rss_kib else "-"
        return f"{self.name:<20} pid={pid:<8} port={self.port:<6} {self.state:<10} rss={rss}"


def collect_status(ctx: Context) -> list[PartStatus]:
    """State of every service and platform process."""
    layout = ctx.layout
    parts: list[PartStatus] = []
    for service in all_services(ctx):
        pid = live_pid(layout.pid_file(service.name))
        state = "stopped" if pid is None else ("healthy" if service.healthy() else "unhealthy")
        rss = rss_kib(service.member_pids(pid)) if pid else 0
        parts.append(PartStatus(service.name, pid, service.port, state, rss))
    for proc in processes(ctx):
        pid = live_pid(layout.pid_file(proc.name))
        if not runnable(ctx, proc):
            state = "absent"
        elif pid is None:
            state = "stopped"
        else:
            state = "healthy" if http_ok(proc.health_url) else "unhealthy"
        parts.append(PartStatus(proc.name, pid, proc.port, state, rss_kib(group_members(pid)) if pid else 0))
    return parts


def status(ctx: Context) -> int:
    """Print one line per part; 0 only when every part that exists is healthy."""
    parts = collect_status(ctx)
    for part in parts:
        print(part.line())
    return 0 if all(p.state == "healthy" for p in parts if p.counts) else 1


def show_env(ctx: Context) -> None:
    """Print ``.stack/env`` (writing it first if ``up`` never ran)."""
    make_dir(ctx.layout.root)
    write_env_file(ctx)
    sys.stdout.write(ctx.layout.env_file.read_text(encoding="utf-8"))


def show_logs(ctx: Context, name: str, lines: int, follow: bool) -> None:
    """Print the end of a part's log, optionally following it like ``tail -f``."""
    known = [*service_names(ctx), *(p.name for p in processes(ctx))]
    if name not in known:
        raise StackError(f"unknown part {name!r}; known: {', '.join(known)}")
    log = ctx.layout.log_file(name)
    if not log.exists():
        raise StackError(f"no log for {name} yet ({log} does not exist)")
    print(tail(log, lines))
    if not follow:
        return
    with log.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                chunk = handle.read()
                if chunk:
                    sys.stdout.write(chunk.decode("utf-8", errors="replace"))
                    sys.stdout.flush()
                else:
                    time.sleep(0.5)
