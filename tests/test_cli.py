"""The `yuntu` command, run as a subprocess the way an operator runs it."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from tests.conftest import API, bearer, make_settings
from yuntu import __version__
from yuntu.app import create_app
from yuntu.kit import migrate
from yuntu.settings import Settings

pytestmark = pytest.mark.slow

STRONG_SECRET = "Zq7-cli-test-secret-4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c"
PASSWORD = "correct-horse-42"


def _cli_env(tmp_path: Path, env: dict[str, str]) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("YUNTU_")}
    environment["YUNTU_DATA_DIR"] = str(tmp_path / "var")
    environment.update(env)
    return environment


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m yuntu.cli ARGS` in tmp_path (no stray .env), with only the YUNTU_ variables
    given here plus YUNTU_DATA_DIR=<tmp_path>/var."""
    return run_many(tmp_path, [(list(args), env)])[0]


def run_many(
    tmp_path: Path, commands: list[tuple[list[str], dict[str, str]]]
) -> list[subprocess.CompletedProcess[str]]:
    """Run several CLI invocations at once (each costs an interpreter start)."""
    processes = [
        (
            args,
            subprocess.Popen(
                [sys.executable, "-m", "yuntu.cli", *args],
                cwd=tmp_path,
                env=_cli_env(tmp_path, env),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
        )
        for args, env in commands
    ]
    results = []
    for args, process in processes:
        stdout, stderr = process.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(args, process.returncode, stdout, stderr))
    return results


def db_path(tmp_path: Path) -> Path:
    return tmp_path / "var" / "yuntu.db"


def query(tmp_path: Path, sql: str, *params: object) -> list[tuple]:
    with sqlite3.connect(db_path(tmp_path)) as connection:
        return connection.execute(sql, params).fetchall()


def assert_clean_failure(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


@pytest.fixture
def upgraded(tmp_path: Path) -> Path:
    result = run_cli(tmp_path, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    return tmp_path


def test_version(tmp_path):
    result = run_cli(tmp_path, "version")
    assert result.returncode == 0 and result.stdout.strip() == __version__


def test_no_arguments_prints_help(tmp_path):
    result = run_cli(tmp_path)
    assert "serve" in result.stdout + result.stderr and "Traceback" not in result.stderr


def test_db_upgrade_creates_the_sqlite_database(upgraded):
    assert db_path(upgraded).is_file()
    tables = {row[0] for row in query(upgraded, "SELECT name FROM sqlite_master")}
    assert {"users", "api_keys", "audit_log", "auth_sessions", "alembic_version"} <= tables
    assert query(upgraded, "SELECT version_num FROM alembic_version") == [
        (migrate.head_revision(),)
    ]
    # Migrations need no signing key: none was generated.
    assert not (upgraded / "var" / "secret_key").exists()
    again = run_cli(upgraded, "db", "upgrade")
    assert again.returncode == 0, again.stderr


def test_db_upgrade_failure_is_one_clear_line_without_the_password(tmp_path):
    result = run_cli(
        tmp_path,
        "db",
        "upgrade",
        YUNTU_DATABASE_URL="postgresql+asyncpg://user:hunter2pw@127.0.0.1:1/db",
    )
    assert_clean_failure(result, "migration failed")
    assert "hunter2pw" not in result.stderr + result.stdout


@pytest.mark.anyio
async def test_create_admin_then_log_in(upgraded):
    result = run_cli(
        upgraded,
        "admin",
        "create-user",
        "--username",
        "Root",
        "--password",
        PASSWORD,
        "--email",
        "root@example.com",
        "--role",
        "admin",
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert isinstance(out["id"], str) and out["id"].isdigit()
    assert out["username"] == "Root" and out["role"] == "admin"
    assert PASSWORD not in result.stdout + result.stderr

    rows = query(
        upgraded, "SELECT id, username_key, email_key, role, status, password_hash FROM users"
    )
    assert len(rows) == 1
    user_id, username_key, email_key, role, status, password_hash = rows[0]
    assert (str(user_id), username_key, email_key) == (out["id"], "root", "root@example.com")
    assert (role, status) == ("admin", "active")
    assert password_hash.startswith("$argon2id$") and PASSWORD not in password_hash

    # The server on that database lets the new administrator in.
    settings = make_settings(upgraded, f"sqlite+aiosqlite:///{db_path(upgraded)}")
    app = create_app(settings)
    async with LifespanManager(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://yuntu.test") as http:
            login = await http.post(
                f"{API}/auth/login", json={"account": "root", "password": PASSWORD}
            )
            assert login.status_code == 200, login.text
            tokens = login.json()["data"]
            assert tokens["user"]["id"] == out["id"] and tokens["user"]["role"] == "admin"
            users = await http.get(f"{API}/admin/users", headers=bearer(tokens))
            assert users.status_code == 200 and users.json()["data"]["total"] == 1


def test_create_user_refuses_duplicates_weak_passwords_and_bad_roles(upgraded):
    first = run_cli(upgraded, "admin", "create-user", "--username", "ops", "--password", PASSWORD)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["role"] == "user"

    duplicate = run_cli(
        upgraded, "admin", "create-user", "--username", "OPS", "--password", PASSWORD
    )
    assert_clean_failure(duplicate, "USERNAME_TAKEN", "already taken")
    assert duplicate.stdout == ""

    create = ["admin", "create-user", "--username"]
    cases = [
        ([*create, "ops2", "--password", "short1"], ("WEAK_PASSWORD", "8 characters")),
        ([*create, "ops2", "--password", "1234567890"], ("WEAK_PASSWORD", "digits")),
        ([*create, "ops-two-x", "--password", "OPS-TWO-X"], ("WEAK_PASSWORD", "username")),
        ([*create, "x1x", "--password", PASSWORD, "--role", "root"], ("role",)),
        ([*create, "a b", "--password", PASSWORD], ("VALIDATION_ERROR", "username")),
    ]
    results = run_many(upgraded, [(args, {}) for args, _ in cases])
    for (_, needles), result in zip(cases, results, strict=True):
        assert_clean_failure(result, *needles)
        assert result.stdout == ""

    assert query(upgraded, "SELECT username FROM users") == [("ops",)]


def test_create_user_before_db_upgrade_says_what_to_do(tmp_path):
    result = run_cli(tmp_path, "admin", "create-user", "--username", "u1", "--password", PASSWORD)
    assert_clean_failure(result, "yuntu db upgrade")
    assert not db_path(tmp_path).exists()  # no empty database file left behind


def test_config_masks_secrets(tmp_path):
    result = run_cli(
        tmp_path,
        "config",
        YUNTU_SECRET_KEY=STRONG_SECRET,
        YUNTU_DATABASE_URL="postgresql+asyncpg://user:pw@host/db",
        YUNTU_REDIS_URL="redis://:redispass99@cache:6379/0",
        YUNTU_STORAGE_URL="s3://AKIDEXAMPLE:s3secret77@minio:9000/bucket?session_token=tok55",
        YUNTU_WECHAT_APP_SECRET="wxsecret88",
        YUNTU_TRUSTED_PROXIES="10.0.0.0/8, 127.0.0.1",
    )
    assert result.returncode == 0, result.stderr
    for leaked in (STRONG_SECRET, "pw", "redispass99", "s3secret77", "tok55", "wxsecret88"):
        assert leaked not in result.stdout, leaked
    config = json.loads(result.stdout)
    assert config["database_url"] == "postgresql+asyncpg://user:********@host/db"
    assert config["redis_url"] == "redis://:********@cache:6379/0"
    assert config["storage_url"].startswith("s3://AKIDEXAMPLE:********@minio:9000/bucket")
    assert "YUNTU_SECRET_KEY" in config["secret_key"] and "*" in config["secret_key"]
    assert config["wechat_app_secret"] == "********"
    assert config["trusted_proxies"] == ["10.0.0.0/8", "127.0.0.1"]
    assert config["data_dir"] == str(tmp_path / "var")


def test_config_says_where_the_generated_secret_lives(tmp_path):
    key_file = (tmp_path / "var" / "secret_key").resolve()
    before = json.loads(run_cli(tmp_path, "config").stdout)
    assert before["secret_key"].startswith("not set") and str(key_file) in before["secret_key"]
    assert not key_file.exists()  # `config` only reports

    secret = Settings(_env_file=None, data_dir=tmp_path / "var").resolve_secret_key()
    result = run_cli(tmp_path, "config")
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stdout)["secret_key"]
    assert line == f"generated, persisted in {key_file}"
    assert secret not in result.stdout


def test_production_refuses_missing_or_weak_secret(tmp_path):
    secrets = [None, "", "  ", "changeme", "CHANGEME", "short-but-random-Xk29", "ab" * 32]
    commands = []
    for secret in secrets:
        env = {"YUNTU_ENV": "production"}
        if secret is not None:
            env["YUNTU_SECRET_KEY"] = secret
        commands += [(["config"], env), (["serve", "--port", "1"], env)]
    for (args, env), result in zip(commands, run_many(tmp_path, commands), strict=True):
        assert result.returncode == 2, (args, env, result)
        assert_clean_failure(result, "YUNTU_SECRET_KEY", "production")
        assert result.stdout == ""
        secret = env.get("YUNTU_SECRET_KEY", "").strip()
        if secret:
            assert secret not in result.stderr
    assert not (tmp_path / "var" / "secret_key").exists()


def test_production_with_a_strong_secret_shows_config(tmp_path):
    result = run_cli(tmp_path, "config", YUNTU_ENV="production", YUNTU_SECRET_KEY=STRONG_SECRET)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["env"] == "production"


def test_invalid_setting_is_a_configuration_error(tmp_path):
    result = run_cli(tmp_path, "config", YUNTU_TRUSTED_PROXIES="not-a-network")
    assert result.returncode == 2
    assert_clean_failure(result, "configuration error", "not-a-network")


def test_packages_init_admin_creates_the_first_administrator_once(upgraded):
    first = run_cli(
        upgraded,
        "packages",
        "init-admin",
        "--username",
        "boss",
        "--password",
        PASSWORD,
        "--api-key",
    )
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert out["role"] == "admin" and out["api_key"].startswith("yk_")
    # the key is stored hashed, scoped to packages:admin
    rows = query(upgraded, "SELECT key_hash, scopes FROM api_keys")
    assert len(rows) == 1 and out["api_key"] not in rows[0][0]
    assert json.loads(rows[0][1]) == ["packages:admin"]

    second = run_cli(
        upgraded, "packages", "init-admin", "--username", "boss2", "--password", PASSWORD
    )
    assert_clean_failure(second, "administrator already exists")
    assert query(upgraded, "SELECT username, role FROM users") == [("boss", "admin")]
