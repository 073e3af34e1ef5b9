"""The `yuntu` command: serve, worker, agent, db, admin, config, version."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from yuntu import __version__
from yuntu.drive.cli import drive_app
from yuntu.jobs.cli import jobs_app, worker_command
from yuntu.ledger.cli import ledger_app, rewards_app
from yuntu.settings import ConfigError, Settings, mask_url

app = typer.Typer(
    help="Yuntu: one backend for four products.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
admin_app = typer.Typer(help="Administrative tasks.", no_args_is_help=True)
packages_app = typer.Typer(help="Package distribution.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")
app.add_typer(packages_app, name="packages")
app.add_typer(jobs_app, name="jobs")
app.add_typer(drive_app, name="drive")
app.add_typer(ledger_app, name="ledger")
app.add_typer(rewards_app, name="rewards")


def _settings(*, check_secret: bool = False) -> Settings:
    """Load the settings, or exit 2 with the reason. `check_secret` applies the production rules
    for the signing key (without generating one)."""
    try:
        settings = Settings()
        if check_secret:
            settings.validate_secret_key()
    except (ConfigError, ValueError) as exc:
        _config_error(exc)
    return settings


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _config_error(exc: Exception) -> NoReturn:
    typer.echo(f"configuration error: {exc}", err=True)
    raise typer.Exit(2)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


@app.command("config")
def show_config() -> None:
    """Print the effective settings (secrets masked)."""
    settings = _settings(check_secret=True)
    try:
        masked = settings.masked()
    except ConfigError as exc:
        _config_error(exc)
    typer.echo(json.dumps(masked, indent=2, default=str))


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default YUNTU_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default YUNTU_PORT)")] = None,
    no_worker: Annotated[
        bool, typer.Option("--no-worker", help="Do not run background workers in-process")
    ] = False,
) -> None:
    """Apply pending migrations (unless YUNTU_AUTO_MIGRATE=false) and serve the API."""
    settings = _settings(check_secret=True)  # refuse a bad configuration before heavy imports
    try:
        settings.resolve_secret_key()
    except (ConfigError, OSError) as exc:
        _config_error(exc)

    import uvicorn

    from yuntu.app import create_app
    from yuntu.kit import migrate

    settings.ensure_data_dir()
    if settings.auto_migrate:
        try:
            migrate.upgrade(settings.effective_database_url)
        except Exception as exc:  # one clear line (URL masked) instead of a traceback
            _fail(f"migration failed: {type(exc).__name__}: {_first_line(exc)}")
    from yuntu.render.agent.local import local_url

    application = create_app(settings)
    application.state.run_workers = not no_worker
    bind_host, bind_port = host or settings.host, port or settings.port
    application.state.local_agent_url = local_url(bind_host, bind_port)  # the embedded agent's
    uvicorn.run(
        application,
        host=bind_host,
        port=bind_port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        server_header=False,
    )


@app.command()
def worker(
    queues: Annotated[
        str | None, typer.Option(help="Comma-separated queues (default: default)")
    ] = None,
    concurrency: Annotated[
        int | None, typer.Option(min=1, max=256, help="Jobs run at once")
    ] = None,
) -> None:
    """Run a job worker (distributed mode: next to `yuntu serve --no-worker`)."""
    worker_command(_settings(), queues, concurrency)


@app.command()
def agent(
    server: Annotated[str, typer.Option(help="The server's base URL, e.g. https://yuntu.example")],
    token: Annotated[
        str | None,
        typer.Option(
            envvar="YUNTU_AGENT_TOKEN",
            show_envvar=True,
            help="Agent token (yta_...). Prefer the environment variable: an option is "
            "visible to every user in `ps`",
        ),
    ] = None,
    renderers: Annotated[
        str | None,
        typer.Option(help="Comma-separated, e.g. blender,maya/arnold (default: every one found)"),
    ] = None,
    slots: Annotated[int, typer.Option(min=1, max=64, help="Frame tasks run at once")] = 1,
    work_dir: Annotated[
        Path | None, typer.Option(help="Scene cache and renders (default DATA_DIR/render-agent)")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="The host name this node reports (default: its own)")
    ] = None,
) -> None:
    """Run a render agent: pull frame tasks from SERVER over HTTP until SIGTERM or SIGINT."""
    from yuntu.render.agent.command import agent_command

    agent_command(
        _settings(),
        server=server,
        token=token,
        renderers=renderers,
        slots=slots,
        work_dir=work_dir,
        name=name,
    )


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations up to REVISION (default head)."""
    from yuntu.kit import migrate

    settings = _settings()
    settings.ensure_data_dir()
    try:
        migrate.upgrade(settings.effective_database_url, revision)
    except Exception as exc:  # a clear line instead of a traceback (bad URL, server down...)
        _fail(f"migration failed: {type(exc).__name__}: {_first_line(exc)}")
    typer.echo(f"database at {revision}: {mask_url(settings.effective_database_url)}")


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
    if role not in ("user", "admin"):
        _fail("--role must be user or admin", 2)
    user_id, _ = _create_user(username, password, email, role)
    typer.echo(json.dumps({"id": str(user_id), "username": username, "email": email, "role": role}))


@packages_app.command("init-admin")
def packages_init_admin(
    username: Annotated[str, typer.Option(help="Login name")],
    password: Annotated[
        str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True, help="Password")
    ],
    email: Annotated[str | None, typer.Option()] = None,
    api_key: Annotated[
        bool,
        typer.Option("--api-key", help="Also create an API key with packages:admin (printed once)"),
    ] = False,
) -> None:
    """Create the first administrator of a new installation; refused once one exists (add more
    with `yuntu admin create-user --role admin`)."""
    user_id, secret = _create_user(
        username, password, email, "admin", first_admin=True, api_key=api_key
    )
    out: dict[str, Any] = {"id": str(user_id), "username": username, "role": "admin"}
    if secret is not None:
        out["api_key"] = secret
    typer.echo(json.dumps(out))


def _create_user(
    username: str,
    password: str,
    email: str | None,
    role: str,
    *,
    first_admin: bool = False,
    api_key: bool = False,
) -> tuple[int, str | None]:
    from sqlalchemy import select
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from yuntu.identity import apikeys, service
    from yuntu.kit import ids
    from yuntu.kit.db import Database
    from yuntu.kit.errors import AppError
    from yuntu.models.identity import User, UserRole

    settings = _settings()
    ids.configure(settings.node_id)
    url = make_url(settings.effective_database_url)
    if (
        url.get_backend_name() == "sqlite"
        and url.database not in (None, "", ":memory:")
        and not Path(str(url.database)).exists()
    ):  # do not leave an empty database file behind
        _fail(f"no database at {url.database}; run `yuntu db upgrade` first")

    async def run() -> tuple[int, str | None] | None:
        db = Database(settings.effective_database_url)
        try:
            async with db.transaction() as session:
                if first_admin:
                    found = await session.scalar(
                        select(User.id).where(User.role == UserRole.ADMIN).limit(1)
                    )
                    if found is not None:
                        return None
                user = await service.create_user(
                    session,
                    username=username,
                    email=email,
                    phone=None,
                    password=password,
                    role=role,
                )
                secret = None
                if api_key:
                    _, secret = await apikeys.create(
                        session,
                        name=f"{username} (init-admin)",
                        scopes=["packages:admin"],
                        created_by=user.id,
                        expires_at=None,
                    )
                return user.id, secret
        finally:
            await db.dispose()

    try:
        created = asyncio.run(run())
    except AppError as exc:
        _fail(_describe_app_error(exc))
    except SQLAlchemyError as exc:
        _fail(
            f"database not ready ({type(exc).__name__}: {_first_line(exc)}); "
            "run `yuntu db upgrade` first"
        )
    if created is None:
        _fail(
            "an administrator already exists; add more with `yuntu admin create-user --role admin`"
        )
    return created


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return mask_url(text.splitlines()[0][:300]) if text else ""


def _describe_app_error(exc: Exception) -> str:
    """`USERNAME_TAKEN: Username already taken (password: at least 8 characters)`."""
    from yuntu.kit.errors import AppError

    assert isinstance(exc, AppError)
    text = f"{exc.spec.name}: {exc.message or exc.spec.en}"
    if isinstance(exc.details, list):
        parts = [
            f"{str(d.get('field', '')).removeprefix('body.')}: {d.get('message', '')}"
            for d in exc.details
            if isinstance(d, dict)
        ]
        if parts:
            text += f" ({'; '.join(parts)})"
    elif exc.details:
        text += f" ({exc.details})"
    return text


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
