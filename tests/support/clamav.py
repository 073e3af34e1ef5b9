"""ClamAV for tests: the real `clamscan` with a signature database made on the spot by `sigtool`
(an MD5 signature of a random binary file), so no downloaded virus database is needed.

Hash signatures only match binary files (ClamAV normalises text before matching), hence random
bytes rather than a text fixture."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SIGNATURE = "yuntu-test-fixture.bin.UNOFFICIAL"  # what clamscan reports for the infected file


def need_clamav() -> str:
    """The clamscan binary; a skip where ClamAV is missing, a failure under CI=true (.ci/run
    installs it)."""
    import pytest

    executable = shutil.which("clamscan")
    if executable is None or shutil.which("sigtool") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("clamscan/sigtool are not installed, and CI=true requires ClamAV")
        pytest.skip("ClamAV (clamscan, sigtool) is not installed")
    return executable


def make_signature_db(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(infected_path, clean_path, db_path): two random 4 KiB binaries and an .hdb database
    that flags the first one as `SIGNATURE`."""
    need_clamav()
    folder = tmp_path / "clamav"
    folder.mkdir(parents=True, exist_ok=True)
    infected = folder / "yuntu-test-fixture.bin"
    clean = folder / "clean.bin"
    infected.write_bytes(os.urandom(4096))
    clean.write_bytes(os.urandom(4096))
    # sigtool names the signature after the file it hashed.
    line = subprocess.run(
        ["sigtool", "--md5", infected.name],
        cwd=folder,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    assert line.endswith(":yuntu-test-fixture.bin"), line
    database = folder / "test.hdb"
    database.write_text(line + "\n")
    return infected, clean, database
