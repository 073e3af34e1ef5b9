"""Requests/s of the package client API and of a permanent link, against `GET /health`, same run.

One `yuntu serve` (one process, as the README's first command runs it) on a temporary data dir:
the embedded default (SQLite), or PostgreSQL with `--database-url` (THAT DATABASE IS WIPED: its
`public` schema is dropped, then `yuntu serve` migrates it). Setup over HTTP and the CLI: an
administrator (`yuntu packages init-admin`), one Android package, one APK uploaded and processed
by the server's own job worker (steps `checksum,metadata`: no ClamAV), and a client API key with
`packages:read`. The server runs with `YUNTU_PACKAGES_DELIVERY=redirect` and the per-key query
limit raised out of the way (`YUNTU_PACKAGES_QUERY_PER_MINUTE`), so every call does its full work.

Measured, each with the same loader at the same concurrency (keep-alive connections):
  * health: `GET /health` (the baseline: a database `SELECT 1` and a storage check);
  * query:  `GET /api/v1/package/query?package_id=...` with `X-API-Key`;
  * dist:   `GET /dist/{id}/{download_name}`, answered 302 to a signed URL (not followed).
The load comes from `wrk` when installed (`apt-get install -y wrk`), else from an asyncio httpx
loop in a separate process (on 2 cores it saturates its own core before the server does, so its
ratios drift towards 1: use wrk for the figures). The loader, the server (and PostgreSQL) share
the machine's cores. Each target gets a warm-up, then the three alternate for `--rounds` rounds
of `--duration` seconds; the medians and the ratios to health are printed, with the server's CPU
time per request. Any answer other than 2xx/3xx (or a socket error) fails the run.

    .venv/bin/python benchmarks/dist.py [--duration 5] [--rounds 3] [--connections 50]
    .venv/bin/python benchmarks/dist.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/ytbench

Goal (issue): query / health >= 0.5 and dist / health >= 0.5, with 50 concurrent clients.
Exits 0 whatever the ratios; non-zero only when the run failed (errors included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from serving import cpu_seconds, free_port, in_own_process, stop, wait_ready, yuntu

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.app_packages import build_apk  # noqa: E402

HOST = "127.0.0.1"
API = "/api/v1"
GOAL = 0.5
PASSWORD = "bench-Passw0rd!"
QUERY_PER_MINUTE = 100_000_000
TARGETS = ("health", "query", "dist")


@dataclass(slots=True)
class Figure:
    """One measurement of one target."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu_ms: float = 0.0  # server CPU time per request during the measurement


# ---- process helpers ---------------------------------------------------------------------------


async def wipe_postgres(url: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(url.replace("+asyncpg", ""))
    try:
        await connection.execute("DROP SCHEMA IF EXISTS public CASCADE")
        await connection.execute("CREATE SCHEMA public")
    finally:
        await connection.close()


# ---- load generators ---------------------------------------------------------------------------

_WRK_RPS = re.compile(r"^Requests/sec:\s+([0-9.]+)", re.M)
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_WRK_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_WRK_PERCENTILE = re.compile(r"^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$", re.M)
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def run_wrk(url: str, headers: dict[str, str], duration: float, connections: int) -> Figure:
    # wrk counts only answers >= 400 as "Non-2xx or 3xx" and never follows redirects, so the
    # 302s of the permanent link count as successes, as they should.
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency"]
    # The httpx loader's timeout: wrk's default (2 s) would count slow answers as errors.
    cmd += ["--timeout", "10s"]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    out = subprocess.run(
        [*cmd, url], capture_output=True, text=True, check=True, timeout=duration + 60
    ).stdout
    match = _WRK_RPS.search(out)
    if not match:
        raise RuntimeError(f"could not read wrk's output:\n{out}")
    errors = 0
    if bad := _WRK_NON2XX.search(out):
        errors += int(bad.group(1))
    if socket_errors := _WRK_SOCKET.search(out):
        errors += sum(int(n) for n in socket_errors.groups())
    if errors:
        found = [m.group(0) for m in (bad, socket_errors) if m]
        print(f"    note: {url}: {'; '.join(found)}", file=sys.stderr)
    percentiles = {
        p: float(value) * _UNIT_MS[unit] for p, value, unit in _WRK_PERCENTILE.findall(out)
    }
    return Figure(float(match.group(1)), percentiles["50"], percentiles["99"], errors)


async def _httpx_load(
    url: str, headers: dict[str, str], duration: float, connections: int
) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    latencies: list[float] = []
    failures: dict[str, int] = {}
    async with httpx.AsyncClient(
        headers=headers, limits=limits, timeout=10.0, follow_redirects=False
    ) as client:
        started = time.perf_counter()
        deadline = started + duration

        async def worker() -> None:
            while (sent := time.perf_counter()) < deadline:
                try:
                    response = await client.get(url)
                    failure = str(response.status_code) if response.status_code >= 400 else ""
                except httpx.HTTPError as exc:
                    failure = type(exc).__name__
                latencies.append(time.perf_counter() - sent)
                if failure:
                    failures[failure] = failures.get(failure, 0) + 1

        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()

    def pick(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": pick(0.50),
        "p99_ms": pick(0.99),
        "failures": failures,
    }


def run_httpx(url: str, headers: dict[str, str], duration: float, connections: int) -> Figure:
    """Fallback load generator, in its own process so it does not share the server's
    interpreter (it still shares the machine's cores)."""
    out = in_own_process(
        "dist",
        "_httpx_load",
        {"url": url, "headers": headers, "duration": duration, "connections": connections},
        timeout=duration + 60,
    )
    result = json.loads(out)
    failures: dict[str, int] = result["failures"]
    if failures:
        print(f"    note: {url}: failures {failures}", file=sys.stderr)
    return Figure(result["rps"], result["p50_ms"], result["p99_ms"], sum(failures.values()))


# ---- setup -------------------------------------------------------------------------------------


def data(response: httpx.Response) -> Any:
    if response.status_code >= 300:
        raise RuntimeError(f"{response.request.method} {response.request.url}: {response.text}")
    return response.json()["data"]


def seed(base: str, env: dict[str, str], workdir: Path) -> dict[str, tuple[str, dict[str, str]]]:
    """An administrator, a processed package and a client key: the three targets' URLs and
    headers."""
    made = subprocess.run(
        [*yuntu(), "packages", "init-admin", "--username", "root", "--password", PASSWORD],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if made.returncode != 0:
        raise RuntimeError(f"yuntu packages init-admin failed: {made.stderr or made.stdout}")
    with httpx.Client(base_url=base, timeout=60) as http:
        tokens = data(
            http.post(f"{API}/auth/login", json={"account": "root", "password": PASSWORD})
        )
        admin = {"Authorization": f"Bearer {tokens['access_token']}"}
        package = data(
            http.post(
                f"{API}/packages",
                json={"name": "bench-app", "platform": "android", "description": "Benchmark"},
                headers=admin,
            )
        )
        apk = build_apk(
            workdir / "app.apk", package="com.yuntu.bench", version_name="1.0.0", version_code=1
        )
        version = data(
            http.post(
                f"{API}/packages/{package['id']}/versions",
                files={"file": ("app.apk", apk.read_bytes(), "application/octet-stream")},
                data={"release_notes": "benchmark"},
                headers=admin,
            )
        )
        deadline = time.monotonic() + 120
        while version["status"] not in ("processed", "processing_failed"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"version not processed in time: {version}")
            time.sleep(0.1)
            version = data(
                http.get(f"{API}/packages/{package['id']}/versions/{version['id']}", headers=admin)
            )
        if version["status"] != "processed" or not version["is_current"]:
            raise RuntimeError(f"processing did not publish the version: {version}")
        package = data(http.get(f"{API}/packages/{package['id']}", headers=admin))
        key = data(
            http.post(
                f"{API}/admin/api-keys",
                json={"name": "bench client", "scopes": ["packages:read"]},
                headers=admin,
            )
        )
        client = {"X-API-Key": key["secret"]}
        query_url = f"{base}{API}/package/query?package_id={package['id']}"
        dist_url = f"{base}/dist/{package['id']}/{package['download_name']}"
        # Check each target answers as measured: the query names the link, the link redirects.
        answer = data(http.get(query_url, headers=client))
        if answer["download_url"] != dist_url or answer["status"] != "available":
            raise RuntimeError(f"unexpected query answer: {answer}")
        redirect = http.get(dist_url)
        if redirect.status_code != 302 or "location" not in redirect.headers:
            raise RuntimeError(f"the permanent link did not redirect: {redirect.status_code}")
    return {
        "health": (f"{base}/health", {}),
        "query": (query_url, client),
        "dist": (dist_url, {}),
    }


# ---- the run -----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per target")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median taken)")
    parser.add_argument("--connections", type=int, default=50, help="concurrent clients")
    parser.add_argument(
        "--loader", choices=["auto", "wrk", "httpx"], default="auto", help="load generator"
    )
    parser.add_argument(
        "--database-url",
        help="postgresql+asyncpg://... of a scratch database (it is wiped); default: SQLite",
    )
    args = parser.parse_args()
    if args.database_url and not args.database_url.startswith("postgresql"):
        parser.error("--database-url takes a PostgreSQL URL (SQLite is the default)")
    loader = args.loader
    if loader == "auto":
        loader = "wrk" if shutil.which("wrk") else "httpx"
    load = run_wrk if loader == "wrk" else run_httpx

    results: dict[str, list[Figure]] = {name: [] for name in TARGETS}
    with tempfile.TemporaryDirectory(prefix="yuntu-bench-") as tmp:
        workdir = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith("YUNTU_")}
        env.update(
            {
                "YUNTU_DATA_DIR": str(workdir / "var"),
                "YUNTU_LOG_LEVEL": "WARNING",
                "YUNTU_RENDER_LOCAL_AGENT": "false",
                "YUNTU_PACKAGES_STEPS": "checksum,metadata",
                "YUNTU_PACKAGES_DELIVERY": "redirect",
                "YUNTU_PACKAGES_QUERY_PER_MINUTE": str(QUERY_PER_MINUTE),
                "PYTHONPATH": str(ROOT),
            }
        )
        if args.database_url:
            asyncio.run(wipe_postgres(args.database_url))
            env["YUNTU_DATABASE_URL"] = args.database_url
        port = free_port()
        base = f"http://{HOST}:{port}"
        log_path = workdir / "serve.log"
        with log_path.open("wb") as log:
            server = subprocess.Popen(
                [*yuntu(), "serve", "--host", HOST, "--port", str(port)],
                env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            try:
                wait_ready(f"{base}/health", server)
                targets = seed(base, env, workdir)
                database = "PostgreSQL (wiped, migrated)" if args.database_url else "SQLite"
                print(
                    f"loader={loader} connections={args.connections} "
                    f"duration={args.duration:g}s warmup={args.warmup:g}s rounds={args.rounds} "
                    f"cpus={os.cpu_count()} python={sys.version.split()[0]}\n"
                    f"database={database}; one `yuntu serve` process; delivery=redirect; "
                    f"steps=checksum,metadata; YUNTU_PACKAGES_QUERY_PER_MINUTE={QUERY_PER_MINUTE} "
                    "(per-key limit out of the way)\n"
                    f"the load generator runs on the same {os.cpu_count()} cores as the server "
                    "(and PostgreSQL): absolute figures are low, ratios matter",
                    flush=True,
                )
                for url, headers in targets.values():
                    load(url, headers, args.warmup, args.connections)
                for round_no in range(1, args.rounds + 1):
                    for name, (url, headers) in targets.items():
                        before = cpu_seconds(server.pid)
                        figure = load(url, headers, args.duration, args.connections)
                        spent = cpu_seconds(server.pid) - before
                        done = figure.rps * args.duration
                        figure.server_cpu_ms = spent / done * 1000 if done else 0.0
                        results[name].append(figure)
                        print(
                            f"  round {round_no} {name:>6}: {figure.rps:8.1f} req/s  "
                            f"p50 {figure.p50_ms:6.1f} ms  p99 {figure.p99_ms:6.1f} ms  "
                            f"errors {figure.errors}  server CPU {figure.server_cpu_ms:.2f} ms/req",
                            flush=True,
                        )
            except BaseException:
                stop(server)
                tail = log_path.read_text(errors="replace")[-3000:]
                print(f"server log (tail):\n{tail}", file=sys.stderr)
                raise
            stop(server)
        # Requests that waited the pool timeout for a database connection (answered 503).
        exhausted = log_path.read_text(errors="replace").count("database_pool_exhausted")

    medians = {
        name: Figure(
            statistics.median(f.rps for f in figures),
            statistics.median(f.p50_ms for f in figures),
            statistics.median(f.p99_ms for f in figures),
            sum(f.errors for f in figures),
            statistics.median(f.server_cpu_ms for f in figures),
        )
        for name, figures in results.items()
    }
    labels = {
        "health": "GET /health",
        "query": f"GET {API}/package/query",
        "dist": "GET /dist/{id}/{name} (302)",
    }
    print("medians:")
    for name, figure in medians.items():
        print(
            f"  {labels[name]:32} {figure.rps:8.1f} req/s  p50 {figure.p50_ms:6.1f} ms  "
            f"p99 {figure.p99_ms:6.1f} ms  errors {figure.errors}  "
            f"server CPU {figure.server_cpu_ms:.2f} ms/req"
        )
    health = medians["health"].rps
    for name in ("query", "dist"):
        ratio = medians[name].rps / health if health else 0.0
        verdict = "PASS" if ratio >= GOAL else "MISS"
        print(f"ratio {name} / health = {ratio:.3f}  (goal >= {GOAL}: {verdict})")
    if exhausted:
        print(f"server log: {exhausted} x database_pool_exhausted (503 after the pool timeout)")
    errors = sum(figure.errors for figure in medians.values())
    if errors:
        print(f"FAILED: {errors} answers other than 2xx/3xx (or socket errors)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
