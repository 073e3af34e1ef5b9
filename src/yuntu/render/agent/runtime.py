"""The render agent: register, then one loop per slot (claim, fetch the scene, render, stream
the log, upload the outputs, finish) and a heartbeat loop, as docs/render-agents.md describes.

Outcomes: the renderer missing or unable to start, the scene not fetched, the server not
reachable for an upload, or the agent stopping are `agent_fault` (the frame waits again at no
cost to it); a non-zero exit, a frame without output, a chunk the renderer cannot take, or an
output the server refuses (quota) are `failed`. An attempt the server no longer holds (409
INVALID_STATE on any call, or named in a heartbeat's or log answer's `stop`) has its renderer
killed and is not finished. A 401 means the token was revoked: the agent stops.

`stop()` (what SIGTERM and SIGINT call in `yuntu agent`) stops claiming, kills the running
renderers and finishes their frames as `agent_fault`, so they run elsewhere at once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from yuntu import __version__
from yuntu.kit.logging import get_logger
from yuntu.render.agent.cache import DEFAULT_MAX_BYTES, SceneCache, safe_name
from yuntu.render.agent.client import (
    AgentClient,
    ApiError,
    Assignment,
    FinishAnswer,
    FinishReport,
    Outcome,
    Registration,
    SceneError,
    Unreachable,
)
from yuntu.render.agent.runners import (
    Renderer,
    RendererMissing,
    Renderers,
    RunResult,
    collect_outputs,
)
from yuntu.render.contract import (
    ChunkJob,
    FrameProgress,
    OutputFormat,
    OutputSaved,
    RenderEvent,
)
from yuntu.render.frames import describe

log = get_logger("yuntu.agent")

LOST = "lost"  # the server took the frame back: do not finish it
SHUTDOWN = "shutdown"  # the agent is stopping: finish it as agent_fault
MAX_BATCH = 500  # log lines per request
MAX_PENDING = 5000  # log lines held while the server is slow; older ones are dropped
MAX_ERROR = 2000


class _Lost(Exception):
    """The server answered that this attempt no longer holds its frame."""


def _sample_tick(event: RenderEvent | None) -> bool:
    """A renderer's line for one more sample of a frame, neither its first nor its last (Cycles
    prints one per sample): it travels as progress, not as a log line, or the task log would
    hold hundreds of lines per frame and the server would store them while the frame renders."""
    return (
        isinstance(event, FrameProgress)
        and event.sample is not None
        and event.samples is not None
        and 1 < event.sample < event.samples
    )


class _Attempt:
    def __init__(self, assignment: Assignment) -> None:
        self.assignment = assignment
        self.work: asyncio.Task[FinishReport] | None = None
        self.aborted: str | None = None
        self.lines: deque[dict[str, str]] = deque()
        self.dropped = 0
        self.progress: dict[str, Any] | None = None
        self.progress_sent: dict[str, Any] | None = None
        self.ended = asyncio.Event()

    @property
    def key(self) -> tuple[str, int]:
        return self.assignment.frame_id, self.assignment.attempt

    def abort(self, reason: str) -> None:
        if self.aborted is None or reason == LOST:
            self.aborted = reason
        if self.work is not None and not self.work.done():
            self.work.cancel()

    def add_line(self, level: str, line: str, event: RenderEvent | None = None) -> None:
        if not _sample_tick(event):
            if len(self.lines) >= MAX_PENDING:
                self.lines.popleft()
                self.dropped += 1
            self.lines.append({"level": level, "line": line})
        if isinstance(event, FrameProgress):
            percent = event.percent
            if percent is None and event.sample is not None and event.samples:
                percent = 100.0 * event.sample / event.samples
            frame = event.frame
            if frame is None and self.progress is not None:
                frame = self.progress.get("frame")
            if percent is not None:  # the server takes progress with a percentage only
                self.progress = {"frame": frame, "percent": min(100.0, max(0.0, percent))}

    def take(self) -> tuple[list[dict[str, str]], dict[str, Any] | None]:
        batch = []
        if self.dropped:
            batch.append({"level": "info", "line": f"[{self.dropped} log lines dropped]"})
            self.dropped = 0
        while self.lines and len(batch) < MAX_BATCH:
            batch.append(self.lines.popleft())
        progress = self.progress if self.progress != self.progress_sent else None
        self.progress_sent = self.progress
        return batch, progress


def _report(
    attempt: int, outcome: Outcome, error: str | None, result: RunResult | None = None
) -> FinishReport:
    measures: dict[str, Any] = {}
    if result is not None:
        measures = {
            "exit_code": result.exit_code,
            "duration_ms": result.duration_ms,
            "core_seconds": round(result.core_seconds, 3),
            "peak_memory_bytes": result.peak_memory_bytes,
        }
    return FinishReport(
        attempt=attempt,
        outcome=outcome,
        error=error[:MAX_ERROR] if error else None,
        **measures,
    )


class Agent:
    def __init__(
        self,
        client: AgentClient,
        renderers: Renderers,
        *,
        offered: list[str],
        work_dir: Path,
        slots: int = 1,
        hostname: str | None = None,
        log_interval: float = 1.0,
        stop_timeout: float = 30.0,
        cache_max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        if "#" in str(work_dir):  # Blender reads '#' in an output path as the frame number
            raise ValueError("the agent's work directory may not contain '#'")
        self.client = client
        self.renderers = renderers
        self.offered = offered
        self.slots = slots
        self.work_dir = work_dir.resolve()
        self.hostname = hostname or socket.gethostname()
        self.log_interval = log_interval
        self.stop_timeout = stop_timeout
        self.cache = SceneCache(self.work_dir / "scenes", client, cache_max_bytes)
        self.registration: Registration | None = None
        self.stats: Counter[str] = Counter()  # finished attempts by outcome, and "lost"
        self.fatal: ApiError | None = None
        self._stopping = asyncio.Event()
        self._running: dict[str, _Attempt] = {}
        self._claiming = asyncio.Lock()
        self._claimed: list[Assignment] = []  # claimed, not yet started by a slot
        self._free_slots = 0
        self._finishing = asyncio.Lock()
        self._finishes: list[tuple[str, FinishReport, asyncio.Future[FinishAnswer]]] = []

    @property
    def running(self) -> list[tuple[str, int]]:
        return [attempt.key for attempt in self._running.values()]

    def stop(self) -> None:
        """Stop claiming, kill the running renderers, finish their frames as agent_fault."""
        if self._stopping.is_set():
            return
        log.info("agent.stopping", running=len(self._running))
        self._stopping.set()
        for attempt in list(self._running.values()):
            attempt.abort(SHUTDOWN)

    async def run(self) -> None:
        """Until `stop()` (or a revoked token: raises its ApiError)."""
        attempts_dir = self.work_dir / "attempts"
        await asyncio.to_thread(shutil.rmtree, attempts_dir, True)  # a crash's leftovers
        attempts_dir.mkdir(parents=True, exist_ok=True)
        self.cache.prepare()
        self.registration = await self._register()
        if self.registration is None:
            return
        log.info(
            "agent.registered",
            agent_id=self.registration.agent_id,
            name=self.registration.name,
            renderers=self.offered,
            slots=self.slots,
        )
        heartbeat = asyncio.create_task(self._heartbeats(self.registration))
        slots = [asyncio.create_task(self._slot(self.registration)) for _ in range(self.slots)]
        try:
            await self._stopping.wait()
        finally:
            self.stop()
            _done, pending = await asyncio.wait(slots, timeout=self.stop_timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            while self._claimed:  # claimed but never started: back to waiting at once
                await self._attempt(self._claimed.pop(0))
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
            log.info("agent.stopped", **self.stats)
        if self.fatal is not None:
            raise self.fatal

    # -- loops --------------------------------------------------------------------------------

    async def _register(self) -> Registration | None:
        """Register, waiting for the server as long as it takes (the embedded agent starts
        before its server accepts connections). A 4xx answer raises."""
        failures = 0
        while not self._stopping.is_set():
            try:
                return await self.client.register(
                    hostname=self.hostname,
                    renderers=self.offered,
                    slots=self.slots,
                    version=__version__,
                    attempts=1,
                )
            except ApiError as exc:
                if not exc.transient:
                    raise
                reason = str(exc)
            except Unreachable as exc:
                reason = str(exc)
            failures += 1
            if failures in (1, 10) or failures % 100 == 0:
                log.warning("agent.register_waiting", failures=failures, reason=reason)
            await self._pause(min(5.0, 0.1 * 2**failures))
        return None

    async def _slot(self, registration: Registration) -> None:
        while not self._stopping.is_set():
            try:
                assignment = await self._next()
            except ApiError as exc:
                if self._fatal(exc):
                    return
                log.warning("agent.claim_failed", error=str(exc))
                assignment = None
            except Unreachable as exc:
                log.warning("agent.claim_failed", error=str(exc))
                assignment = None
            except Exception:
                log.exception("agent.claim_crashed")
                assignment = None
            if assignment is None:
                # after a long poll the server already waited: only a breath between claims
                idle = registration.poll_seconds if not registration.claim_wait_seconds else 0.05
                await self._pause(idle)
                continue
            await self._attempt(assignment)

    async def _next(self) -> Assignment | None:
        """The next frame for a free slot; None when the server had nothing. The slots share
        one claim at a time, asking for as many frames as slots are free then: short frames do
        not pay a request each for their claim."""
        if self._claimed:
            return self._claimed.pop(0)
        self._free_slots += 1
        try:
            async with self._claiming:
                if not self._claimed and not self._stopping.is_set():
                    self._claimed.extend(await self._claim(self._free_slots))
        finally:
            self._free_slots -= 1
        return self._claimed.pop(0) if self._claimed else None

    async def _claim(self, limit: int) -> list[Assignment]:
        """One claim, waiting on the server for work (long poll) until work comes or the agent
        stops."""
        assert self.registration is not None
        wait = self.registration.claim_wait_seconds
        claim = asyncio.create_task(self.client.claim(limit=limit, wait=wait))
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({claim, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if not claim.done():
            claim.cancel()
            await asyncio.gather(claim, return_exceptions=True)
            return []
        return claim.result()

    async def _heartbeats(self, registration: Registration) -> None:
        while True:
            await asyncio.sleep(registration.heartbeat_seconds)
            sent = dict(self.running)
            try:
                answer = await self.client.heartbeat(list(sent.items()))
            except ApiError as exc:
                if self._fatal(exc):
                    return
                log.warning("agent.heartbeat_failed", error=str(exc))
                continue
            except Unreachable as exc:
                log.warning("agent.heartbeat_failed", error=str(exc))
                continue
            for frame_id in answer.stop:
                attempt = self._running.get(frame_id)
                # only the attempt the heartbeat named: the frame may have come back since
                if attempt is not None and sent.get(frame_id) == attempt.assignment.attempt:
                    log.info("agent.frame_stopped", frame_id=frame_id, by="heartbeat")
                    attempt.abort(LOST)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    def _fatal(self, exc: ApiError) -> bool:
        if exc.status_code != 401:
            return False
        if self.fatal is None:
            log.error("agent.token_rejected", error=exc.error, message=exc.message)
            self.fatal = exc
        self.stop()
        return True

    # -- one attempt --------------------------------------------------------------------------

    async def _attempt(self, assignment: Assignment) -> None:
        attempt = _Attempt(assignment)
        self._running[assignment.frame_id] = attempt
        out_dir = self.work_dir / "attempts" / safe_name(f"{assignment.frame_id}-{attempt.key[1]}")
        flusher = asyncio.create_task(self._flush_loop(attempt))
        report: FinishReport | None = None
        try:
            if self._stopping.is_set() or attempt.aborted is not None:
                attempt.aborted = attempt.aborted or SHUTDOWN
                report = _report(assignment.attempt, "agent_fault", "the agent is shutting down")
            else:
                attempt.work = asyncio.create_task(self._work(attempt, out_dir))
                await asyncio.wait({attempt.work})
                report = self._outcome(attempt)
            attempt.ended.set()
            await flusher  # sends what is left
            if report is not None and attempt.aborted != LOST:
                await self._finish(assignment, report)
            else:
                self.stats[LOST] += 1
        finally:
            attempt.ended.set()
            if attempt.work is not None and not attempt.work.done():
                attempt.work.cancel()  # this slot itself was cancelled
                await asyncio.wait({attempt.work})
            flusher.cancel()
            self._running.pop(assignment.frame_id, None)
            await asyncio.to_thread(shutil.rmtree, out_dir, True)

    async def _finish_together(self, frame_id: str, report: FinishReport) -> FinishAnswer:
        """Finish through one request with whatever other slots finish meanwhile: while a
        finish is on its way, the next ones gather and leave together (short frames on many
        slots otherwise pay a request each)."""
        done: asyncio.Future[FinishAnswer] = asyncio.get_running_loop().create_future()
        self._finishes.append((frame_id, report, done))
        async with self._finishing:
            batch, self._finishes = self._finishes, []
            if batch:
                await self._send_finishes(batch)
        return await done

    async def _send_finishes(
        self, batch: list[tuple[str, FinishReport, asyncio.Future[FinishAnswer]]]
    ) -> None:
        try:
            if len(batch) == 1:
                frame_id, report, _done = batch[0]
                answers: list[FinishAnswer | ApiError] = [
                    await self.client.finish(frame_id, report)
                ]
            else:
                answers = await self.client.finish_many([(f, r) for f, r, _ in batch])
        except Exception as exc:  # the whole call failed: each waiting slot gets the error
            for _frame_id, _report, done in batch:
                if not done.done():
                    done.set_exception(exc)
            return
        for (_frame_id, _report, done), answer in zip(batch, answers, strict=False):
            if isinstance(answer, ApiError):
                done.set_exception(answer)
            else:
                done.set_result(answer)
        for _frame_id, _report, done in batch:
            if not done.done():
                done.set_exception(ApiError(500, "INTERNAL_ERROR", "no answer for this frame"))

    def _outcome(self, attempt: _Attempt) -> FinishReport | None:
        work = attempt.work
        number = attempt.assignment.attempt
        assert work is not None and work.done()
        if attempt.aborted == LOST:
            return None
        if work.cancelled():
            return _report(number, "agent_fault", "the agent is shutting down")
        exc = work.exception()
        if isinstance(exc, _Lost):
            attempt.aborted = LOST
            return None
        if exc is not None:
            log.error("agent.attempt_crashed", frame_id=attempt.key[0], exc_info=exc)
            return _report(number, "agent_fault", f"agent error: {type(exc).__name__}: {exc}")
        return work.result()

    async def _work(self, attempt: _Attempt, out_dir: Path) -> FinishReport:
        a = attempt.assignment
        renderer = self.renderers.find(a.software, a.renderer)
        if renderer is None:
            return _report(a.attempt, "agent_fault", f"no {a.software}/{a.renderer} on this agent")
        try:
            async with self.cache.use(a.scene) as scene:
                return await self._render(attempt, renderer, scene, out_dir)
        except SceneError as exc:
            return _report(a.attempt, "agent_fault", str(exc))

    async def _render(
        self, attempt: _Attempt, renderer: Renderer, scene: Path, out_dir: Path
    ) -> FinishReport:
        a = attempt.assignment
        try:
            job = ChunkJob(
                scene=str(scene),
                frames=tuple(a.frames),
                out_dir=str(out_dir),
                width=a.width,
                height=a.height,
                camera=a.camera,
                output_format=OutputFormat.parse(a.output_format),
            )
        except ValueError as exc:
            return _report(a.attempt, "failed", f"the frame task cannot be rendered: {exc}")
        await asyncio.to_thread(shutil.rmtree, out_dir, True)
        await asyncio.to_thread(out_dir.mkdir, parents=True)
        attempt.add_line(
            "info",
            f"yuntu agent {self.hostname}: frames {describe(job.frames)}, "
            f"{renderer.name} ({a.renderer}), attempt {a.attempt}",
        )
        # a frame the renderer says it saved is uploaded while it renders the chunk's next ones
        early: dict[str, asyncio.Task[Any]] = {}

        def sink(level: str, line: str, event: RenderEvent | None = None) -> None:
            attempt.add_line(level, line, event)
            if isinstance(event, OutputSaved) and event.frame in job.frames:
                path = Path(os.path.normpath(os.path.join(out_dir, event.path)))
                if path.parent == out_dir and str(path) not in early and path.is_file():
                    early[str(path)] = asyncio.create_task(
                        self.client.put_output(a.frame_id, a.attempt, path, path.name, event.frame)
                    )

        try:
            return await self._render_and_upload(attempt, renderer, job, sink, early)
        finally:
            for task in early.values():
                task.cancel()
            await asyncio.gather(*early.values(), return_exceptions=True)

    async def _render_and_upload(
        self,
        attempt: _Attempt,
        renderer: Renderer,
        job: ChunkJob,
        sink: Callable[..., None],
        early: dict[str, asyncio.Task[Any]],
    ) -> FinishReport:
        a = attempt.assignment
        try:
            result = await renderer.render(job, a.renderer, sink)
        except RendererMissing as exc:
            return _report(a.attempt, "agent_fault", str(exc))
        except ValueError as exc:
            return _report(a.attempt, "failed", f"the frame task cannot be rendered: {exc}")
        if result.exit_code != 0:
            reason = f"the renderer exited with code {result.exit_code}"
            if result.errors:
                reason += f": {result.errors[-1]}"
            return _report(a.attempt, "failed", reason, result)
        outputs, missing = await asyncio.to_thread(collect_outputs, job, result.saved)
        if missing and renderer.expects_outputs:
            return _report(a.attempt, "failed", f"no output for frames {describe(missing)}", result)
        for output in outputs:
            if output.frame is None:  # the server files every output under one of its frames
                attempt.add_line(
                    "warning", f"yuntu agent: {output.filename} not kept: it names no frame"
                )
                continue
            sent = early.pop(str(output.path), None)
            try:
                if sent is not None:
                    await sent
                else:
                    await self.client.put_output(
                        a.frame_id, a.attempt, output.path, output.filename, output.frame
                    )
            except ApiError as exc:
                if exc.lost:
                    raise _Lost from exc
                outcome: Outcome = "agent_fault" if exc.transient or self._fatal(exc) else "failed"
                error = f"upload of {output.filename}: {exc.error}: {exc.message}"
                return _report(a.attempt, outcome, error, result)
            except Unreachable as exc:
                return _report(a.attempt, "agent_fault", f"upload of {output.filename}: {exc}")
        return _report(a.attempt, "succeeded", None, result)

    async def _flush_loop(self, attempt: _Attempt) -> None:
        while not attempt.ended.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(attempt.ended.wait(), self.log_interval)
            try:
                await self._flush(attempt)
            except Exception:  # a log line lost is no reason to lose the frame
                log.exception("agent.log_crashed", frame_id=attempt.key[0])

    async def _flush(self, attempt: _Attempt) -> None:
        a = attempt.assignment
        for _ in range(4):  # a burst goes out in a few requests, the rest next time
            if attempt.aborted == LOST:
                return
            lines, progress = attempt.take()
            if not lines and progress is None:
                return
            try:
                stop = await self.client.log(a.frame_id, a.attempt, lines, progress)
            except ApiError as exc:
                if exc.lost:
                    stop = True
                elif self._fatal(exc):
                    return
                else:
                    log.warning("agent.log_failed", frame_id=a.frame_id, error=str(exc))
                    return
            except Unreachable as exc:
                log.warning("agent.log_failed", frame_id=a.frame_id, error=str(exc))
                return
            if stop:
                log.info("agent.frame_stopped", frame_id=a.frame_id, by="log")
                attempt.abort(LOST)
                return

    async def _finish(self, assignment: Assignment, report: FinishReport) -> None:
        try:
            answer = await self._finish_together(assignment.frame_id, report)
        except ApiError as exc:
            if exc.lost:
                self.stats[LOST] += 1
                log.info("agent.frame_lost", frame_id=assignment.frame_id)
            elif not self._fatal(exc):
                log.error("agent.finish_failed", frame_id=assignment.frame_id, error=str(exc))
            return
        except Unreachable as exc:
            log.error("agent.finish_failed", frame_id=assignment.frame_id, error=str(exc))
            return
        self.stats[report.outcome] += 1
        log.info(
            "agent.frame_finished",
            frame_id=assignment.frame_id,
            task_id=assignment.task_id,
            outcome=report.outcome,
            frame_status=answer.frame_status,
            error=report.error,
            cost=answer.cost,
            agent_blocked=answer.agent_blocked,
        )
