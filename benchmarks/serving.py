"""What the HTTP benchmarks share: a free port, a server process started and stopped, its CPU
time. Run as scripts, the benchmarks import this from their own folder."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

HOST = "127.0.0.1"


def yuntu() -> list[str]:
    """The installed console script next to this interpreter, else `python -m yuntu.cli`."""
    script = Path(sys.executable).with_name("yuntu")
    return [str(script)] if script.exists() else [sys.executable, "-m", "yuntu.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    """Until `url` answers 200; fails early when the server process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early with code {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server at {url} not ready after {timeout:.0f}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def in_own_process(module: str, function: str, arguments: dict[str, object], timeout: float) -> str:
    """The last line `asyncio.run(module.function(**arguments))` prints as JSON, run in a fresh
    interpreter (a load generator must not share the benchmark's, or the server's, interpreter)."""
    code = (
        "import asyncio, importlib, json, sys; sys.path.insert(0, sys.argv[1]);"
        "fn = getattr(importlib.import_module(sys.argv[2]), sys.argv[3]);"
        "print(json.dumps(asyncio.run(fn(**json.loads(sys.argv[4])))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent), module, function,
         json.dumps(arguments)],
        capture_output=True, text=True, check=True, timeout=timeout,
    ).stdout  # fmt: skip
    return out.strip().splitlines()[-1]
