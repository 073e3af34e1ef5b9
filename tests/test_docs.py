"""The documents that are generated or executed stay true: the error catalogue, the README's two
set-up commands, the configuration table, and the test command .ci/run extracts."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from yuntu.kit.errors import CATALOGUE, render_markdown
from yuntu.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SERVE_COMMAND = "python3 -m venv .venv && . .venv/bin/activate && pip install -e . && yuntu serve"
TEST_COMMAND = "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]' && pytest"


def command_after(marker: str) -> str:
    """The first line of the first code block after `<!-- marker -->` in the README."""
    text = README.read_text(encoding="utf-8")
    match = re.search(
        rf"^<!-- {re.escape(marker)} -->\s*\n```[a-z]*\n([^\n]+)\n", text, flags=re.MULTILINE
    )
    assert match, f"README.md has no code block after <!-- {marker} -->"
    return match.group(1).strip()


def test_errors_md_is_generated_from_the_catalogue() -> None:
    document = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    assert document == render_markdown(), (
        "docs/errors.md is stale: run `python -m yuntu.kit.errors > docs/errors.md`"
    )
    for spec in CATALOGUE:
        assert f"`{spec.name}`" in document


def test_readme_has_the_two_setup_commands() -> None:
    assert command_after("readme:serve-command") == SERVE_COMMAND
    assert command_after("readme:test-command") == TEST_COMMAND
    text = README.read_text(encoding="utf-8")
    assert text.count("<!-- readme:") == 2


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is needed to run .ci/run")
def test_ci_runs_exactly_the_readme_test_command() -> None:
    script = ROOT / ".ci" / "run"
    assert script.stat().st_mode & 0o111, ".ci/run must be executable"
    printed = subprocess.run(
        ["bash", str(script), "--print-test-command"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    assert printed == command_after("readme:test-command") == TEST_COMMAND


def test_readme_documents_every_setting() -> None:
    text = README.read_text(encoding="utf-8")
    for name in Settings.model_fields:
        variable = f"YUNTU_{name.upper()}"
        assert f"| `{variable}` |" in text, f"README.md's configuration table lacks {variable}"
