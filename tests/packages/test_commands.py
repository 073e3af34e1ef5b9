"""External steps: real processes (a Python tool written by the test), argv built per argument,
artifact checks, capped logs, a scrubbed environment, and process groups killed on timeout."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import pytest

from yuntu.packages.commands import CommandStep, run_command
from yuntu.packages.scanner import LOG_LIMIT, StepOutcome

pytestmark = pytest.mark.anyio

TOOL = r"""
import json, os, pathlib, subprocess, sys, time

mode, args = sys.argv[1], sys.argv[2:]
if mode == "harden":  # <input> <output>
    data = pathlib.Path(args[0]).read_bytes()
    pathlib.Path(args[1]).write_bytes(data + b"+HARDENED")
    print("hardened", len(data), "bytes")
elif mode == "fail":
    print("cannot harden: bad header", file=sys.stderr)
    sys.exit(3)
elif mode == "argv":
    print(json.dumps(args))
elif mode == "env":
    print(json.dumps({"env": dict(os.environ), "cwd": os.getcwd(), "stdin": sys.stdin.read()}))
elif mode == "spam":
    for n in range(4000):
        print(f"line {n:05} " + "x" * 50)
elif mode == "symlink":
    os.symlink("/etc/hostname", args[1])
elif mode == "empty":
    open(args[1], "wb").close()
elif mode in ("hang", "leave"):  # <input> <workdir>: a grandchild in the same group
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    pathlib.Path(args[1], "grandchild.pid").write_text(str(child.pid))
    print("spawned", child.pid, flush=True)
    if mode == "hang":
        time.sleep(60)
else:
    print("did nothing")
"""


@pytest.fixture
def tool(tmp_path: Path) -> str:
    """The start of a template that runs the test tool: `<python> <tool.py>`."""
    script = tmp_path / "tool.py"
    script.write_text(TOOL)
    return f"{shlex.quote(sys.executable)} {shlex.quote(str(script))}"


@pytest.fixture
def package(tmp_path: Path) -> Path:
    path = tmp_path / "uploads" / "app v1.apk"
    path.parent.mkdir()
    path.write_bytes(b"PK\x03\x04 original")
    return path


async def run(step: CommandStep, upload: Path, workdir: Path, /, **values: object) -> StepOutcome:
    arguments: dict = {"filename": "app.apk", "package": "demo", "version": "1.0.0"}
    arguments.update(values)
    return await run_command(step, input_path=upload, workdir=workdir, **arguments)


async def test_a_tool_produces_a_new_artifact(tool: str, package: Path, tmp_path: Path) -> None:
    step = CommandStep("harden", f"{tool} harden {{input}} {{output}}")
    assert step.produces_artifact
    outcome = await run(step, package, tmp_path / "work")
    assert outcome.ok and outcome.exit_code == 0, outcome.log
    assert outcome.output == (tmp_path / "work" / "out" / "app.apk").resolve()
    assert outcome.output.read_bytes() == b"PK\x03\x04 original+HARDENED"
    assert "hardened 13 bytes" in outcome.log and "exited with code 0" in outcome.log


async def test_a_failing_tool(tool: str, package: Path, tmp_path: Path) -> None:
    step = CommandStep("harden", f"{tool} fail {{input}} {{output}}")
    outcome = await run(step, package, tmp_path / "work")
    assert not outcome.ok and outcome.exit_code == 3 and outcome.output is None
    assert "cannot harden: bad header" in outcome.log and "exited with code 3" in outcome.log


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("nothing", "wrote no output file"),
        ("empty", "is empty"),
        ("symlink", "link out of the work directory"),
    ],
)
async def test_an_unusable_artifact(
    tool: str, package: Path, tmp_path: Path, mode: str, reason: str
) -> None:
    workdir = tmp_path / "work"
    (workdir / "out").mkdir(parents=True)
    (workdir / "out" / "app.apk").write_bytes(b"left over from an earlier attempt")
    step = CommandStep("harden", f"{tool} {mode} {{input}} {{output}}")
    outcome = await run(step, package, workdir)
    assert not outcome.ok and outcome.exit_code == 0 and outcome.output is None
    assert reason in outcome.log.splitlines()[-1]


async def test_a_step_without_output_only_needs_exit_0(
    tool: str, package: Path, tmp_path: Path
) -> None:
    step = CommandStep("verify", f"{tool} nothing {{input}}")
    assert not step.produces_artifact
    outcome = await run(step, package, tmp_path / "work")
    assert outcome.ok and outcome.output is None and "did nothing" in outcome.log


async def test_hostile_values_stay_one_argument(tool: str, package: Path, tmp_path: Path) -> None:
    step = CommandStep(
        "label", f"{tool} argv {{input}} --name={{filename}} {{package}} [-v {{version}}]"
    )
    name = "-x my app; rm -rf ~ $(id).apk"
    outcome = await run(step, package, tmp_path / "w d", filename=name, package="a b;c", version="")
    assert outcome.ok, outcome.log
    argv = json.loads(outcome.log.splitlines()[0])
    assert argv == [str(package), f"--name={name}", "a b;c"]
    # a bare value may not read as an option, and a file name may not leave out/
    refused = await run(step, package, tmp_path / "work", package="--exec=sh")
    assert not refused.ok and "into an option" in refused.log and refused.exit_code is None
    escaping = await run(step, package, tmp_path / "work", filename="../../etc/x")
    assert not escaping.ok and "not a plain file name" in escaping.log


async def test_a_missing_program(package: Path, tmp_path: Path) -> None:
    step = CommandStep("harden", f"{tmp_path}/no/harden --in {{input}}")
    outcome = await run(step, package, tmp_path / "work")
    assert not outcome.ok and outcome.exit_code is None
    assert outcome.log == f"command not found: {tmp_path}/no/harden"


async def test_the_log_keeps_its_end(tool: str, package: Path, tmp_path: Path) -> None:
    outcome = await run(CommandStep("chatty", f"{tool} spam {{input}}"), package, tmp_path / "w")
    assert outcome.ok
    assert outcome.log.startswith("[log cut: the first ")
    assert "line 03999" in outcome.log and "line 00000" not in outcome.log
    assert len(outcome.log.encode()) < LOG_LIMIT + 200


async def test_the_environment_is_minimal(
    tool: str, package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("YUNTU_SECRET_KEY", "do-not-leak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "do-not-leak")
    workdir = tmp_path / "work"
    outcome = await run(
        CommandStep("env", f"{tool} env {{input}}"), package, workdir, env={"SIGN_KEY_ID": "k1"}
    )
    seen = json.loads(outcome.log.splitlines()[0])
    assert not [name for name in seen["env"] if name.startswith("YUNTU_")]
    assert "AWS_SECRET_ACCESS_KEY" not in seen["env"] and seen["env"]["SIGN_KEY_ID"] == "k1"
    assert seen["env"]["TMPDIR"] == str(workdir) == seen["cwd"]
    assert {"PATH", "HOME", "LANG"} <= set(seen["env"]) and seen["stdin"] == ""


def _gone(pid: int, within: float = 3.0) -> bool:
    """Whether `pid` has died (a zombie counts: nothing may reap it in a container)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.05)
    return False


async def test_timeout_kills_the_process_group(tool: str, package: Path, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    step = CommandStep("slow", f"{tool} hang {{input}} {{workdir}}", timeout_seconds=1)
    began = time.monotonic()
    outcome = await run(step, package, workdir)
    assert time.monotonic() - began < 5
    assert not outcome.ok and outcome.exit_code is None
    assert "spawned" in outcome.log and "timed out after 1 s" in outcome.log
    assert _gone(int((workdir / "grandchild.pid").read_text()))


async def test_leftover_children_are_killed_when_the_tool_exits(
    tool: str, package: Path, tmp_path: Path
) -> None:
    workdir = tmp_path / "work"
    began = time.monotonic()
    outcome = await run(
        CommandStep("leave", f"{tool} leave {{input}} {{workdir}}"), package, workdir
    )
    assert outcome.ok and time.monotonic() - began < 5
    assert _gone(int((workdir / "grandchild.pid").read_text()))


@pytest.mark.parametrize(
    ("name", "template", "message"),
    [
        ("Harden", "h {input}", "must match"),
        ("x" * 33, "h {input}", "must match"),
        ("clamav", "h {input}", "built-in"),
        ("harden", "h --out {output}", r"needs \{input\}"),
        ("harden", "h {input} {scene}", "unknown placeholder"),
        ("harden", "{input} x", "fixed program name"),
        ("harden", "h 'unclosed {input}", "cannot be split"),
    ],
)
def test_bad_steps_are_refused(name: str, template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CommandStep(name, template)
