"""`yuntu rewards run` and `yuntu ledger verify`, invoked through the real command line (typer's
runner, in a thread so the command runs its own event loop as it does from a shell)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import Result
from sqlalchemy import text
from typer.testing import CliRunner

from tests.ledger.conftest import make_user
from tests.ledger.test_rewards import WEEK, failing_reward, point_balances, seed_subscribers
from tests.ledger.test_transfers import credit
from yuntu.cli import app as cli_app
from yuntu.kit.db import Database, utcnow
from yuntu.ledger import rewards

pytestmark = pytest.mark.anyio


@pytest.fixture
def cli(ledger_db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.chdir(tmp_path)  # no stray .env
    env = {"YUNTU_DATABASE_URL": ledger_db.url, "YUNTU_DATA_DIR": str(tmp_path / "var")}

    async def invoke(*args: str, **extra: str) -> Result:
        runner = CliRunner()
        return await anyio.to_thread.run_sync(
            lambda: runner.invoke(cli_app, list(args), env={**env, **extra})
        )

    return invoke


async def test_rewards_run_by_hand(ledger_db: Database, cli: Any) -> None:
    users = await seed_subscribers(ledger_db, WEEK, 3)
    first = await cli("rewards", "run", "--week", WEEK, "--json")
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout) == {
        "week": WEEK,
        "eligible": 3,
        "paid": 3,
        "already_paid": 0,
        "failed": 0,
        "retried": 0,
    }
    assert "weekly_rewards_run" in first.stderr  # the run's structured log line
    second = await cli("rewards", "run", "--week", WEEK, YUNTU_WEEKLY_REWARD_POINTS="9")
    assert second.exit_code == 0, second.output
    assert second.stdout.strip() == (
        f"week {WEEK}: 3 eligible, 0 paid, 3 already paid, 0 failed, 0 earlier failures retried"
    )
    assert await point_balances(ledger_db) == dict.fromkeys(users, 2000)

    current = await cli("rewards", "run", "--json", YUNTU_WEEKLY_REWARD_POINTS="9")
    assert current.exit_code == 0, current.output
    assert json.loads(current.stdout)["week"] == rewards.iso_week(utcnow())


async def test_rewards_run_exits_1_when_a_payment_failed(ledger_db: Database, cli: Any) -> None:
    users = await seed_subscribers(ledger_db, WEEK, 2, with_ineligible=False)
    async with failing_reward(ledger_db, users[0], WEEK):
        failed = await cli("rewards", "run", "--week", WEEK, "--json")
    assert failed.exit_code == 1
    assert json.loads(failed.stdout)["failed"] == 1
    retried = await cli("rewards", "run", "--week", WEEK, "--json")
    assert retried.exit_code == 0, retried.output
    assert json.loads(retried.stdout) == {
        "week": WEEK,
        "eligible": 2,
        "paid": 1,
        "already_paid": 1,
        "failed": 0,
        "retried": 1,
    }


@pytest.mark.parametrize(
    ("week", "message"),
    [
        ("2026-48", "no such ISO week"),
        ("2025-W53", "no such ISO week"),  # 2025 has 52 ISO weeks
        ("2099-W01", "has not started"),
    ],
)
async def test_rewards_run_refuses_bad_weeks(cli: Any, week: str, message: str) -> None:
    result = await cli("rewards", "run", "--week", week)
    assert result.exit_code == 2
    assert message in result.stderr and result.stdout == ""


async def test_rewards_run_disabled(cli: Any) -> None:
    result = await cli("rewards", "run", YUNTU_WEEKLY_REWARD_ENABLED="false")
    assert result.exit_code == 1 and "disabled" in result.stderr


async def test_ledger_verify_finds_a_tampered_balance(ledger_db: Database, cli: Any) -> None:
    alice = await make_user(ledger_db, "alice")
    await credit(ledger_db, alice, 500, "seed")
    clean = await cli("ledger", "verify")
    assert clean.exit_code == 0, clean.output
    assert clean.output.splitlines()[-1] == "ok"

    tamper = "UPDATE ledger_accounts SET balance = balance + :delta WHERE user_id = :user"
    async with ledger_db.transaction() as session:
        await session.execute(text(tamper), {"delta": 1, "user": alice})
    try:
        broken = await cli("ledger", "verify")
        assert broken.exit_code == 1
        assert "PROBLEM" in broken.output and "balance_equals_transfers" in broken.output
        assert broken.output.splitlines()[-1] == "NOT OK"
        report = await cli("ledger", "verify", "--json")
        assert report.exit_code == 1
        parsed = json.loads(report.stdout)
        assert parsed["ok"] is False
        checks = {problem["check"] for problem in parsed["problems"]}
        assert {"balance_equals_transfers", "asset_sums_to_zero"} <= checks
    finally:  # the fixture's own verify must find the book clean again
        async with ledger_db.transaction() as session:
            await session.execute(text(tamper), {"delta": -1, "user": alice})
