"""Renderers as an agent runs them: an Assignment's software picks a `Renderer`, which turns a
`ChunkJob` into processes, reads their output lines into events and measures them.

- `blender`: one Blender process (blender.build_command), the assignment's `renderer` being the
  engine (cycles, eevee, workbench).
- command templates: the operator's `render_templates`, by name ("maya/arnold" or "maya").
  A template named `<software>/<renderer>` wins over one named `<software>`, and both win over
  the built-in renderers, so an operator can replace how Blender is run.
- `noop`: a no-op renderer that starts no process. It "renders" every frame at once, writing a
  tiny placeholder file per frame (not an image) or nothing at all. It exists for the scheduling
  benchmark and for tests, and an agent only offers it when told to (`--renderers noop`).

Processes: each runs in its own session, so in its own process group, with no stdin and an
environment without any `YUNTU_*` variable (the agent's token, or inside `yuntu serve` the
server's database URL and secret key, are none of a scene's business). Stopping an attempt
(cancelling `render`) sends SIGTERM to the group, then SIGKILL after a grace period; whatever is
left in the group when the main process exits is killed too.

Measures: the agent reaps its renderer itself with `wait4`, whose resource usage covers the
process and every descendant it waited for: `core_seconds` is their user + system time and
`peak_memory_bytes` the largest resident size among them. `getrusage(RUSAGE_CHILDREN)` deltas
would mix in every other child the agent's process reaps meanwhile (other slots, or the server's
own subprocesses inside `yuntu serve`), and asyncio's subprocesses reap out of reach of
`wait4`, so the process is started with `subprocess.Popen` and only its pipes go to asyncio.
POSIX only."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yuntu.render import blender
from yuntu.render.command_template import CommandTemplate
from yuntu.render.contract import (
    ChunkJob,
    FrameProgress,
    OutputSaved,
    RendererError,
    RenderEvent,
)

NOOP = "noop"
BLENDER = "blender"
MAX_LINE = 8192  # characters kept of one output line
_READ = 65536
_DRAIN_SECONDS = 2.0  # how long pipes may stay open after the renderer exited
_DIGITS = re.compile(r"(\d+)(?!.*\d)")

LineSink = Callable[[str, str, RenderEvent | None], None]
"""Receives each output line: (level "info" or "error", the line, the event it parses into)."""


class RendererMissing(Exception):
    """The renderer cannot run on this agent (not installed, not executable): an agent fault."""


@dataclass
class RunResult:
    exit_code: int
    duration_ms: int = 0
    core_seconds: float = 0.0
    peak_memory_bytes: int = 0
    errors: list[str] = field(default_factory=list)  # RendererError messages, in order
    saved: list[OutputSaved] = field(default_factory=list)

    def add(self, other: RunResult) -> None:
        """Fold in the next command of the same attempt."""
        self.exit_code = other.exit_code
        self.duration_ms += other.duration_ms
        self.core_seconds += other.core_seconds
        self.peak_memory_bytes = max(self.peak_memory_bytes, other.peak_memory_bytes)
        self.errors += other.errors
        self.saved += other.saved


class Renderer:
    name: str
    expects_outputs = True  # a frame without an output file failed

    def available(self) -> bool:
        """Whether its program is found here (an agent offers only what it can run)."""
        raise NotImplementedError

    async def render(self, job: ChunkJob, engine: str, sink: LineSink) -> RunResult:
        """Render `job` into `job.out_dir`. ValueError: this chunk cannot be rendered as asked
        (a failure of the frame); RendererMissing: the program cannot start (an agent fault)."""
        raise NotImplementedError


class NoopRenderer(Renderer):
    """The no-op renderer: no process, no image; see the module docstring."""

    name = NOOP

    def __init__(self, write_files: bool = True) -> None:
        self.write_files = self.expects_outputs = write_files

    def available(self) -> bool:
        return True

    async def render(self, job: ChunkJob, engine: str, sink: LineSink) -> RunResult:
        started = time.monotonic()
        result = RunResult(exit_code=0)
        for frame in job.frames:
            if not self.write_files:  # silent too: the scheduling benchmark's renderer
                continue
            sink("info", f"noop: frame {frame}", FrameProgress(frame=frame, percent=100.0))
            path = Path(job.out_dir) / f"frame_{frame:04d}.{job.output_format.extension}"
            path.write_bytes(f"yuntu no-op renderer: frame {frame}\n".encode())
            saved = OutputSaved(path=str(path), frame=frame)
            result.saved.append(saved)
            sink("info", f"noop: saved {path.name}", saved)
        result.duration_ms = int((time.monotonic() - started) * 1000)
        return result


class ProcessRenderer(Renderer):
    """A renderer that runs commands one after another, stopping at the first that fails."""

    terminate_grace: float = 2.0

    def program(self) -> str:
        raise NotImplementedError

    def commands(self, job: ChunkJob, engine: str) -> list[list[str]]:
        raise NotImplementedError

    def parse_line(self, line: str) -> RenderEvent | None:
        raise NotImplementedError

    def available(self) -> bool:
        return shutil.which(self.program()) is not None

    async def render(self, job: ChunkJob, engine: str, sink: LineSink) -> RunResult:
        commands = self.commands(job, engine)
        total = RunResult(exit_code=0)
        for argv in commands:
            result = RunResult(exit_code=0)

            def on_line(line: str, result: RunResult = result) -> None:
                event = self.parse_line(line)
                if isinstance(event, RendererError):
                    result.errors.append(event.message)
                elif isinstance(event, OutputSaved):
                    result.saved.append(event)
                sink("error" if isinstance(event, RendererError) else "info", line, event)

            measured = await run_process(
                argv, cwd=job.out_dir, on_line=on_line, terminate_grace=self.terminate_grace
            )
            result.exit_code = measured.exit_code
            result.duration_ms = measured.duration_ms
            result.core_seconds = measured.core_seconds
            result.peak_memory_bytes = measured.peak_memory_bytes
            total.add(result)
            if result.exit_code != 0:
                break
        return total


class BlenderRenderer(ProcessRenderer):
    name = BLENDER

    def __init__(self, executable: str = "blender", threads: int | None = None) -> None:
        self.executable = executable
        self.threads = threads

    def program(self) -> str:
        return self.executable

    def commands(self, job: ChunkJob, engine: str) -> list[list[str]]:
        return [
            blender.build_command(
                job, renderer=engine, executable=self.executable, threads=self.threads
            )
        ]

    def parse_line(self, line: str) -> RenderEvent | None:
        return blender.parse_line(line)


class TemplateRenderer(ProcessRenderer):
    def __init__(self, name: str, template: CommandTemplate) -> None:
        self.name = name
        self.template = template

    def program(self) -> str:
        return shlex.split(self.template.template)[0]

    def commands(self, job: ChunkJob, engine: str) -> list[list[str]]:
        return self.template.build(job)

    def parse_line(self, line: str) -> RenderEvent | None:
        return self.template.parse_line(line)


class Renderers:
    """Every renderer this agent knows, by the names agents register."""

    def __init__(self, renderers: Mapping[str, Renderer]) -> None:
        self.by_name = {name.lower(): renderer for name, renderer in renderers.items()}

    @classmethod
    def from_settings(
        cls,
        settings: Any,
        *,
        blender_threads: int | None = None,
        noop_writes_files: bool | None = None,
    ) -> Renderers:
        """Built-ins plus `settings.render_templates` (a RenderSettings)."""
        if noop_writes_files is None:
            noop_writes_files = settings.render_noop_outputs
        found: dict[str, Renderer] = {
            BLENDER: BlenderRenderer(settings.render_blender_path, threads=blender_threads),
            NOOP: NoopRenderer(write_files=noop_writes_files),
        }
        for name, template in settings.command_templates().items():
            found[name] = TemplateRenderer(name, template)
        return cls(found)

    def find(self, software: str, renderer: str) -> Renderer | None:
        software, renderer = software.strip().lower(), renderer.strip().lower()
        return self.by_name.get(f"{software}/{renderer}") or self.by_name.get(software)

    def detect(self) -> list[str]:
        """What an agent offers by default: every renderer whose program is found (never the
        no-op renderer)."""
        return sorted(name for name, r in self.by_name.items() if name != NOOP and r.available())

    def unknown(self, names: Sequence[str]) -> list[str]:
        return [name for name in names if name.strip().lower() not in self.by_name]


# -- outputs ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Output:
    path: Path
    filename: str  # flat: a file in a subdirectory is "sub_name"
    frame: int | None


def _frame_of(name: str, frames: Sequence[int]) -> int | None:
    if len(frames) == 1:
        return frames[0]
    stem = name.rsplit(".", 1)[0]
    match = _DIGITS.search(stem)
    number = int(match.group(1)) if match else None
    return number if number in frames else None


def collect_outputs(job: ChunkJob, saved: Sequence[OutputSaved]) -> tuple[list[Output], list[int]]:
    """The files the renderer left in `job.out_dir` (regular files, no symbolic links, no
    hidden files) with the frame each belongs to, and the frames that have none. A file's frame
    is the one its `OutputSaved` line named, else the last number in its name, else (in a
    one-frame chunk) that frame."""
    root = Path(job.out_dir)
    named = {
        os.path.normpath(os.path.join(root, event.path)): event.frame
        for event in saved
        if event.frame is not None
    }
    outputs: list[Output] = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(files):
            path = Path(directory) / name
            if name.startswith(".") or path.is_symlink() or not path.is_file():
                continue
            frame = named.get(os.path.normpath(path))
            if frame not in job.frames:
                frame = _frame_of(name, job.frames)
            filename = "_".join(path.relative_to(root).parts)
            outputs.append(Output(path=path, filename=filename, frame=frame))
    have = {output.frame for output in outputs}
    return outputs, [frame for frame in job.frames if frame not in have]


# -- processes --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Measured:
    exit_code: int  # negative: killed by that signal
    duration_ms: int
    core_seconds: float
    peak_memory_bytes: int


def renderer_environment() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("YUNTU_")}


async def run_process(
    argv: Sequence[str],
    *,
    cwd: str,
    on_line: Callable[[str], None],
    terminate_grace: float = 2.0,
    env: Mapping[str, str] | None = None,
) -> Measured:
    """Run `argv` in a new process group, feeding each stdout and stderr line to `on_line`.
    Cancelling this coroutine stops the whole group (see the module docstring)."""
    started = time.monotonic()
    try:
        # Popen, not asyncio's subprocesses: see "Measures" above. Starting is quick (no wait).
        process = subprocess.Popen(  # noqa: S603, ASYNC220 (an argv list, no shell)
            list(argv),
            cwd=cwd,
            env=dict(env) if env is not None else renderer_environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise RendererMissing(f"cannot start {argv[0]}: {exc.strerror or exc}") from exc
    loop = asyncio.get_running_loop()
    exited = asyncio.create_task(_wait_exit(process.pid))
    pumps: list[asyncio.Task[None]] = []
    transports: list[asyncio.BaseTransport] = []
    usage = None
    try:
        try:
            for pipe in (process.stdout, process.stderr):
                reader = asyncio.StreamReader(limit=_READ * 2)
                transport, _ = await loop.connect_read_pipe(_protocol(reader), pipe)
                transports.append(transport)
                pumps.append(asyncio.create_task(_pump(reader, on_line)))
            await asyncio.shield(exited)
        except asyncio.CancelledError:
            await _terminate(process.pid, exited, terminate_grace)
            raise
    finally:
        usage = _reap(process, exited)
        await _drain(pumps, transports)
    if usage is None:  # unreachable: the process had exited when not cancelled
        raise RuntimeError("the renderer process was not reaped")
    status, rusage = usage
    maxrss = rusage.ru_maxrss if sys.platform == "darwin" else rusage.ru_maxrss * 1024
    return Measured(
        exit_code=os.waitstatus_to_exitcode(status),
        duration_ms=int((time.monotonic() - started) * 1000),
        core_seconds=rusage.ru_utime + rusage.ru_stime,
        peak_memory_bytes=int(maxrss),
    )


def _protocol(reader: asyncio.StreamReader) -> Callable[[], asyncio.StreamReaderProtocol]:
    return lambda: asyncio.StreamReaderProtocol(reader)


async def _pump(reader: asyncio.StreamReader, on_line: Callable[[str], None]) -> None:
    pending = b""
    while chunk := await reader.read(_READ):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for raw in lines:
            on_line(_text(raw))
        if len(pending) > MAX_LINE * 4:  # a line without end: pass on what came so far
            on_line(_text(pending))
            pending = b""
    if pending:
        on_line(_text(pending))


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").rstrip("\r")[:MAX_LINE]


async def _wait_exit(pid: int) -> None:
    """Until `pid` has exited, without reaping it: its process group stays reserved until
    `_reap`, so a later kill of the group cannot reach an unrelated process."""
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):  # not Linux 5.3+: a thread waits instead
        await asyncio.to_thread(os.waitid, os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        return
    try:
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()

        def ready() -> None:
            if not readable.done():
                readable.set_result(None)

        loop.add_reader(pidfd, ready)
        try:
            await readable
        finally:
            loop.remove_reader(pidfd)
    finally:
        os.close(pidfd)


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


async def _terminate(pid: int, exited: asyncio.Task[None], grace: float) -> None:
    """SIGTERM the group, SIGKILL it after `grace` seconds (or at a second cancellation), and
    wait for the leader to exit."""
    _signal_group(pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(exited), grace)
    if exited.done():
        return
    _signal_group(pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
        await asyncio.wait_for(asyncio.shield(exited), 10)


def _reap(process: subprocess.Popen[bytes], exited: asyncio.Task[None]) -> Any:
    """Kill what is left of the group and reap the leader: (status, rusage), or None when the
    leader has not exited yet (stuck in the kernel): a thread reaps it later."""
    _signal_group(process.pid, signal.SIGKILL)
    if not exited.done():
        exited.cancel()
        threading.Thread(target=_reap_later, args=(process,), daemon=True).start()
        return None
    _pid, status, rusage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait for it again
    return status, rusage


def _reap_later(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ChildProcessError):
        _pid, status, _usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)


async def _drain(pumps: list[asyncio.Task[None]], transports: list[asyncio.BaseTransport]) -> None:
    """Let the readers finish the lines already written; a descendant that escaped the group
    may hold a pipe open forever, so only for a moment."""
    try:
        await asyncio.wait(pumps, timeout=_DRAIN_SECONDS)
    finally:
        for pump in pumps:
            pump.cancel()
        for transport in transports:
            transport.close()
