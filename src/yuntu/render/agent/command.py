"""`yuntu agent`: a render node. Declared in yuntu/cli.py; the work is here."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any, NoReturn

import typer

TOKEN_ENV = "YUNTU_AGENT_TOKEN"  # noqa: S105 (a variable name)


def _exit(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def blender_threads(slots: int) -> int | None:
    """Several slots share the cores instead of each Blender taking all of them."""
    if slots <= 1:
        return None
    return max(1, (os.cpu_count() or 1) // slots)


def choose_renderers(renderers: Any, requested: list[str] | None) -> list[str]:
    """The names to offer: those requested (each known and found here), else every renderer
    found. Raises ValueError with the reason."""
    if requested is None:
        offered = renderers.detect()
        if not offered:
            raise ValueError(
                "no renderer found here: install Blender (YUNTU_RENDER_BLENDER_PATH), configure "
                "YUNTU_RENDER_TEMPLATES, or pass --renderers"
            )
        return list(offered)
    offered = list(dict.fromkeys(name.strip().lower() for name in requested if name.strip()))
    if not offered:
        raise ValueError("--renderers names no renderer")
    unknown = renderers.unknown(offered)
    if unknown:
        known = ", ".join(sorted(renderers.by_name))
        raise ValueError(f"unknown renderer {unknown[0]!r} (known here: {known})")
    absent = [name for name in offered if not renderers.by_name[name].available()]
    if absent:
        raise ValueError(f"{absent[0]}: its program is not found on this machine")
    return offered


def agent_command(
    settings: Any,
    *,
    server: str,
    token: str | None,
    renderers: str | None,
    slots: int,
    work_dir: Path | None,
    name: str | None,
) -> None:
    """Run a render agent until SIGTERM or SIGINT."""
    from yuntu.kit.logging import configure_logging
    from yuntu.render.agent.client import AgentClient, ApiError
    from yuntu.render.agent.runners import Renderers
    from yuntu.render.agent.runtime import Agent

    configure_logging(settings.log_level, settings.log_json)
    if not server.startswith(("http://", "https://")):
        _exit("--server is the server's base URL, e.g. https://yuntu.example.com")
    if not token:
        _exit(f"no agent token: set {TOKEN_ENV} (preferred: not shown by ps) or pass --token")
    if os.environ.get(TOKEN_ENV) != token:
        typer.echo(
            f"warning: --token is visible to every user of this machine (ps); prefer {TOKEN_ENV}",
            err=True,
        )
    found = Renderers.from_settings(settings, blender_threads=blender_threads(slots))
    requested = renderers.split(",") if renderers is not None else None
    try:
        offered = choose_renderers(found, requested)
    except ValueError as exc:
        _exit(str(exc))
    directory = work_dir or settings.data_dir / "render-agent"

    async def main() -> None:
        async with AgentClient(server, token) as client:
            agent = Agent(
                client, found, offered=offered, slots=slots, work_dir=directory, hostname=name
            )
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, agent.stop)
            await agent.run()

    try:
        asyncio.run(main())
    except ApiError as exc:
        _exit(f"the server refused this agent: {exc.error}: {exc.message}", 1)
    except ValueError as exc:
        _exit(str(exc))
