"""Requests/s of `GET /api/v1/auth/me` (valid token) against a bare FastAPI endpoint, same run.

Both servers are real processes on loopback, started the same way (uvicorn, one process, the
options `yuntu serve` uses): the Yuntu app through `yuntu serve` on the embedded default (a
temporary data dir, SQLite, nothing else), the baseline through this file's `--serve-bare` mode.
The load comes from `wrk` when installed (`apt-get install -y wrk`), else from a bounded asyncio
httpx loop in a separate process. Each target gets a warm-up, then the two alternate for
`--rounds` rounds of `--duration` seconds; the medians and their ratio are printed.

    .venv/bin/python benchmarks/auth.py [--duration 10] [--rounds 3] [--connections 32]

Goal (issue 2): ratio >= 0.5. Exits 0 whatever the ratio; non-zero only when the run failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from serving import free_port, in_own_process, stop, wait_ready

HOST = "127.0.0.1"
GOAL = 0.5
ME_PATH = "/api/v1/auth/me"
BARE_PATH = "/ping"


# ---- the baseline: a bare FastAPI endpoint served like `yuntu serve` serves Yuntu --------------


def serve_bare(port: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.get(BARE_PATH)
    async def ping() -> dict[str, object]:
        return {"code": 0, "message": "success", "data": {"pong": True}}

    # The same options as yuntu.cli.serve.
    uvicorn.run(
        app,
        host=HOST,
        port=port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
    )


# ---- process helpers ---------------------------------------------------------------------------


# ---- load generators ---------------------------------------------------------------------------

_WRK_RPS = re.compile(r"^Requests/sec:\s+([0-9.]+)", re.M)
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_WRK_ERRORS = re.compile(r"Socket errors:.*")


def run_wrk(url: str, headers: dict[str, str], duration: float, connections: int) -> float:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency"]
    for name, value in headers.items():
        cmd += ["-H", f"{name}: {value}"]
    out = subprocess.run(
        [*cmd, url], capture_output=True, text=True, check=True, timeout=duration + 60
    ).stdout
    bad = _WRK_NON2XX.search(out)
    if bad and int(bad.group(1)):
        raise RuntimeError(f"{bad.group(1)} non-2xx responses from {url}:\n{out}")
    errors = _WRK_ERRORS.search(out)
    if errors:
        print(f"    note: {errors.group(0)}", file=sys.stderr)
    match = _WRK_RPS.search(out)
    if not match:
        raise RuntimeError(f"could not read wrk's output:\n{out}")
    return float(match.group(1))


async def _httpx_load(url: str, headers: dict[str, str], duration: float, connections: int) -> int:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    done = 0
    deadline = time.monotonic() + duration
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=10.0) as client:

        async def worker() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                response = await client.get(url)
                if response.status_code != 200:
                    raise RuntimeError(f"{url} answered {response.status_code}")
                done += 1

        await asyncio.gather(*(worker() for _ in range(connections)))
    return done


def run_httpx(url: str, headers: dict[str, str], duration: float, connections: int) -> float:
    """Fallback load generator, in its own process so it does not share the server's core."""
    started = time.monotonic()
    out = in_own_process(
        "auth",
        "_httpx_load",
        {"url": url, "headers": headers, "duration": duration, "connections": connections},
        timeout=duration + 60,
    )
    elapsed = max(duration, time.monotonic() - started - 0.5)  # minus interpreter start-up
    return int(out) / elapsed


# ---- the run -----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per target")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median taken)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--loader", choices=["auto", "wrk", "httpx"], default="auto", help="load generator"
    )
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return 0

    loader = args.loader
    if loader == "auto":
        loader = "wrk" if shutil.which("wrk") else "httpx"
    load = run_wrk if loader == "wrk" else run_httpx
    yuntu_cmd = shutil.which("yuntu", path=str(Path(sys.executable).parent)) or shutil.which(
        "yuntu"
    )
    if yuntu_cmd is None:
        print("the `yuntu` command is not installed (pip install -e .)", file=sys.stderr)
        return 2

    procs: list[subprocess.Popen[bytes]] = []
    log_file = None
    with tempfile.TemporaryDirectory(prefix="yuntu-bench-") as tmp:
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith("YUNTU_")}
            env["YUNTU_DATA_DIR"] = str(Path(tmp) / "var")
            app_port, bare_port = free_port(), free_port()
            log_file = open(Path(tmp) / "yuntu.log", "wb")  # noqa: SIM115
            procs.append(
                subprocess.Popen(
                    [yuntu_cmd, "serve", "--host", HOST, "--port", str(app_port)],
                    env=env,
                    cwd=tmp,
                    stdout=log_file,
                    stderr=log_file,
                )
            )
            procs.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--serve-bare", str(bare_port)],
                    env=env,
                    cwd=tmp,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            app_base, bare_base = f"http://{HOST}:{app_port}", f"http://{HOST}:{bare_port}"
            wait_ready(f"{app_base}/health", procs[0])
            wait_ready(f"{bare_base}{BARE_PATH}", procs[1])

            registered = httpx.post(
                f"{app_base}/api/v1/auth/register",
                json={"username": "bench_user", "password": "bench-password-42"},
                timeout=30,
            )
            registered.raise_for_status()
            token = registered.json()["data"]["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            check = httpx.get(f"{app_base}{ME_PATH}", headers=auth, timeout=10)
            if check.status_code != 200 or check.json()["data"]["username"] != "bench_user":
                raise RuntimeError(f"/auth/me did not answer as expected: {check.text}")

            targets = {
                "bare": (f"{bare_base}{BARE_PATH}", {}),
                "me": (f"{app_base}{ME_PATH}", auth),
            }
            print(
                f"loader={loader} connections={args.connections} duration={args.duration:g}s "
                f"rounds={args.rounds} cpus={os.cpu_count()} python={sys.version.split()[0]}"
            )
            for url, headers in targets.values():
                load(url, headers, args.warmup, args.connections)
            results: dict[str, list[float]] = {"bare": [], "me": []}
            for round_no in range(1, args.rounds + 1):
                for name, (url, headers) in targets.items():
                    rps = load(url, headers, args.duration, args.connections)
                    results[name].append(rps)
                    print(f"  round {round_no} {name:>4}: {rps:10.1f} req/s")
        finally:
            for proc in procs:
                stop(proc)
            if log_file is not None:
                log_file.close()

    bare, me = statistics.median(results["bare"]), statistics.median(results["me"])
    ratio = me / bare if bare else 0.0
    print(f"bare FastAPI GET {BARE_PATH}:        {bare:10.1f} req/s (median)")
    print(f"Yuntu GET {ME_PATH} (token): {me:10.1f} req/s (median)")
    verdict = "meets" if ratio >= GOAL else "below"
    print(f"ratio /auth/me / bare = {ratio:.3f} ({verdict} the goal of {GOAL})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
