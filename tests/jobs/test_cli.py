"""`yuntu jobs list|show|retry|cancel|run-schedule` against a real database."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.e2e.conftest import yuntu_command
from tests.support.procs import env_for

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


def run(tmp_path, db_url, *args):
    result = subprocess.run(
        [*yuntu_command(), "jobs", *args],
        env=env_for(tmp_path, db_url),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result


async def test_jobs_cli_round_trip(tmp_path, db_url):
    created = run(tmp_path, db_url, "run-schedule", "jobs.prune")
    assert created.returncode == 0, created.stderr
    job = json.loads(created.stdout)
    assert job["kind"] == "jobs.prune" and job["status"] == "queued"
    listed = [json.loads(line) for line in run(tmp_path, db_url, "list").stdout.splitlines()]
    assert [row["id"] for row in listed] == [job["id"]]
    cancelled = json.loads(run(tmp_path, db_url, "cancel", job["id"]).stdout)
    assert cancelled["status"] == "cancelled"
    retried = json.loads(run(tmp_path, db_url, "retry", job["id"]).stdout)
    assert retried["status"] == "queued"
    shown = json.loads(run(tmp_path, db_url, "show", job["id"]).stdout)
    assert shown["id"] == job["id"] and shown["logs"] == []
    missing = run(tmp_path, db_url, "show", "42")
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr
    unknown = run(tmp_path, db_url, "run-schedule", "no-such-schedule")
    assert unknown.returncode == 1 and "no schedule named" in unknown.stderr
    assert "Traceback" not in missing.stderr + unknown.stderr
