"""The code's shape, as docs/code-map.md states it: who may import whom, and where Kafka clients and
topic names live. Every import is read from the source (function-level ones too), so a shortcut
taken in a hurry fails here, not in a review."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The one place both client libraries are built: the measurement that chose one (docs/decisions.md).
CLIENT_COMPARISON = REPO / "benchmarks" / "kafka_clients.py"

# Shared libraries: imported by others, import only libraries.
LIBRARIES = {"xrides": set(), "query_dsl": {"xrides"}}
# One folder per deployable process: each imports only the libraries (and itself).
DEPLOYABLES = (
    "ingest_service",
    "persister",
    "indexer",
    "flink_jobs",
    "archiver",
    "reconcile",
    "query_service",
)
# Tools run by people, CI and the launcher; never deployed as platform processes.
TOOLS = ("loadgen", "dashboards", "benchmarks", "deploy")
FIRST_PARTY = {*LIBRARIES, *DEPLOYABLES, *TOOLS}


def _imports(path: Path) -> set[str]:
    """First-party top-level packages a module imports (anywhere in the file)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & FIRST_PARTY


def _modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


@pytest.mark.parametrize("package", [*LIBRARIES, *DEPLOYABLES])
def test_libraries_and_deployables_import_only_libraries(package: str) -> None:
    allowed = {package, *LIBRARIES.get(package, set(LIBRARIES))}
    wrong = {
        str(path.relative_to(REPO)): sorted(_imports(path) - allowed)
        for path in _modules(package)
        if _imports(path) - allowed
    }
    assert not wrong, f"{package} imports outside what it may import: {wrong}"


def test_nothing_but_the_tools_imports_the_launcher() -> None:
    wrong = [
        str(path.relative_to(REPO))
        for package in (*LIBRARIES, *DEPLOYABLES, "loadgen", "dashboards")
        for path in _modules(package)
        if "deploy" in _imports(path)
    ]
    assert not wrong, f"only deploy/, benchmarks/ and tests/ may import the launcher: {wrong}"


def _calls(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    return {
        node.func.id if isinstance(node.func, ast.Name) else node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute)
    }


def _topic_literals(path: Path, names: set[str]) -> list[str]:
    """String literals that are topic names: any registry name with a dot in it (nothing else is
    spelt like that), and a plain one (``rides``, ``logs``) where it is given to something named
    ``*topic*`` (a setting, a keyword argument, a variable). ``rides`` is also an index prefix, an
    archive prefix and a count, which this leaves alone."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    dotted = {name for name in names if "." in name}
    found = []
    for node in ast.walk(tree):
        value: ast.expr | None = None
        target = ""
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            value, target = node.value, node.target.id
        elif (
            isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
        ):
            value, target = node.value, node.targets[0].id
        elif isinstance(node, ast.keyword) and node.arg:
            value, target = node.value, node.arg
        if isinstance(value, ast.Constant) and value.value in names and "topic" in target.lower():
            found.append(f"{target}={value.value}")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in dotted:
            found.append(node.value)
    return found


def test_kafka_clients_are_built_only_in_the_kafka_layer() -> None:
    clients = {"Producer", "Consumer", "AdminClient", "KafkaProducer", "KafkaConsumer", "KafkaAdminClient"}
    layer = REPO / "xrides" / "kafka"
    wrong = {}
    for package in (*LIBRARIES, *DEPLOYABLES, *TOOLS):
        for path in _modules(package):
            if layer in path.parents or path == CLIENT_COMPARISON:
                continue
            built = _calls(path) & clients
            if built:
                wrong[str(path.relative_to(REPO))] = sorted(built)
    assert not wrong, f"Kafka clients built outside xrides/kafka: {wrong}"


def test_one_kafka_client_library() -> None:
    for package in (*LIBRARIES, *DEPLOYABLES, *TOOLS, "tests"):
        for path in _modules(package):
            if path in (Path(__file__).resolve(), CLIENT_COMPARISON):
                continue
            source = path.read_text(encoding="utf-8")
            assert "from kafka" not in source and "import kafka\n" not in source, (
                f"{path.relative_to(REPO)} uses kafka-python; the platform's one Kafka client is librdkafka"
            )


def test_topic_names_appear_once_in_the_python_code() -> None:
    from xrides.topics import TOPICS  # noqa: PLC0415

    registry = REPO / "xrides" / "topics.py"
    names = {topic.name for topic in TOPICS}
    wrong: dict[str, list[str]] = {}
    for package in (*LIBRARIES, *DEPLOYABLES, "loadgen", "dashboards"):
        for path in _modules(package):
            if path == registry:
                continue
            literals = _topic_literals(path, names)
            if literals:
                wrong[str(path.relative_to(REPO))] = literals
    assert not wrong, f"topic names written outside xrides/topics.py: {wrong}"
