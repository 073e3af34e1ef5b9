"""The `yuntu` command: serve, db, admin, config, version."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Annotated

import typer

from yuntu import __version__
from yuntu.settings import ConfigError, Settings

app = typer.Typer(
    help="Yuntu: one backend for four products.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
admin_app = typer.Typer(help="Administrative tasks.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")


def _settings() -> Settings:
    try:
        settings = Settings()
        settings.resolve_secret_key()
    except (ConfigError, ValueError) as exc:
        typer.echo(f"configuration error: {exc}", err=True)
        raise typer.Exit(2) from None
    return settings


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command("config")
def show_config() -> None:
    """Print the effective settings (secrets masked)."""
    typer.echo(json.dumps(_settings().masked(), indent=2, default=str))


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default YUNTU_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default YUNTU_PORT)")] = None,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="Do not run background workers in-process")
    ] = False,
) -> None:
    """Apply pending migrations (unless YUNTU_AUTO_MIGRATE=false) and serve the API."""
    import uvicorn

    from yuntu.app import create_app
    from yuntu.kit import migrate

    settings = _settings()
    settings.ensure_data_dir()
    if settings.auto_migrate:
        migrate.upgrade(settings.effective_database_url)
    application = create_app(settings)
    application.state.run_workers = not no_worker
    uvicorn.run(
        application,
        host=host or settings.host,
        port=port or settings.port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
    )


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION (default head)."""
    from yuntu.kit import migrate

    settings = _settings()
    settings.ensure_data_dir()
    migrate.upgrade(settings.effective_database_url, revision)
    typer.echo(f"database at {revision}")


@admin_app.command("create-user")
def create_user(
    username: Annotated[str, typer.Option(help="Login name")],
    password: Annotated[
        str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True, help="Password")
    ],
    email: Annotated[str | None, typer.Option()] = None,
    role: Annotated[str, typer.Option(help="user or admin")] = "user",
) -> None:
    """Create a user (or the first administrator with --role admin)."""
    from yuntu.identity import service
    from yuntu.kit import ids
    from yuntu.kit.db import Database
    from yuntu.kit.errors import AppError

    if role not in ("user", "admin"):
        typer.echo("role must be user or admin", err=True)
        raise typer.Exit(2)
    settings = _settings()
    ids.configure(settings.node_id)

    async def run() -> int:
        db = Database(settings.effective_database_url)
        try:
            async with db.transaction() as session:
                user = await service.create_user(
                    session,
                    username=username,
                    email=email,
                    phone=None,
                    password=password,
                    role=role,
                )
                return user.id
        finally:
            await db.dispose()

    try:
        user_id = asyncio.run(run())
    except AppError as exc:
        detail = f" {exc.details}" if exc.details else ""
        typer.echo(f"error: {exc.spec.name}{detail}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps({"id": str(user_id), "username": username, "role": role}))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
