"""ClamAV, as a processing step: `clamscan` (a process per package) or a running `clamd` (its
documented `zINSTREAM` protocol over TCP or a Unix socket). Also the pieces every process-running
step shares: `StepOutcome`, and `run_captured` (no shell, own process group, merged and capped
output, timeout).

Outcomes, for both engines: clean is ok with `result={"infected": False}`; a signature match is
not ok with `{"infected": True, "signature": "<name>"}`; anything that is not a verdict (engine
error, missing binary or database, clamd unreachable, stream too large, timeout) is not ok with
`{"error": "<kind>"}` and the reason in the log, so a package is never passed unscanned.

Limits worth knowing: clamscan skips (and reports clean!) files above its `--max-filesize`
(100 MB by default) and stops at `--max-scansize`; clamd refuses streams above its
`StreamMaxLength` (an error here, never clean). Size those to the largest package accepted, and
pass clamscan `--alert-exceeds-max=yes` (`options`) to fail closed: its
`Heuristics.Limits.Exceeded.*` match is reported as a `size_limit` error, not as an infection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

LOG_LIMIT = 64 * 1024  # bytes of a step's output kept (the end of it)
_DRAIN_SECONDS = 2.0  # how long the pipe may stay open after the main process exited
_CHUNK = 64 * 1024  # INSTREAM chunk size; clamd only bounds the total (StreamMaxLength)
_MAX_REPLY = 64 * 1024
_LIMITS = "Heuristics.Limits.Exceeded"  # --alert-exceeds-max: a file too large to scan


@dataclass(frozen=True, slots=True)
class StepOutcome:
    ok: bool
    exit_code: int | None
    log: str  # what the tool printed (the last LOG_LIMIT bytes) plus our own verdict lines
    output: Path | None = None  # a new artifact the step produced (command steps only)
    result: dict[str, Any] = field(default_factory=dict)


# ---- running a process ------------------------------------------------------------------------


class _Tail:
    """The last `limit` bytes written, and how many came before them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.cut = 0

    def write(self, chunk: bytes) -> None:
        self.data += chunk
        # Trim in batches so a chatty tool does not cost a copy per read.
        if len(self.data) > 2 * self.limit:
            drop = len(self.data) - self.limit
            del self.data[:drop]
            self.cut += drop

    def text(self) -> str:
        data, cut = bytes(self.data), self.cut
        if len(data) > self.limit:
            cut += len(data) - self.limit
            data = data[-self.limit :]
        text = data.decode("utf-8", errors="replace")
        if cut:
            text = f"[log cut: the first {cut} bytes are not kept]\n{text}"
        return text


def clean_log(*parts: str) -> str:
    """Join log parts; NUL becomes U+FFFD (PostgreSQL text refuses NUL)."""
    text = "\n".join(part.rstrip("\n") for part in parts if part)
    return text.replace("\x00", "\ufffd")


@dataclass(frozen=True, slots=True)
class Captured:
    """How a process ended: `exit_code` None when it never started or was killed for time."""

    exit_code: int | None
    output: str
    started: bool = True
    timed_out: bool = False
    seconds: float = 0.0


def minimal_env(
    extra: Mapping[str, str] | None = None, *, tmpdir: Path | None = None
) -> dict[str, str]:
    """An environment without any of the server's own variables (database URL, secret key,
    storage credentials): PATH, HOME, LANG and TMPDIR, then `extra`."""
    env = {
        "PATH": os.environ.get("PATH") or "/usr/local/bin:/usr/bin:/bin",
        "HOME": os.environ.get("HOME") or "/",
        "LANG": os.environ.get("LANG") or "C.UTF-8",
    }
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    elif os.environ.get("TMPDIR"):
        env["TMPDIR"] = os.environ["TMPDIR"]
    env.update(extra or {})
    return env


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class _Capture(asyncio.SubprocessProtocol):
    """Collects the merged output and tells the main process's exit apart from the pipe's
    closing: a leftover child can hold the pipe open long after the tool itself has exited
    (`Process.wait()` waits for both)."""

    def __init__(self, tail: _Tail) -> None:
        loop = asyncio.get_running_loop()
        self.tail = tail
        self.exited: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        self.tail.write(data.encode() if isinstance(data, str) else data)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:  # exited and pipes closed
        if not self.closed.done():
            self.closed.set_result(None)


async def run_captured(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    timeout: float,  # noqa: ASYNC109 (an expiry is a verdict to record, not a cancellation)
    cwd: Path | None = None,
) -> Captured:
    """Run `argv` (no shell) in a new session with stdin closed, stdout and stderr merged into
    one capped log. On timeout, or once the main process has exited, the whole process group is
    killed: a tool's leftover children never outlive its step."""
    began = time.monotonic()
    tail = _Tail(LOG_LIMIT)
    try:
        transport, capture = await asyncio.get_running_loop().subprocess_exec(
            lambda: _Capture(tail),
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=cwd,
            env=dict(env),
            start_new_session=True,
        )
    except FileNotFoundError:
        return Captured(None, f"command not found: {argv[0]}", started=False)
    except PermissionError:
        return Captured(None, f"command not executable: {argv[0]}", started=False)
    except OSError as exc:  # e.g. ENOEXEC: a script without a #! line
        return Captured(None, f"command cannot start: {argv[0]}: {exc}", started=False)
    pid = transport.get_pid()
    timed_out = False
    try:
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(capture.exited)
        except TimeoutError:
            timed_out = True
            _kill_group(pid)
            await capture.exited
        _kill_group(pid)  # whatever the tool left running in its group
        # A child that left the group (setsid) may still hold the pipe: stop waiting for it.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(capture.closed), _DRAIN_SECONDS)
    finally:
        if transport.get_returncode() is None:  # cancelled: the job was stopped
            _kill_group(pid)
        transport.close()
    code = None if timed_out else transport.get_returncode()
    return Captured(code, tail.text(), True, timed_out, time.monotonic() - began)


def describe_exit(captured: Captured, timeout: float) -> str:
    """Our one-line account of how the process ended."""
    if captured.timed_out:
        return f"timed out after {timeout:g} s: the process group was killed"
    code = captured.exit_code
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exited with code {code}"


# ---- clamscan ---------------------------------------------------------------------------------


def clamav_available(executable: str = "clamscan") -> bool:
    """Whether the clamscan binary can be found (its database is checked by the scan itself)."""
    return shutil.which(executable) is not None


def _signature(output: str) -> str | None:
    for line in output.splitlines():
        line = line.rstrip()
        if line.endswith(" FOUND") and ": " in line:
            return line[: -len(" FOUND")].rsplit(": ", 1)[1]
    return None


async def clamscan(
    path: Path,
    *,
    executable: str = "clamscan",
    database: str | None = None,
    timeout: float = 600,  # noqa: ASYNC109 (an expiry is a verdict to record)
    options: Sequence[str] = (),
) -> StepOutcome:
    """Scan one file with clamscan. Exit 0 is clean, 1 a match, anything else no verdict.
    `options` are extra clamscan flags (limits such as `--max-filesize=2000M`)."""
    argv = [executable, "--no-summary", "--stdout", *options]
    if database:
        argv.append(f"--database={database}")  # one argument, whatever the path looks like
    argv += ["--", str(path)]
    captured = await run_captured(argv, env=minimal_env(), timeout=timeout)
    if not captured.started:
        return StepOutcome(False, None, clean_log(captured.output), result={"error": "unavailable"})
    if captured.exit_code == 0:
        return StepOutcome(True, 0, clean_log(captured.output), result={"infected": False})
    if captured.exit_code == 1:
        signature = _signature(captured.output)
        if signature and signature.startswith(_LIMITS):
            log = clean_log(captured.output, "clamscan: the file exceeds a scan limit: not scanned")
            return StepOutcome(
                False, 1, log, result={"error": "size_limit", "signature": signature}
            )
        verdict = f"clamscan: infected ({signature or 'signature not reported'})"
        return StepOutcome(
            False,
            1,
            clean_log(captured.output, verdict),
            result={"infected": True, "signature": signature},
        )
    kind = "timeout" if captured.timed_out else "engine"
    why = describe_exit(captured, timeout)
    if captured.exit_code == 2:
        why += " (clamscan error: no verdict)"
    return StepOutcome(
        False,
        captured.exit_code,
        clean_log(captured.output, f"clamscan {why}"),
        result={"error": kind},
    )


# ---- clamd ------------------------------------------------------------------------------------


def parse_clamd_address(address: str) -> tuple[str, int] | str:
    """`tcp://host:port` as (host, port), `unix:///path` as the socket path; ValueError
    otherwise (for settings validation)."""
    parts = urlsplit(address.strip())
    if parts.scheme == "tcp":
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"bad clamd address {address!r}: {exc}") from exc
        if not parts.hostname or port is None or parts.path not in ("", "/"):
            raise ValueError(f"bad clamd address {address!r}: expected tcp://host:port")
        return parts.hostname, port
    if parts.scheme == "unix":
        if parts.netloc or not parts.path.startswith("/"):
            raise ValueError(f"bad clamd address {address!r}: expected unix:///absolute/path")
        return parts.path
    raise ValueError(f"bad clamd address {address!r}: use tcp://host:port or unix:///path")


async def _read_reply(reader: asyncio.StreamReader) -> str:
    try:
        raw = await reader.readuntil(b"\0")
    except asyncio.IncompleteReadError as exc:  # closed without the terminator
        raw = exc.partial
    except asyncio.LimitOverrunError:
        raw = await reader.read(_MAX_REPLY)
    return raw.rstrip(b"\0").decode("utf-8", errors="replace").strip()


async def _instream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: Path) -> str:
    # clamd answers a size-limit breach at once and closes the socket while chunks are still
    # being sent: read concurrently, and stop sending when a reply has come.
    reply = asyncio.create_task(_read_reply(reader))
    try:
        writer.write(b"zINSTREAM\0")
        with path.open("rb") as file:
            while True:
                chunk = await asyncio.to_thread(file.read, _CHUNK)
                # uvloop raises RuntimeError on a write to a closed transport, asyncio drops it.
                if reply.done() or writer.is_closing():
                    break
                writer.write(struct.pack("!I", len(chunk)) + chunk)
                await writer.drain()
                if not chunk:  # the zero-length chunk just sent ends the stream
                    break
    except ConnectionError:
        pass  # the reply (if clamd sent one) says why
    except BaseException:
        reply.cancel()
        raise
    return await reply


async def clamd_scan(
    path: Path,
    *,
    address: str,
    timeout: float = 600,  # noqa: ASYNC109 (an expiry is a verdict to record)
) -> StepOutcome:
    """Scan one file by streaming it to clamd (`zINSTREAM`)."""
    try:
        target = parse_clamd_address(address)
    except ValueError as exc:
        return StepOutcome(False, None, clean_log(str(exc)), result={"error": "unavailable"})
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            try:
                if isinstance(target, str):
                    reader, writer = await asyncio.open_unix_connection(target)
                else:
                    reader, writer = await asyncio.open_connection(*target)
            except OSError as exc:
                # asyncio words it "Connect call failed (...)": name the errno instead.
                why = os.strerror(exc.errno) if exc.errno else str(exc)
                log = f"cannot connect to clamd at {address}: {why}"
                return StepOutcome(False, None, clean_log(log), result={"error": "unavailable"})
            reply = await _instream(reader, writer, path)
    except TimeoutError:
        log = f"clamd at {address} gave no verdict within {timeout:g} s"
        return StepOutcome(False, None, clean_log(log), result={"error": "timeout"})
    except OSError as exc:  # reading the file, or the connection broke mid-reply
        log = f"clamd scan failed: {exc}"
        return StepOutcome(False, None, clean_log(log), result={"error": "engine"})
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    return _clamd_outcome(reply)


def _clamd_outcome(reply: str) -> StepOutcome:
    log = f"clamd: {reply}" if reply else "clamd closed the connection without a reply"
    if reply == "stream: OK":
        return StepOutcome(True, None, clean_log(log), result={"infected": False})
    if reply.startswith("stream: ") and reply.endswith(" FOUND"):
        signature = reply[len("stream: ") : -len(" FOUND")]
        return StepOutcome(
            False, None, clean_log(log), result={"infected": True, "signature": signature}
        )
    if "size limit exceeded" in reply:
        hint = "the package is larger than clamd's StreamMaxLength (clamd.conf): not scanned"
        return StepOutcome(False, None, clean_log(log, hint), result={"error": "size_limit"})
    return StepOutcome(False, None, clean_log(log), result={"error": "engine"})
