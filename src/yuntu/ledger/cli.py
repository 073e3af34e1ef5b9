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
