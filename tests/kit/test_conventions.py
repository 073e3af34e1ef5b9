"""API conventions: envelope, error shape, request ids, languages, pagination, times."""

from __future__ import annotations

import re

import pytest
from fastapi import Depends
from pydantic import BaseModel

from tests.conftest import API, bearer, register
from yuntu.kit.i18n import preferred_language
from yuntu.kit.schemas import Envelope, Id, Page, PageParams, make_page, page_params

pytestmark = pytest.mark.anyio

ERROR_KEYS = {"code", "message", "error", "data", "details"}


async def test_success_envelope(client):
    tokens = await register(client)
    body = (await client.get(f"{API}/auth/me", headers=bearer(tokens))).json()
    assert body["code"] == 0 and body["message"] == "success" and isinstance(body["data"], dict)


async def test_unknown_route_and_wrong_method_use_the_error_shape(client):
    missing = await client.get(f"{API}/no/such/thing")
    assert missing.status_code == 404 and set(missing.json()) == ERROR_KEYS
    assert missing.json()["code"] == 404002 and missing.json()["data"] is None
    wrong = await client.delete(f"{API}/auth/login")
    assert wrong.status_code == 405 and wrong.json()["error"] == "METHOD_NOT_ALLOWED"
    assert wrong.json()["code"] == 405001


async def test_validation_errors_list_fields(client):
    response = await client.post(f"{API}/auth/register", json={"username": 5, "password": ["x"]})
    body = response.json()
    assert response.status_code == 422 and body["code"] == 422001
    assert body["error"] == "VALIDATION_ERROR"
    fields = {item["field"] for item in body["details"]}
    assert {"body.username", "body.password"} <= fields


async def test_malformed_json(client):
    response = await client.post(
        f"{API}/auth/login", content=b'{"username": ', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400 and response.json()["error"] == "MALFORMED_JSON"


async def test_messages_in_chinese_by_default_and_english_on_request(client):
    default = (await client.get(f"{API}/auth/me")).json()["message"]
    english = (
        await client.get(f"{API}/auth/me", headers={"Accept-Language": "en-US,en;q=0.9"})
    ).json()["message"]
    chinese = (
        await client.get(f"{API}/auth/me", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"})
    ).json()
    assert default == "需要登录" and english == "Authentication required"
    assert chinese["message"] == "需要登录"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, "zh"),
        ("en", "en"),
        ("en-GB", "en"),
        ("zh-CN", "zh"),
        ("fr, en;q=0.5", "en"),
        ("zh;q=0.2, en;q=0.8", "en"),
        ("en;q=0", "zh"),
        ("en;q=abc", "zh"),
        ("*", "zh"),
    ],
)
def test_language_negotiation(header, expected):
    assert preferred_language(header) == expected


async def test_request_id_is_echoed_or_generated(client):
    echoed = await client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert echoed.headers["X-Request-ID"] == "abc-123"
    generated = await client.get("/health")
    assert re.fullmatch(r"[0-9a-f]{32}", generated.headers["X-Request-ID"])
    hostile = await client.get("/health", headers={"X-Request-ID": "x" * 500})
    assert hostile.headers["X-Request-ID"] != "x" * 500
    error = await client.get(f"{API}/missing", headers={"X-Request-ID": "err-1"})
    assert error.headers["X-Request-ID"] == "err-1"


async def test_unexpected_exception_is_a_500_envelope_without_trace(app, client):
    async def explode() -> None:
        raise RuntimeError("secret internal detail")

    app.add_api_route("/boom", explode)
    response = await client.get("/boom", headers={"Accept-Language": "en"})
    assert response.status_code == 500
    body = response.json()
    assert body == {
        "code": 500001,
        "message": "Internal server error",
        "error": "INTERNAL_ERROR",
        "data": None,
        "details": None,
    }
    assert "secret" not in response.text and "Traceback" not in response.text


async def test_times_are_rfc3339_utc(client):
    user = (await register(client))["user"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z", user["created_at"])


def test_ids_render_as_strings_and_parse_from_strings():
    class Model(BaseModel):
        id: Id

    assert Model(id="123").id == 123
    assert Model(id=5).model_dump_json() == '{"id":"5"}'
    for bad in ("-1", "0", "9" * 25, "abc", ""):
        with pytest.raises(ValueError):
            Model(id=bad)


def test_pagination_helper():
    params = PageParams(page=2, page_size=20)
    page = Page[int](**make_page(list(range(20)), 45, params))
    assert (page.total, page.pages, page.page, page.page_size) == (45, 3, 2, 20)
    assert params.offset == 20
    assert make_page([], 0, params)["pages"] == 0
    env = Envelope[Page[int]](data=page)
    assert env.code == 0


async def test_page_size_is_capped(app, client):
    async def listing(params: PageParams = Depends(page_params)) -> dict:
        return {"page": params.page, "size": params.page_size}

    app.add_api_route("/paged", listing)
    assert (await client.get("/paged?page_size=100")).json() == {"page": 1, "size": 100}
    over = await client.get("/paged?page_size=101")
    assert over.status_code == 422 and over.json()["error"] == "VALIDATION_ERROR"
    assert (await client.get("/paged?page=0")).status_code == 422


async def test_openapi_documents_every_endpoint(client):
    spec = (await client.get("/openapi.json")).json()
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            assert operation.get("summary"), f"{method.upper()} {path} lacks a summary"
    for page in ("/docs", "/redoc"):
        assert (await client.get(page)).status_code == 200


async def test_health_and_metrics(client):
    health = await client.get("/health")
    assert health.status_code == 200
    data = health.json()["data"]
    assert data["status"] == "ok" and data["version"]
    assert set(data["components"]) >= {"database", "storage"}
    assert all(c["status"] == "ok" and c["latency_ms"] >= 0 for c in data["components"].values())
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert "yuntu_http_requests_total" in metrics.text
    assert 'route="/health"' in metrics.text
