"""The dashboard files are generated from their definitions; the Kibana import sends Kibana's request.

The import command is exercised against a small aiohttp server standing in for Kibana's
saved-objects API; the server checks the request shape Kibana requires (method, path, query,
``kbn-xsrf``, basic auth, a multipart ``file`` holding the NDJSON).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from dashboards import cli, grafana, kibana
from dashboards.kibana_import import KibanaImportError, import_saved_objects, import_url

NDJSON = cli.KIBANA_FILE.read_bytes()


def test_committed_files_equal_the_generated_ones() -> None:
    for path, text in cli.generated().items():
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.name} is stale: run `python -m dashboards generate` and commit it"
        )
    assert cli.main(["generate", "--check"]) == 0


def test_ndjson_has_one_object_per_line_with_unique_ids() -> None:
    objects = [json.loads(line) for line in NDJSON.decode().splitlines()]
    assert objects[0]["type"] == "index-pattern"
    assert objects[-1]["type"] == "dashboard"
    assert len({(o["type"], o["id"]) for o in objects}) == len(objects)
    assert {o["id"] for o in objects} >= {p.id for p in kibana.PANELS}


def test_every_chart_has_an_es_request_with_its_buckets() -> None:
    for chart in kibana.CHARTS:
        body = kibana.es_request(chart, "2026-01-01T00:00:00.000Z", "2026-01-31T00:00:00.000Z")
        aggs = body["aggs"]
        for bucket in chart.buckets:
            assert kibana.bucket_id(bucket) in aggs
            aggs = aggs[kibana.bucket_id(bucket)].get("aggs", {})


def test_rows_flatten_nested_buckets_and_compute_ratios() -> None:
    response = {
        "aggregations": {
            "from_area_id": {
                "buckets": [
                    {"key": 7, "doc_count": 4, "cancellation_rateX0": {"doc_count": 1}},
                    {"key": 9, "doc_count": 2, "cancellation_rateX0": {"doc_count": 0}},
                ]
            }
        }
    }
    assert kibana.rows(kibana.CANCELLATION_BY_AREA, response) == [
        {"from_area_id": 7, "rides": 4, "cancellation_rate": 0.25},
        {"from_area_id": 9, "rides": 2, "cancellation_rate": 0.0},
    ]


def test_grafana_panels_have_unique_ids_and_the_provisioned_datasource() -> None:
    board = grafana.dashboard()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "prometheus"}
        assert panel["targets"], panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24


def test_import_url() -> None:
    assert import_url("http://kibana:5601/") == "http://kibana:5601/api/saved_objects/_import?overwrite=true"
    assert (
        import_url("http://k:5601", "ops") == "http://k:5601/s/ops/api/saved_objects/_import?overwrite=true"
    )


# --- a stand-in for Kibana's saved-objects import API ------------------------------------------


class FakeKibana:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.answers: list[tuple[int, dict[str, Any]]] = []

    async def handle(self, request: web.Request) -> web.Response:
        seen: dict[str, Any] = {
            "path": request.path,
            "query": dict(request.query),
            "xsrf": request.headers.get("kbn-xsrf"),
            "auth": request.headers.get("Authorization"),
            "content_type": request.content_type,
        }
        reader = await request.multipart()
        part = await reader.next()
        assert part is not None
        seen["field"] = part.name  # type: ignore[union-attr]
        seen["filename"] = part.filename  # type: ignore[union-attr]
        seen["body"] = await part.read()  # type: ignore[union-attr]
        self.requests.append(seen)
        if seen["xsrf"] != "true":
            return web.json_response(
                {"statusCode": 400, "message": "Request must contain a kbn-xsrf header."}, status=400
            )
        status, body = self.answers.pop(0) if self.answers else (200, self.success(seen["body"]))
        return web.json_response(body, status=status)

    @staticmethod
    def success(ndjson: bytes) -> dict[str, Any]:
        objects = [json.loads(line) for line in ndjson.decode().splitlines()]
        return {
            "success": True,
            "successCount": len(objects),
            "successResults": [
                {"type": o["type"], "id": o["id"], "meta": {"title": o["attributes"].get("title")}}
                for o in objects
            ],
        }


@pytest_asyncio.fixture
async def fake_kibana() -> AsyncIterator[tuple[str, FakeKibana]]:
    fake = FakeKibana()
    app = web.Application()
    app.router.add_post("/api/saved_objects/_import", fake.handle)
    app.router.add_post("/s/{space}/api/saved_objects/_import", fake.handle)
    server = TestServer(app)
    await server.start_server()
    yield str(server.make_url("")).rstrip("/"), fake
    await server.close()


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_import_posts_the_ndjson_as_kibana_expects(fake_kibana: tuple[str, FakeKibana]) -> None:
    url, fake = fake_kibana
    result = await import_saved_objects(url, NDJSON, user="elastic", password="s3cret")
    (seen,) = fake.requests
    assert seen["path"] == "/api/saved_objects/_import"
    assert seen["query"] == {"overwrite": "true"}
    assert seen["xsrf"] == "true"
    assert seen["auth"] == _basic("elastic", "s3cret")
    assert seen["content_type"] == "multipart/form-data"
    assert (seen["field"], seen["filename"]) == ("file", "xrides.ndjson")
    assert seen["body"] == NDJSON
    assert result.success_count == len(NDJSON.splitlines())


async def test_import_without_user_sends_no_credentials_and_honours_the_space(
    fake_kibana: tuple[str, FakeKibana],
) -> None:
    url, fake = fake_kibana
    await import_saved_objects(url, NDJSON, space="ops")
    assert fake.requests[0]["auth"] is None
    assert fake.requests[0]["path"] == "/s/ops/api/saved_objects/_import"


async def test_import_retries_while_kibana_is_starting(fake_kibana: tuple[str, FakeKibana]) -> None:
    url, fake = fake_kibana
    fake.answers = [(503, {"message": "Kibana server is not ready yet"})] * 2
    result = await import_saved_objects(url, NDJSON, retry_delay_s=0.01)
    assert len(fake.requests) == 3
    assert result.success_count > 0


async def test_import_reports_refused_objects(fake_kibana: tuple[str, FakeKibana]) -> None:
    url, fake = fake_kibana
    refused = {
        "success": False,
        "successCount": 7,
        "errors": [
            {"type": "lens", "id": "xrides-lead-time", "error": {"type": "unknown", "message": "bad state"}}
        ],
    }
    fake.answers = [(200, refused)]
    with pytest.raises(KibanaImportError, match="lens/xrides-lead-time: unknown bad state"):
        await import_saved_objects(url, NDJSON)


async def test_import_fails_on_a_client_error_without_retrying(fake_kibana: tuple[str, FakeKibana]) -> None:
    url, fake = fake_kibana
    fake.answers = [(401, {"statusCode": 401, "message": "Unauthorized"})]
    with pytest.raises(KibanaImportError, match="401"):
        await import_saved_objects(url, NDJSON, user="elastic", password="wrong")
    assert len(fake.requests) == 1


async def test_import_gives_up_when_kibana_never_answers() -> None:
    with pytest.raises(KibanaImportError, match="after 2 attempts"):
        await import_saved_objects("http://127.0.0.1:9", NDJSON, attempts=2, retry_delay_s=0.01, timeout_s=2)


async def test_cli_imports_with_credentials_from_the_environment(
    fake_kibana: tuple[str, FakeKibana], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url, fake = fake_kibana
    monkeypatch.setenv("XRIDES_KIBANA_USER", "elastic")
    monkeypatch.setenv("XRIDES_KIBANA_PASSWORD", "from-env")
    run: Callable[[list[str]], int] = cli.main
    assert await asyncio.to_thread(run, ["kibana-import", "--url", url]) == 0
    assert fake.requests[0]["auth"] == _basic("elastic", "from-env")
    assert "objects imported" in capsys.readouterr().out


async def test_cli_exits_1_with_the_reason_when_kibana_refuses(
    fake_kibana: tuple[str, FakeKibana], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, fake = fake_kibana
    fake.answers = [(400, {"message": "Unexpected token"})]
    bad = tmp_path / "bad.ndjson"
    bad.write_text("{not json\n")
    assert await asyncio.to_thread(cli.main, ["kibana-import", "--url", url, "--file", str(bad)]) == 1
    assert "400" in capsys.readouterr().err
