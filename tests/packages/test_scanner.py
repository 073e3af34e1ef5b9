"""ClamAV steps: the real clamscan with a sigtool-made signature database, and the clamd
`zINSTREAM` client against a small local server that speaks the documented protocol."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import struct
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.support.clamav import SIGNATURE, make_signature_db, need_clamav
from yuntu.packages.scanner import clamav_available, clamd_scan, clamscan, parse_clamd_address

pytestmark = pytest.mark.anyio


# ---- clamscan ---------------------------------------------------------------------------------


async def test_clamscan_clean_and_infected(tmp_path: Path) -> None:
    executable = need_clamav()
    assert clamav_available(executable) and not clamav_available(str(tmp_path / "nope"))
    infected, clean, database = make_signature_db(tmp_path)
    ok = await clamscan(clean, executable=executable, database=str(database))
    assert ok.ok and ok.exit_code == 0 and ok.result == {"infected": False}
    assert "clean.bin: OK" in ok.log
    found = await clamscan(infected, executable=executable, database=str(database.parent))
    assert not found.ok and found.exit_code == 1
    assert found.result == {"infected": True, "signature": SIGNATURE}
    assert f"{SIGNATURE} FOUND" in found.log and found.output is None


async def test_clamscan_path_is_never_an_option(tmp_path: Path) -> None:
    executable = need_clamav()
    infected, _, database = make_signature_db(tmp_path)
    hostile = infected.with_name("--remove=yes; x.bin")
    infected.rename(hostile)
    found = await clamscan(hostile, executable=executable, database=str(database))
    assert found.result["signature"] == SIGNATURE and hostile.exists()


async def test_clamscan_missing_database_is_an_error(tmp_path: Path) -> None:
    executable = need_clamav()
    _, clean, _ = make_signature_db(tmp_path)
    outcome = await clamscan(clean, executable=executable, database=str(tmp_path / "none.hdb"))
    assert not outcome.ok and outcome.exit_code == 2 and outcome.result == {"error": "engine"}
    assert "exited with code 2" in outcome.log and "no verdict" in outcome.log


async def test_clamscan_over_its_limits_is_not_a_verdict(tmp_path: Path) -> None:
    executable = need_clamav()
    infected, _, database = make_signature_db(tmp_path)
    limits = ["--max-filesize=1K", "--alert-exceeds-max=yes"]
    outcome = await clamscan(
        infected, executable=executable, database=str(database), options=limits
    )
    assert not outcome.ok and outcome.result["error"] == "size_limit"
    assert outcome.result["signature"].startswith("Heuristics.Limits.Exceeded")
    assert "not scanned" in outcome.log


async def test_clamscan_missing_executable(tmp_path: Path) -> None:
    outcome = await clamscan(tmp_path / "f.bin", executable=str(tmp_path / "no-clamscan"))
    assert not outcome.ok and outcome.exit_code is None
    assert outcome.result == {"error": "unavailable"}
    assert outcome.log == f"command not found: {tmp_path / 'no-clamscan'}"


async def test_clamscan_timeout_kills_the_scanner(tmp_path: Path) -> None:
    fake = tmp_path / "slow-clamscan"
    fake.write_text("#!/bin/sh\necho starting\nexec sleep 30\n")
    fake.chmod(0o755)
    began = time.monotonic()
    outcome = await clamscan(tmp_path / "f.bin", executable=str(fake), timeout=0.5)
    assert time.monotonic() - began < 5
    assert not outcome.ok and outcome.exit_code is None and outcome.result == {"error": "timeout"}
    assert outcome.log.startswith("starting") and "timed out after 0.5 s" in outcome.log


# ---- clamd ------------------------------------------------------------------------------------


@dataclass
class FakeClamd:
    """Answers zINSTREAM as clamd does: `stream: OK`, `stream: <sig> FOUND`, or
    `INSTREAM size limit exceeded. ERROR` (sent as soon as a chunk breaks the limit, then the
    connection is closed), each NUL-terminated. Decides by the MD5 of the streamed bytes."""

    signatures: dict[str, str] = field(default_factory=dict)
    stream_max_length: int = 25 * 1024 * 1024
    commands: list[bytes] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            command = await reader.readuntil(b"\0")
            self.commands.append(command)
            if command != b"zINSTREAM\0":
                writer.write(b"UNKNOWN COMMAND\0")
                return
            digest, quota = hashlib.md5(), self.stream_max_length
            while size := struct.unpack("!I", await reader.readexactly(4))[0]:
                if size > quota:
                    writer.write(b"INSTREAM size limit exceeded. ERROR\0")
                    return
                quota -= size
                digest.update(await reader.readexactly(size))
            signature = self.signatures.get(digest.hexdigest())
            reply = f"stream: {signature} FOUND" if signature else "stream: OK"
            writer.write(reply.encode() + b"\0")
        finally:
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()


@pytest.fixture
async def clamd(tmp_path: Path) -> AsyncIterator[tuple[FakeClamd, str, str]]:
    """The fake, its TCP address and its Unix-socket address."""
    fake = FakeClamd()
    tcp = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    socket_path = tmp_path / "clamd.ctl"
    unix = await asyncio.start_unix_server(fake.handle, str(socket_path))
    port = tcp.sockets[0].getsockname()[1]
    yield fake, f"tcp://127.0.0.1:{port}", f"unix://{socket_path}"
    for server in (tcp, unix):
        server.close()
        await server.wait_closed()


def _binary(path: Path, size: int) -> tuple[Path, str]:
    data = os.urandom(size)
    path.write_bytes(data)
    return path, hashlib.md5(data).hexdigest()


async def test_clamd_clean_and_found(tmp_path: Path, clamd: tuple[FakeClamd, str, str]) -> None:
    fake, tcp, unix = clamd
    clean, _ = _binary(tmp_path / "clean.bin", 200_000)  # several chunks
    infected, digest = _binary(tmp_path / "bad.bin", 1000)
    fake.signatures[digest] = "Yuntu.Test-1"
    ok = await clamd_scan(clean, address=tcp)
    assert ok.ok and ok.result == {"infected": False} and ok.log == "clamd: stream: OK"
    found = await clamd_scan(infected, address=unix)
    assert not found.ok and found.exit_code is None
    assert found.result == {"infected": True, "signature": "Yuntu.Test-1"}
    assert fake.commands == [b"zINSTREAM\0", b"zINSTREAM\0"]
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    assert (await clamd_scan(empty, address=tcp)).ok


async def test_clamd_size_limit_is_not_a_verdict(
    tmp_path: Path, clamd: tuple[FakeClamd, str, str]
) -> None:
    fake, tcp, _ = clamd
    fake.stream_max_length = 100_000
    big, _ = _binary(tmp_path / "big.bin", 4_000_000)  # still sending when the reply comes
    outcome = await clamd_scan(big, address=tcp)
    assert not outcome.ok and outcome.result == {"error": "size_limit"}
    assert "INSTREAM size limit exceeded" in outcome.log and "StreamMaxLength" in outcome.log


async def test_clamd_unreachable(tmp_path: Path) -> None:
    refused = await clamd_scan(tmp_path / "f.bin", address=f"tcp://127.0.0.1:{free_port()}")
    assert not refused.ok and refused.result == {"error": "unavailable"}
    assert "cannot connect to clamd" in refused.log and "refused" in refused.log.lower()
    missing = await clamd_scan(tmp_path / "f.bin", address=f"unix://{tmp_path}/none.ctl")
    assert not missing.ok and "cannot connect to clamd" in missing.log


async def test_clamd_silence_times_out(tmp_path: Path) -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # reads everything, never answers

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    path, _ = _binary(tmp_path / "f.bin", 10)
    outcome = await clamd_scan(path, address=f"tcp://127.0.0.1:{port}", timeout=0.3)
    server.close()
    assert not outcome.ok and outcome.result == {"error": "timeout"}


@pytest.mark.parametrize(
    ("address", "parsed"),
    [
        ("tcp://127.0.0.1:3310", ("127.0.0.1", 3310)),
        ("tcp://[::1]:3310", ("::1", 3310)),
        ("unix:///run/clamav/clamd.ctl", "/run/clamav/clamd.ctl"),
        ("tcp://host", None),
        ("tcp://host:99999", None),
        ("unix://relative/path", None),
        ("http://host:3310", None),
    ],
)
def test_clamd_addresses(address: str, parsed: object) -> None:
    if parsed is None:
        with pytest.raises(ValueError, match="bad clamd address"):
            parse_clamd_address(address)
    else:
        assert parse_clamd_address(address) == parsed
