"""`yuntu drive ...`: storage consistency checks for operators."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from yuntu.settings import Settings

drive_app = typer.Typer(help="Drive storage checks.", no_args_is_help=True)


@drive_app.command("fsck")
def fsck(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable report")] = False,
    deep: Annotated[bool, typer.Option(help="Also compare every object's size")] = False,
    no_storage: Annotated[bool, typer.Option(help="Check the database only")] = False,
    delete_orphans: Annotated[
        bool,
        typer.Option(help="Delete stored objects no row points at (stop uploads first)"),
    ] = False,
) -> None:
    """Check blob reference counts, drive usage and reservations, upload task counters and the
    stored objects. Exit status 1 when anything is inconsistent."""
    from yuntu.drive import fsck as checker
    from yuntu.jobs.cli import _run

    async def work(db: Any) -> dict[str, Any]:
        report = await checker.run(db, storage=not no_storage, deep=deep)
        result = report.as_dict()
        if delete_orphans and report.orphans:
            result["deleted_orphans"] = await checker.delete_orphans(db, report)
        return result

    result = _run(Settings(), work)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        for name, count in result["checked"].items():
            typer.echo(f"checked {count} {name}")
        for problem in result["problems"]:
            typer.echo(f"PROBLEM {problem}")
        for key in result["orphan_objects"]:
            typer.echo(f"ORPHAN {key}")
        typer.echo("clean" if result["clean"] else "NOT CLEAN")
    if not result["clean"] and not result.get("deleted_orphans"):
        raise typer.Exit(1)
