"""`yuntu ledger ...` and `yuntu rewards ...`: ledger checks and hand-run rewards."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from yuntu.settings import Settings

ledger_app = typer.Typer(help="Ledger checks.", no_args_is_help=True)
rewards_app = typer.Typer(help="Subscriber rewards.", no_args_is_help=True)


@ledger_app.command("verify")
def verify(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable report")] = False,
) -> None:
    """Recompute every ledger invariant: balances equal the sums of transfers, each asset sums
    to zero, no user balance below zero, holds, reversals, orders and bills consistent. Exit
    status 1 when anything is wrong."""
    from yuntu.jobs.cli import _run
    from yuntu.ledger import verify as checker

    async def work(db: Any) -> dict[str, Any]:
        async with db.read_sessionmaker() as session:
            return (await checker.verify(session)).as_dict()

    result = _run(Settings(), work)
    if as_json:
        typer.echo(json.dumps(result, indent=2, default=str))
    else:
        typer.echo(
            f"checked {result['accounts']} accounts, {result['transfers']} transfers, "
            f"{result['holds']} holds"
        )
        for problem in result["problems"]:
            typer.echo(f"PROBLEM {problem}")
        typer.echo("ok" if result["ok"] else "NOT OK")
    if not result["ok"]:
        raise typer.Exit(1)


@rewards_app.command("run")
def run_rewards(
    week: Annotated[
        str | None, typer.Option(help="ISO week such as 2026-W48 (default: the current week)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable summary")] = False,
) -> None:
    """Pay the weekly subscriber reward by hand: recorded failures first, then every eligible
    subscriber not yet paid for the week (never twice). Exit status 1 when a payment failed
    (it is recorded and retried on the next run)."""
    from yuntu.jobs.cli import _run
    from yuntu.kit.db import utcnow
    from yuntu.kit.logging import configure_logging
    from yuntu.ledger import rewards
    from yuntu.ledger.reward_runs import check_week, run_week
    from yuntu.settings import ConfigError

    try:
        settings = Settings()
    except (ConfigError, ValueError) as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    now = utcnow()
    week = week or rewards.iso_week(now)
    try:
        check_week(week, now)
    except ValueError as exc:
        typer.echo(f"error: invalid --week: {exc}", err=True)
        raise typer.Exit(2) from None
    if not settings.weekly_reward_enabled:
        typer.echo("error: weekly rewards are disabled (YUNTU_WEEKLY_REWARD_ENABLED)", err=True)
        raise typer.Exit(1)
    # The run's structured log line goes to stderr; stdout keeps only the summary.
    configure_logging(settings.log_level, settings.log_json)

    async def work(db: Any) -> dict[str, Any]:
        summary = await run_week(
            db,
            week,
            points=settings.weekly_reward_points,
            plans=settings.weekly_reward_plans,
            batch=settings.weekly_reward_batch,
            now=now,
        )
        return summary.as_dict()

    result = _run(settings, work)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        typer.echo(
            f"week {result['week']}: {result['eligible']} eligible, {result['paid']} paid, "
            f"{result['already_paid']} already paid, {result['failed']} failed, "
            f"{result['retried']} earlier failures retried"
        )
    if result["failed"]:
        raise typer.Exit(1)
