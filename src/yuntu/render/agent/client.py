"""The agent's side of the HTTP protocol in docs/render-agents.md: one method per call, typed
answers, retries.

Retries: connection errors, 5xx and 429 are retried with capped exponential backoff (full
jitter, `Retry-After` honoured); any other 4xx is the server's final word and raises at once.
What is left after the last attempt raises `ApiError` (the server answered; `error` is the
envelope's code, e.g. "INVALID_STATE") or `Unreachable` (no answer). A retried call may have
reached the server the first time: claim, log and heartbeat are harmless to repeat, and a
repeated finish or output of an attempt the server already closed answers 409, which the
runtime reads as "the frame is no longer ours".

Scene downloads go through a second client that carries no agent token: the signed link needs
none, and it may point at object storage the token must never be sent to."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote, urljoin

import httpx
from pydantic import BaseModel, ConfigDict, Field

from yuntu import __version__
from yuntu.kit.logging import get_logger

log = get_logger("yuntu.agent")

API_PREFIX = "/api/v1"
CHUNK = 1024 * 1024
RETRY_AFTER_CAP = 60.0
Outcome = Literal["succeeded", "failed", "agent_fault"]
T = TypeVar("T")


class AgentClientError(Exception):
    """A protocol call that did not succeed."""


class ApiError(AgentClientError):
    """The server answered with an error envelope (or, for a non-JSON answer, `HTTP_<status>`)."""

    def __init__(self, status_code: int, error: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status_code} {error}: {message}")
        self.status_code = status_code
        self.error = error
        self.message = message
        self.details = details

    @property
    def lost(self) -> bool:
        """The attempt no longer holds its frame (fenced: lease lost or task cancelled)."""
        return self.status_code == 409 and self.error == "INVALID_STATE"

    @property
    def transient(self) -> bool:
        return _retryable_status(self.status_code)


class Unreachable(AgentClientError):
    """No answer from the server (connection refused, reset, timed out) after every retry."""


class SceneError(AgentClientError):
    """The scene could not be fetched, or what came is not the scene the server described."""


# -- answers ----------------------------------------------------------------------------------


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Registration(_Answer):
    agent_id: str
    name: str
    lease_seconds: float = 60
    heartbeat_seconds: float = 10
    poll_seconds: float = 2
    claim_wait_seconds: float = 0


class HeartbeatAnswer(_Answer):
    extended: list[str] = Field(default_factory=list)
    stop: list[str] = Field(default_factory=list)


class Scene(_Answer):
    url: str
    name: str
    size: int
    sha256: str


class Assignment(_Answer):
    frame_id: str
    attempt: int
    task_id: str
    task_name: str = ""
    software: str
    software_version: str | None = None
    renderer: str
    frames: list[int]
    width: int
    height: int
    camera: str | None = None
    output_format: str = "PNG"
    scene: Scene
    lease_expires_at: str | None = None


class OutputAnswer(_Answer):
    output_id: str | None = None
    filename: str
    size: int
    sha256: str | None = None
    path: str | None = None


class FinishAnswer(_Answer):
    frame_status: str
    agent_blocked: bool = False
    cost: Any = None


class FinishReport(BaseModel):
    attempt: int
    outcome: Outcome
    exit_code: int | None = None
    duration_ms: int = 0
    core_seconds: float = 0.0
    peak_memory_bytes: int | None = None
    error: str | None = None


# -- the client -------------------------------------------------------------------------------


def _retryable_status(status: int) -> bool:
    return status >= 500 or status == 429


def _delay(attempt: int, base: float, cap: float) -> float:
    ceiling = min(cap, base * (2 ** max(0, attempt - 1)))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 (jitter, not security)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return min(RETRY_AFTER_CAP, max(0.0, float(value))) if value else None
    except ValueError:
        return None


def _api_error(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return ApiError(
            response.status_code, body["error"], str(body.get("message", "")), body.get("details")
        )
    text = response.text[:200] if response.content else response.reason_phrase
    return ApiError(response.status_code, f"HTTP_{response.status_code}", text)


class AgentClient:
    """The protocol over one `httpx.AsyncClient` (keep-alive shared by every slot)."""

    def __init__(
        self,
        server: str,
        token: str,
        *,
        attempts: int = 6,
        backoff_base: float = 0.5,
        backoff_cap: float = 10.0,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.server = server.rstrip("/")
        self.attempts = attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self._token = token
        self._timeout = timeout
        self._http = self._api_client(transport)
        self._retired: list[httpx.AsyncClient] = []
        # no token here, ever: see the module docstring
        self._plain = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=10.0),
            follow_redirects=True,
            headers={"User-Agent": f"yuntu-agent/{__version__}"},
        )

    def _api_client(self, transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.server + API_PREFIX,
            transport=transport,
            timeout=httpx.Timeout(self._timeout, connect=10.0),
            headers={
                "Authorization": f"Bearer {self._token}",
                "User-Agent": f"yuntu-agent/{__version__}",
            },
        )

    def switch_transport(self, transport: httpx.AsyncBaseTransport) -> None:
        """Send later API calls through `transport` (the embedded agent's last calls, made while
        its server no longer accepts connections: see local.py). Calls in flight keep theirs."""
        self._retired.append(self._http)
        self._http = self._api_client(transport)

    async def aclose(self) -> None:
        for client in (*self._retired, self._http, self._plain):
            await client.aclose()

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    # -- the calls ----------------------------------------------------------------------------

    async def register(
        self,
        *,
        hostname: str,
        renderers: list[str],
        slots: int,
        version: str = __version__,
        attempts: int | None = None,
    ) -> Registration:
        body = {"hostname": hostname, "renderers": renderers, "slots": slots, "version": version}
        data = await self._call("POST", "/agents/register", json=body, attempts=attempts)
        return Registration.model_validate(data)

    async def heartbeat(self, running: list[tuple[str, int]]) -> HeartbeatAnswer:
        body = {"running": [{"frame_id": f, "attempt": a} for f, a in running]}
        # a heartbeat retried past the next one is stale: keep its retries short
        data = await self._call("POST", "/agents/heartbeat", json=body, attempts=3)
        return HeartbeatAnswer.model_validate(data)

    async def claim(
        self, limit: int = 1, renderers: list[str] | None = None, wait: float = 0
    ) -> list[Assignment]:
        body: dict[str, Any] = {"limit": limit}
        if wait > 0:
            body["wait"] = wait
        if renderers is not None:
            body["renderers"] = renderers
        data = await self._call("POST", "/agents/claim", json=body, extra_seconds=wait)
        return [Assignment.model_validate(frame) for frame in (data or {}).get("frames", [])]

    async def log(
        self,
        frame_id: str,
        attempt: int,
        lines: list[dict[str, str]],
        progress: dict[str, Any] | None = None,
    ) -> bool:
        """Send log lines; True when the server says to stop the frame."""
        body: dict[str, Any] = {"attempt": attempt, "lines": lines}
        if progress is not None:
            body["progress"] = progress
        data = await self._call("POST", f"/agents/frames/{frame_id}/log", json=body, attempts=3)
        return bool((data or {}).get("stop", False))

    async def put_output(
        self, frame_id: str, attempt: int, path: Path, filename: str, frame: int
    ) -> OutputAnswer:
        """Stream one output file (its bytes as the body, Content-Length set)."""
        params = {"attempt": attempt, "frame": frame}

        async def send() -> Any:
            size = (await asyncio.to_thread(path.stat)).st_size
            return await self._http.put(
                f"/agents/frames/{frame_id}/outputs/{quote(filename, safe='')}",
                params=params,
                content=_read_file(path),
                headers={
                    "Content-Length": str(size),
                    "Content-Type": "application/octet-stream",
                },
                timeout=httpx.Timeout(self._timeout * 4, connect=10.0),
            )

        return OutputAnswer.model_validate(await self._retrying(send, None))

    async def finish(self, frame_id: str, report: FinishReport) -> FinishAnswer:
        body = report.model_dump(mode="json")
        data = await self._call("POST", f"/agents/frames/{frame_id}/finish", json=body)
        return FinishAnswer.model_validate(data)

    async def finish_many(
        self, items: list[tuple[str, FinishReport]]
    ) -> list[FinishAnswer | ApiError]:
        """Several finishes in one request: per item its answer, or the ApiError it alone got
        (a lost attempt). An error of the whole call raises, as `finish` does."""
        body = {
            "items": [
                {"frame_id": frame_id, **report.model_dump(mode="json")}
                for frame_id, report in items
            ]
        }
        data = await self._call("POST", "/agents/finish", json=body)
        answers: list[FinishAnswer | ApiError] = []
        for item in (data or {}).get("items", []):
            if item.get("error"):
                status = 404 if item["error"] == "NOT_FOUND" else 409
                answers.append(ApiError(status, item["error"], item.get("message") or ""))
            else:
                answers.append(FinishAnswer.model_validate(item))
        return answers

    async def download_scene(self, scene: Scene, destination: Path) -> None:
        """Fetch `scene` into `destination` (absent on failure), checking size and SHA-256."""
        url = urljoin(self.server + "/", scene.url)
        partial = destination.with_name(destination.name + ".part")

        async def fetch() -> None:
            digest = hashlib.sha256()
            size = 0
            try:
                async with self._plain.stream("GET", url) as response:
                    if response.status_code != 200:
                        await response.aread()
                        raise _api_error(response)
                    with partial.open("wb") as out:
                        async for chunk in response.aiter_bytes(CHUNK):
                            size += len(chunk)
                            if size > scene.size:
                                raise SceneError(f"the scene is larger than {scene.size} bytes")
                            digest.update(chunk)
                            await asyncio.to_thread(out.write, chunk)
                if size != scene.size or digest.hexdigest() != scene.sha256.lower():
                    raise SceneError("the downloaded scene does not match its size and SHA-256")
                os.replace(partial, destination)
            finally:
                partial.unlink(missing_ok=True)

        try:
            await self._retrying(fetch, None, unwrap=False)
        except (ApiError, Unreachable) as exc:
            raise SceneError(f"scene download failed: {exc}") from exc

    # -- plumbing -----------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        attempts: int | None = None,
        extra_seconds: float = 0,
    ) -> Any:
        timeout = httpx.Timeout(self._timeout + extra_seconds, connect=10.0)

        async def send() -> httpx.Response:
            return await self._http.request(method, path, json=json, timeout=timeout)

        return await self._retrying(send, attempts)

    async def _retrying(
        self,
        send: Callable[[], Awaitable[Any]],
        attempts: int | None,
        *,
        unwrap: bool = True,
    ) -> Any:
        """Run `send` until it answers, retrying what may pass later. `attempts=0`: forever."""
        limit = self.attempts if attempts is None else attempts
        attempt = 0
        while True:
            attempt += 1
            last = attempt == limit
            wait: float | None = None
            try:
                result = await send()
            except httpx.TransportError as exc:
                if last:
                    raise Unreachable(f"{self.server}: {type(exc).__name__}: {exc}") from exc
                reason = f"{type(exc).__name__}: {exc}"
            except ApiError as exc:  # raised by `send` itself (scene downloads)
                if last or not exc.transient:
                    raise
                reason = str(exc)
            else:
                if not unwrap:
                    return result
                response: httpx.Response = result
                if response.status_code < 400:
                    return _data(response)
                error = _api_error(response)
                if last or not error.transient:
                    raise error
                reason, wait = str(error), _retry_after(response)
            delay = (
                wait if wait is not None else _delay(attempt, self.backoff_base, self.backoff_cap)
            )
            log.warning("agent.retry", attempt=attempt, reason=reason, delay=round(delay, 2))
            await asyncio.sleep(delay)


def _data(response: httpx.Response) -> Any:
    try:
        body = response.json()
    except ValueError as exc:
        raise ApiError(response.status_code, "BAD_ANSWER", "the answer is not JSON") from exc
    if not isinstance(body, dict) or body.get("code") != 0:
        raise ApiError(response.status_code, "BAD_ANSWER", "the answer is not a success envelope")
    return body.get("data")


async def _read_file(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        while chunk := await asyncio.to_thread(source.read, CHUNK):
            yield chunk
