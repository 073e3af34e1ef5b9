"""`yuntu serve` as a real process on a free port, spoken to over TCP: startup with migrations,
health, the API documents, the whole auth round trip, request ids, the error envelope, the body
limit as uvicorn delivers it, the CLI against the same data, and a clean SIGTERM shutdown."""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import BACKENDS
from tests.e2e.conftest import CLEAN_EXIT_CODES, LiveServer, create_admin, running_server

pytestmark = pytest.mark.slow

API = "/api/v1"
PASSWORD = "e2e-Correct-horse-42"
REQUEST_ID = "e2e-request-7f3a9c"


@pytest.fixture(scope="module", params=BACKENDS)
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp(f"serve-{request.param}")
    with running_server(request.param, workdir) as live:
        create_admin(live)
        yield live


@pytest.fixture
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        yield client


def envelope(response: httpx.Response, status: int = 200) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["code"] == 0 and body["message"] == "success", body
    return body["data"]


def error(response: httpx.Response, status: int, name: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message", "error", "data", "details"}, body
    assert body["error"] == name and body["code"] // 1000 == status and body["data"] is None
    assert "Traceback" not in response.text
    return body


def test_health_reports_components_with_latency(http, server):
    response = http.get("/health")
    data = envelope(response)
    assert data["status"] == "ok" and data["version"]
    assert data["mode"] == ("distributed" if server.backend == "postgres" else "embedded")
    for name in ("database", "storage"):
        component = data["components"][name]
        assert component["status"] == "ok"
        assert isinstance(component["latency_ms"], int | float) and component["latency_ms"] >= 0
    assert response.headers["x-request-id"]


def test_embedded_default_keeps_its_files_in_the_data_dir(server):
    data_dir = server.workdir / "var"
    assert (data_dir / "secret_key").is_file()  # generated and persisted in development
    assert ((data_dir / "secret_key").stat().st_mode & 0o077) == 0
    if server.backend == "sqlite":
        assert (data_dir / "yuntu.db").is_file()


def test_openapi_document(http):
    response = http.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.") and document["info"]["title"] == "Yuntu API"
    paths = document["paths"]
    for path, method in [
        (f"{API}/auth/register", "post"),
        (f"{API}/auth/login", "post"),
        (f"{API}/auth/refresh", "post"),
        (f"{API}/auth/logout", "post"),
        (f"{API}/auth/me", "get"),
        (f"{API}/auth/sessions/{{session_id}}", "delete"),
        (f"{API}/users/me", "put"),
        (f"{API}/admin/users", "get"),
        ("/health", "get"),
    ]:
        assert method in paths[path], (path, method)
    for path, operations in paths.items():
        for method, operation in operations.items():
            assert operation.get("summary"), (method, path)


@pytest.mark.parametrize(("path", "marker"), [("/docs", "swagger"), ("/redoc", "redoc")])
def test_api_docs_pages(http, path, marker):
    response = http.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert marker in response.text.lower() and "/openapi.json" in response.text


def test_register_login_me_refresh_logout(http, server):
    registered = envelope(
        http.post(
            f"{API}/auth/register",
            json={
                "username": f"e2e-{server.backend}",
                "email": "e2e@example.com",
                "password": PASSWORD,
            },
        ),
        201,
    )
    user_id = registered["user"]["id"]
    assert isinstance(user_id, str) and user_id.isdigit()

    login = envelope(
        http.post(f"{API}/auth/login", json={"account": "E2E@example.com", "password": PASSWORD})
    )
    assert login["token_type"] == "Bearer" and login["user"]["id"] == user_id
    auth = {"Authorization": f"Bearer {login['access_token']}"}

    me = envelope(http.get(f"{API}/auth/me", headers=auth))
    assert me["id"] == user_id and me["email"] == "e2e@example.com"
    assert me["created_at"].endswith("Z")

    sessions = envelope(http.get(f"{API}/auth/sessions", headers=auth))
    assert [s["current"] for s in sessions if s["id"] == login["session_id"]] == [True]

    rotated = envelope(
        http.post(f"{API}/auth/refresh", json={"refresh_token": login["refresh_token"]})
    )
    assert rotated["refresh_token"] != login["refresh_token"]
    assert rotated["session_id"] == login["session_id"]
    auth = {"Authorization": f"Bearer {rotated['access_token']}"}
    assert envelope(http.get(f"{API}/auth/me", headers=auth))["id"] == user_id

    revoked = envelope(http.post(f"{API}/auth/logout", json={}, headers=auth))
    assert revoked == {"revoked": 1}
    error(http.get(f"{API}/auth/me", headers=auth), 401, "SESSION_REVOKED")
    # A logged-out refresh token is dead (revoked, not rotated: no reuse alarm).
    error(
        http.post(f"{API}/auth/refresh", json={"refresh_token": rotated["refresh_token"]}),
        401,
        "SESSION_REVOKED",
    )
    # The registration's own session is untouched by logging out another one.
    first = {"Authorization": f"Bearer {registered['access_token']}"}
    assert envelope(http.get(f"{API}/auth/me", headers=first))["id"] == user_id


def test_refresh_token_reuse_revokes_the_family(http, server):
    login = envelope(
        http.post(
            f"{API}/auth/login",
            json={"account": server.admin["username"], "password": server.admin["password"]},
        )
    )
    rotated = envelope(
        http.post(f"{API}/auth/refresh", json={"refresh_token": login["refresh_token"]})
    )
    error(
        http.post(f"{API}/auth/refresh", json={"refresh_token": login["refresh_token"]}),
        401,
        "TOKEN_REUSED",
    )
    error(
        http.get(f"{API}/auth/me", headers={"Authorization": f"Bearer {rotated['access_token']}"}),
        401,
        "SESSION_REVOKED",
    )


def test_admin_created_by_the_cli_can_administer(http, server):
    login = envelope(
        http.post(
            f"{API}/auth/login",
            json={"username": server.admin["username"], "password": server.admin["password"]},
        )
    )
    assert login["user"]["role"] == "admin"
    auth = {"Authorization": f"Bearer {login['access_token']}"}
    page = envelope(http.get(f"{API}/admin/users", params={"page_size": 5}, headers=auth))
    assert page["page"] == 1 and page["page_size"] == 5 and page["total"] >= 1
    assert server.admin["username"] in [u["username"] for u in page["items"]]
    # The same CLI refuses a duplicate cleanly, without a traceback.
    result = server.cli(
        "admin",
        "create-user",
        "--username",
        server.admin["username"],
        "--password",
        "another-Passw0rd",
    )
    assert result.returncode == 1 and "USERNAME_TAKEN" in result.stderr
    assert "Traceback" not in result.stderr


def test_request_id_is_echoed_or_generated(http, server):
    response = http.get("/health", headers={"X-Request-ID": REQUEST_ID})
    assert response.headers["x-request-id"] == REQUEST_ID
    generated = http.get("/health").headers["x-request-id"]
    assert generated and generated != REQUEST_ID
    # A hostile id (spaces, quotes, too long) is replaced, never reflected.
    hostile = http.get("/health", headers={"X-Request-ID": 'a b"<script>' + "x" * 200})
    assert hostile.headers["x-request-id"].isalnum()
    # Errors carry it too, and the log line names it.
    missing = http.get(f"{API}/does-not-exist", headers={"X-Request-ID": REQUEST_ID + "-404"})
    assert missing.headers["x-request-id"] == REQUEST_ID + "-404"
    # The access log line is written once the response has gone out: give it a moment.
    deadline = time.monotonic() + 5
    while True:
        log_lines = [line for line in server.log().splitlines() if REQUEST_ID + "-404" in line]
        if log_lines or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert log_lines, "the request id should appear in the server log"
    record = json.loads(log_lines[-1])
    assert record["request_id"] == REQUEST_ID + "-404" and record["status"] == 404


@pytest.mark.parametrize("path", ["/nope", f"{API}/nope", f"{API}/auth/me/extra"])
def test_unknown_route_is_an_enveloped_404(http, path):
    body = error(http.get(path, headers={"Accept-Language": "en"}), 404, "ROUTE_NOT_FOUND")
    assert body["message"] == "No such endpoint"


def test_wrong_method_is_an_enveloped_405(http):
    response = http.delete(f"{API}/auth/login")
    error(response, 405, "METHOD_NOT_ALLOWED")
    assert "POST" in response.headers["allow"]


def test_malformed_json_over_tcp(http):
    response = http.post(
        f"{API}/auth/login",
        content=b'{"account": "x", ',
        headers={"Content-Type": "application/json"},
    )
    error(response, 400, "MALFORMED_JSON")


def test_oversized_bodies_over_tcp(http, server):
    big = b'{"nickname": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    response = http.post(
        f"{API}/auth/register", content=big, headers={"Content-Type": "application/json"}
    )
    error(response, 413, "PAYLOAD_TOO_LARGE")

    def chunks() -> Iterator[bytes]:
        yield b'{"username": "chunky", "password": "correct-horse-42", "nickname": "'
        for _ in range(40):
            yield b"y" * 65536
        yield b'"}'

    response = http.post(
        f"{API}/auth/register", content=chunks(), headers={"Content-Type": "application/json"}
    )
    error(response, 413, "PAYLOAD_TOO_LARGE")
    # Nothing was created, and the server still answers.
    error(
        http.post(f"{API}/auth/login", json={"account": "chunky", "password": "correct-horse-42"}),
        401,
        "INVALID_CREDENTIALS",
    )
    assert http.get("/health").status_code == 200


def test_garbage_on_the_socket_does_not_take_the_server_down(http, server):
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"\x00\x01GARBAGE / HTTP/9.9\r\n\r\n")
        with contextlib.suppress(OSError):
            sock.recv(1024)
    assert http.get("/health").status_code == 200


def test_metrics_are_exposed(http):
    http.get("/health")
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "yuntu_http_requests_total" in response.text


def test_logs_are_json_and_never_contain_secrets(server):
    lines = [line for line in server.log().splitlines() if line.strip()]
    assert lines
    for line in lines:
        if line.startswith("{"):
            json.loads(line)
    text = server.log()
    assert PASSWORD not in text and server.admin["password"] not in text
    assert "Traceback" not in text


def test_sigterm_stops_the_server_cleanly(server):
    """Runs last for each backend (pytest keeps definition order within a module parameter)."""
    assert server.stop() in CLEAN_EXIT_CODES, server.log()[-4000:]
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.base_url}/health", timeout=2)
    log = server.log()
    assert "Traceback" not in log and "shutdown failed" not in log.lower()
