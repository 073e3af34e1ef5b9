"""Live servers for the end-to-end tests: `yuntu serve` in a subprocess on a free port.

Each server gets its own data directory and database: SQLite (the embedded default under the data
dir) and, when YUNTU_TEST_DATABASE_URL is set, a fresh PostgreSQL database created next to that
one (`<name>_srv_<hex>`) and dropped afterwards. The session-wide test database itself is left to
tests/conftest.py's `migrated_databases`, which other tests reset at will."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from sqlalchemy.engine import URL, make_url

from tests.conftest import PG_URL, free_port

STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
# uvicorn shuts down gracefully on SIGTERM (stops accepting, finishes requests, runs the lifespan
# shutdown) and then re-raises the signal, so a clean stop exits with -SIGTERM (or 0).
CLEAN_EXIT_CODES = (0, -signal.SIGTERM)


def yuntu_command() -> list[str]:
    """The installed console script next to this interpreter, else `python -m yuntu.cli`."""
    script = Path(sys.executable).with_name("yuntu")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "yuntu.cli"]


def base_env(data_dir: Path, database_url: str | None, **extra: str) -> dict[str, str]:
    """The parent's environment without any YUNTU_* setting, plus what this server needs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("YUNTU_")}
    env.update(
        {
            "YUNTU_DATA_DIR": str(data_dir),
            "YUNTU_LOG_LEVEL": "INFO",
            "YUNTU_LOG_JSON": "true",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if database_url:
        env["YUNTU_DATABASE_URL"] = database_url
    env.update(extra)
    return env


# ---- a fresh PostgreSQL database per server ------------------------------------------------------


def _asyncpg_kwargs(url: URL) -> dict[str, object]:
    return {
        "host": url.host or "127.0.0.1",
        "port": url.port or 5432,
        "user": url.username or "postgres",
        "password": url.password,
        "database": url.database,
    }


async def _pg_admin(url: URL, statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(**_asyncpg_kwargs(url))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextlib.contextmanager
def fresh_postgres_database(tag: str) -> Iterator[str]:
    """CREATE DATABASE <test db>_<tag>_<hex> on the test server; DROP it (forcefully) after."""
    base = make_url(PG_URL)
    name = f"{base.database}_{tag}_{secrets.token_hex(3)}"
    assert name.replace("_", "").isalnum(), name
    asyncio.run(_pg_admin(base, f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(_pg_admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# ---- the server process --------------------------------------------------------------------------


@dataclass
class LiveServer:
    backend: str
    base_url: str
    env: dict[str, str]
    workdir: Path
    log_path: Path
    process: subprocess.Popen[bytes]
    returncode: int | None = None
    admin: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run another `yuntu` command against the same data dir and database."""
        return subprocess.run(
            [*yuntu_command(), *args],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def stop(self) -> int:
        """SIGTERM, then wait for a graceful exit (uvicorn finishes the lifespan). Idempotent."""
        if self.returncode is None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
                try:
                    self.process.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=STOP_TIMEOUT)
                    self.returncode = -9
                    return self.returncode
            self.returncode = self.process.returncode
        return self.returncode


def _wait_healthy(server: LiveServer) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    last: str = ""
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"yuntu serve exited with {server.process.returncode}:\n{server.log()[-4000:]}"
            )
        try:
            response = httpx.get(f"{server.base_url}/health", timeout=2)
            if response.status_code == 200:
                return
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.TransportError as exc:
            last = repr(exc)
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(
        f"yuntu serve not healthy after {STARTUP_TIMEOUT}s ({last}):\n{server.log()}"
    )


@contextlib.contextmanager
def running_server(backend: str, workdir: Path, **extra_env: str) -> Iterator[LiveServer]:
    """`yuntu serve --host 127.0.0.1 --port <free>` on `backend`, healthy, stopped afterwards."""
    with contextlib.ExitStack() as stack:
        database_url = None
        if backend == "postgres":
            database_url = stack.enter_context(fresh_postgres_database("srv"))
        data_dir = workdir / "var"
        env = base_env(data_dir, database_url, **extra_env)
        port = free_port()
        log_path = workdir / "server.log"
        log_file = stack.enter_context(log_path.open("wb"))
        process = subprocess.Popen(
            [*yuntu_command(), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            cwd=workdir,  # no stray .env from the repository
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        server = LiveServer(
            backend=backend,
            base_url=f"http://127.0.0.1:{port}",
            env=env,
            workdir=workdir,
            log_path=log_path,
            process=process,
        )
        try:
            _wait_healthy(server)
            yield server
        finally:
            code = server.stop()
        assert code in CLEAN_EXIT_CODES, f"yuntu serve exited with {code}:\n{server.log()[-4000:]}"


def create_admin(server: LiveServer, username: str = "root", password: str | None = None) -> dict:
    """`yuntu admin create-user --role admin` with the server's environment."""
    password = password or f"Adm1n-{secrets.token_urlsafe(12)}"
    result = server.cli(
        "admin", "create-user", "--username", username, "--password", password, "--role", "admin"
    )
    assert result.returncode == 0, result.stderr
    server.admin = {"username": username, "password": password}
    return server.admin
