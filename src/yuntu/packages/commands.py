"""External processing steps: the operator's own tools (a hardener, a signer, a repackager),
each configured as a command template run without a shell (see `kit.argv_template` for how a
value always stays inside its argument).

    harden --in {input} --out {output}
    /opt/sign/bin/sign --key-id=release [--label {package}-{version}] {input}

Placeholders: {input} (the package file to process, required), {output} (where the step writes
its new artifact: `<workdir>/out/<filename>`; a template with {output} produces one), {workdir}
(the step's scratch directory, also its current directory and TMPDIR), {filename} (the package's
file name), {package} and {version}.

A run succeeds when the tool exits 0 and, for a template with {output}, has written a non-empty
regular file there that resolves inside the workdir (a symlink out of it is refused). The tool
gets no stdin and a minimal environment (PATH, HOME, LANG, TMPDIR) plus what the caller adds:
none of the server's variables. On timeout its whole process group is killed.
"""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from yuntu.kit.argv_template import ArgvTemplate
from yuntu.packages.scanner import StepOutcome, clean_log, describe_exit, minimal_env, run_captured

PLACEHOLDERS = frozenset({"input", "output", "workdir", "filename", "package", "version"})
BUILTIN_STEPS = frozenset({"checksum", "metadata", "clamav"})
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


@dataclass(frozen=True, slots=True)
class CommandStep:
    """One configured external step; checked on creation (ValueError), so a bad setting fails
    at start-up."""

    name: str
    template: str
    timeout_seconds: int = 600
    _argv: ArgvTemplate = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"step name {self.name!r} must match [a-z][a-z0-9_-]{{0,31}}")
        if self.name in BUILTIN_STEPS:
            raise ValueError(f"step name {self.name!r} is taken by a built-in step")
        if self.timeout_seconds < 1:
            raise ValueError("timeout_seconds must be at least 1")
        argv = ArgvTemplate(self.template, PLACEHOLDERS)
        if "input" not in argv.used:
            raise ValueError("the command template needs {input}")
        object.__setattr__(self, "_argv", argv)

    @property
    def produces_artifact(self) -> bool:
        """The step writes a new artifact ({output} in the template)."""
        return "output" in self._argv.used


def _safe_filename(filename: str) -> str | None:
    """Why `filename` cannot name the output file, or None when it can."""
    if filename in ("", ".", "..") or "/" in filename or "\x00" in filename:
        return f"the file name {filename!r} is not a plain file name"
    return None


def _check_output(output: Path, workdir: Path) -> tuple[Path | None, str]:
    """The produced artifact's real path, or None and why it is unusable."""
    try:
        real = output.resolve(strict=True)
    except (FileNotFoundError, RuntimeError):  # absent, a dangling link or a link loop
        return None, f"the step wrote no output file at {output}"
    if not real.is_relative_to(workdir.resolve()):
        return None, f"the output file {output} is a link out of the work directory"
    info = real.stat()
    if not stat.S_ISREG(info.st_mode):
        return None, f"the output {output} is not a regular file"
    if info.st_size == 0:
        return None, f"the output file {output} is empty"
    return real, ""


@dataclass(frozen=True, slots=True)
class _Plan:
    argv: list[str]
    workdir: Path
    output: Path


def _plan(
    step: CommandStep, input_path: Path, workdir: Path, values: dict[str, str]
) -> _Plan | str:
    """The argv, with the output directory made and a leftover output removed; or why not."""
    filename = values["filename"]
    if filename in ("", ".", "..") or "/" in filename or "\x00" in filename:
        return f"the file name {filename!r} is not a plain file name"
    workdir = workdir.absolute()
    output = workdir / "out" / filename
    values = {
        **values,
        "input": str(input_path.absolute()),
        "output": str(output),
        "workdir": str(workdir),
    }
    try:
        argv = step._argv.fill(values)
    except ValueError as exc:
        return f"cannot build the command: {exc}"
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.is_dir() and not output.is_symlink():
        return f"{output} is a directory"
    # A leftover from an earlier attempt must not pass for this run's artifact.
    output.unlink(missing_ok=True)
    return _Plan(argv, workdir, output)


async def run_command(
    step: CommandStep,
    *,
    input_path: Path,
    workdir: Path,
    filename: str,
    package: str,
    version: str,
    env: dict[str, str] | None = None,
) -> StepOutcome:
    """Run `step` on `input_path` in `workdir`. Never raises for anything the tool or the
    values do: a failure is a not-ok outcome whose log ends with the reason."""
    values = {"filename": filename, "package": package, "version": version}
    plan = _plan(step, input_path, workdir, values)
    if isinstance(plan, str):
        return StepOutcome(False, None, clean_log(plan))
    captured = await run_captured(
        plan.argv,
        env=minimal_env(env, tmpdir=plan.workdir),
        timeout=step.timeout_seconds,
        cwd=plan.workdir,
    )
    if not captured.started:
        return StepOutcome(False, None, clean_log(captured.output))
    verdict = describe_exit(captured, step.timeout_seconds)
    if captured.exit_code != 0:
        return StepOutcome(False, captured.exit_code, clean_log(captured.output, verdict))
    if not step.produces_artifact:
        return StepOutcome(True, 0, clean_log(captured.output, verdict))
    produced, problem = _check_output(plan.output, plan.workdir)
    if produced is None:
        return StepOutcome(False, 0, clean_log(captured.output, verdict, problem))
    return StepOutcome(True, 0, clean_log(captured.output, verdict), output=produced)
