"""Running `yuntu` commands as real processes for the multi-process tests."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from tests.e2e.conftest import base_env, yuntu_command

REPO_ROOT = Path(__file__).resolve().parents[2]


class Proc:
    def __init__(self, args: list[str], env: dict[str, str], workdir: Path, name: str) -> None:
        self.log_path = workdir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [*yuntu_command(), *args],
            env=env,
            cwd=workdir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
        return self.process.returncode

    def wait_for_log(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"process exited {self.process.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise TimeoutError(f"{text!r} not logged:\n{self.log()[-3000:]}")


def env_for(workdir: Path, database_url: str, **extra: str) -> dict[str, str]:
    env = base_env(workdir / "var", database_url, **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("YUNTU_SECRET_KEY", "multi-process-test-secret-0123456789abcdef")
    env.setdefault("YUNTU_AUTO_MIGRATE", "false")
    return env


def start_worker(workdir: Path, database_url: str, name: str, *args: str, **extra: str) -> Proc:
    env = env_for(
        workdir,
        database_url,
        YUNTU_PLUGINS="tests.support.job_handlers",
        YUNTU_WORKER_LEASE_SECONDS="2",
        YUNTU_WORKER_POLL_INTERVAL_SECONDS="0.2",
        **extra,
    )
    proc = Proc(["worker", *args], env, workdir, name)
    proc.wait_for_log("worker_started")
    return proc


def start_server(workdir: Path, database_url: str, port: int, name: str, **extra: str) -> Proc:
    env = env_for(workdir, database_url, **extra)
    proc = Proc(
        ["serve", "--host", "127.0.0.1", "--port", str(port), "--no-worker"], env, workdir, name
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        if proc.process.poll() is not None:
            raise RuntimeError(proc.log())
        time.sleep(0.1)
    raise TimeoutError(proc.log())
