"""The local render agent of the embedded mode: one Agent inside `yuntu serve`, talking to its
own server over HTTP like any other agent.

- Where the server is: `yuntu serve` sets `app.state.local_agent_url` (from `local_url(host,
  port)`) before uvicorn runs. Without it (an app served some other way, tests over ASGI) there
  is no local agent.
- When: `settings.render_local_agent`, and only where the job worker runs (`yuntu serve
  --no-worker` replicas run none).
- What it offers: `settings.render_local_agent_renderers`, else Blender when its binary is
  found plus every template renderer whose program is found; nothing found, no agent.
- Its token: `render.agents.ensure_local_agent` (the agent row for this host, a fresh token).
- Start-up: the lifespan runs before uvicorn accepts connections, so the Agent registers with
  retries until the server answers.
- Shutdown: by the time the lifespan shuts down, uvicorn has stopped accepting connections, so
  the agent's last calls (finishing its frames as agent_fault) go to the app in-process through
  an ASGI transport: the same endpoints, without a socket.

In app.py's lifespan:
    app.state.local_agent = await start_local_agent(app)    # after the worker starts
    ...
    await stop_local_agent(app.state.local_agent)           # first thing at shutdown
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass
from typing import Any

import httpx

from yuntu.kit.logging import get_logger
from yuntu.render.agent.client import AgentClient
from yuntu.render.agent.command import blender_threads
from yuntu.render.agent.runners import Renderers
from yuntu.render.agent.runtime import Agent

log = get_logger("yuntu.agent")

STOP_TIMEOUT = 15.0


def local_url(host: str, port: int) -> str:
    """The URL a process on this machine reaches `yuntu serve --host HOST --port PORT` at."""
    host = host.strip().strip("[]")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:  # a name
        return f"http://{host}:{port}"
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    if address.version == 6:
        return f"http://[{address}]:{port}"
    return f"http://{address}:{port}"


@dataclass
class LocalAgent:
    app: Any
    agent: Agent
    client: AgentClient
    task: asyncio.Task[None]

    async def stop(self) -> None:
        await stop_local_agent(self)


def local_renderers(settings: Any, renderers: Renderers) -> list[str]:
    configured = settings.render_local_agent_renderers
    if configured is None:
        return renderers.detect()
    offered = list(dict.fromkeys(name.strip().lower() for name in configured if name.strip()))
    unknown = renderers.unknown(offered)
    if unknown:
        log.warning("render.local_agent.unknown_renderers", renderers=unknown)
    return [name for name in offered if name not in unknown]


async def start_local_agent(app: Any) -> LocalAgent | None:
    """Start the local agent as a task of the running loop, or None when there is none to run."""
    from yuntu.render.agents import ensure_local_agent

    settings = app.state.settings
    url = getattr(app.state, "local_agent_url", None)
    runs_worker = settings.workers > 0 and getattr(app.state, "run_workers", True)
    if not settings.render_local_agent or not runs_worker or url is None:
        return None
    slots = settings.render_local_agent_slots
    renderers = Renderers.from_settings(settings, blender_threads=blender_threads(slots))
    offered = local_renderers(settings, renderers)
    if not offered:
        log.info("render.local_agent.none", reason="no renderer found")
        return None
    async with app.state.db.transaction() as session:
        _row, token = await ensure_local_agent(session, offered, slots)
    client = AgentClient(url, token)
    agent = Agent(
        client,
        renderers,
        offered=offered,
        slots=slots,
        work_dir=settings.data_dir / "render-agent",
        stop_timeout=STOP_TIMEOUT,
    )
    task = asyncio.create_task(agent.run(), name="yuntu-local-agent")
    task.add_done_callback(_report_end)
    log.info("render.local_agent.started", url=url, renderers=offered, slots=slots)
    return LocalAgent(app=app, agent=agent, client=client, task=task)


def _report_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("render.local_agent.ended", exc_info=task.exception())


async def stop_local_agent(local: LocalAgent | None) -> None:
    """Stop it: running frames are killed and finished as agent_fault (through the app itself,
    see the module docstring). Safe to call with None."""
    if local is None:
        return
    local.client.switch_transport(httpx.ASGITransport(app=local.app))
    local.agent.stop()
    try:
        await asyncio.wait_for(asyncio.shield(local.task), STOP_TIMEOUT + 5)
    except TimeoutError:
        local.task.cancel()
        await asyncio.gather(local.task, return_exceptions=True)
    except Exception as exc:  # reported by _report_end; shutting down goes on
        log.debug("render.local_agent.stop_error", error=repr(exc))
    finally:
        await local.client.aclose()
