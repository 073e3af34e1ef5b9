"""Command-template renderers: any renderer with a command line (Maya's `Render`, Arnold's
`kick`, V-Ray standalone), configured by the operator as a template plus regular expressions
for its output lines, instead of code per renderer.

Template: a command line in shell syntax with placeholders, parsed and filled by
`kit.argv_template.ArgvTemplate` (its docstring has the safety rules). It is split with `shlex`
first and each argument is filled in afterwards, so a value is always exactly (part of) one
argument: no shell ever runs, and a scene path or camera name with spaces, quotes or `;` stays
one argument.

    Render -r arnold -s {start} -e {end} -b {step} -x {width} -y {height}
           [-cam {camera}] -rd {out_dir} -im frame {scene}

Placeholders: {scene} {out_dir} {width} {height} {camera} {ext} (the output format's file
extension, e.g. "exr"), {start} {end} {step} (the chunk as a progression), {frames} (the
chunk's frames, comma-separated: "1,5,7"), {frame} (the template runs once per frame: one
command per frame of the chunk). Whole-number placeholders take a zero-padding width,
`{frame:04}`. `{{` and `}}` are literal braces.

Rules:
- An argument group in brackets, `[-cam {camera}]` (one or several arguments, the first
  starting with `[` and the last ending with `]`), is left out when a placeholder in it has no
  value (no camera given). Outside a group, a missing value is an error.
- A value may not turn an argument into an option: an argument that does not start with `-` in
  the template may not start with `-` once filled in (a camera named "-rd /etc").
- A template with {start}/{end} and neither {frames} nor {frame} renders progressions only:
  `ranges_only` tells the scheduler to chunk with `frames.chunk(..., ranges=True)`, and a chunk
  with a step other than 1 needs {step} in the template.

Output lines (`parse_line`), each pattern a regular expression searched in the line:
- `error_pattern`: a match is a RendererError (its `message` group, or the whole line);
- `output_pattern`: a match is an OutputSaved; needs a `path` group, may have `frame`;
- `progress_pattern`: a match is a FrameProgress; named groups among frame, percent, sample,
  samples, memory_mb.

Illustrative settings (check them against the version you run):
- Maya + Arnold: the template above; progress `(?P<percent>\\d+)% done`; output
  `writing file `(?P<path>[^']+)'`.
- V-Ray standalone: `vray -sceneFile={scene} -frames={frames} -imgFile={out_dir}/frame.{ext}
  -imgWidth={width} -imgHeight={height} -display=0`; output
  `Successfully written image file "(?P<path>[^"]+)"`.
- Arnold kick (one .ass per frame): `kick -i {scene} -o {out_dir}/frame_{frame:04}.{ext}
  -r {width} {height} [-c {camera}] -dw -dp`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from yuntu.kit.argv_template import ArgvTemplate
from yuntu.render.contract import (
    ChunkJob,
    FrameProgress,
    OutputSaved,
    RendererError,
    RenderEvent,
)

PLACEHOLDERS = frozenset(
    {"scene", "out_dir", "width", "height", "camera", "ext", "start", "end", "step", "frames"}
    | {"frame"}
)
_NUMERIC = frozenset({"width", "height", "start", "end", "step", "frame"})
_PROGRESS_GROUPS = frozenset({"frame", "percent", "sample", "samples", "memory_mb"})


def _compile(pattern: str | None, what: str) -> re.Pattern[str] | None:
    if pattern is None or pattern == "":
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"the {what} pattern is not a valid regular expression: {exc}") from exc


@dataclass(frozen=True, slots=True)
class CommandTemplate:
    """One configured renderer. Checked on creation, so a bad setting fails at start-up."""

    template: str
    progress_pattern: str | None = None
    output_pattern: str | None = None
    error_pattern: str | None = None
    _argv: ArgvTemplate = field(init=False, repr=False, compare=False)
    _patterns: tuple[re.Pattern[str] | None, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        argv = ArgvTemplate(self.template, PLACEHOLDERS, _NUMERIC)
        used = argv.used
        if not used & {"frame", "frames", "start"}:
            raise ValueError("the command template never says which frames to render")
        if "start" in used and "end" not in used:
            raise ValueError("a template with {start} needs {end}")
        progress = _compile(self.progress_pattern, "progress")
        output = _compile(self.output_pattern, "output")
        error = _compile(self.error_pattern, "error")
        if output is not None and "path" not in output.groupindex:
            raise ValueError("the output pattern needs a (?P<path>...) group")
        if progress is not None and not set(progress.groupindex) & _PROGRESS_GROUPS:
            known = ", ".join(sorted(_PROGRESS_GROUPS))
            raise ValueError(f"the progress pattern needs a named group among {known}")
        object.__setattr__(self, "_argv", argv)
        object.__setattr__(self, "_patterns", (error, output, progress))

    @property
    def per_frame(self) -> bool:
        """One command per frame ({frame} in the template)."""
        return "frame" in self._argv.used

    @property
    def ranges_only(self) -> bool:
        """Chunks must be progressions: chunk with `frames.chunk(..., ranges=True)`."""
        return not self.per_frame and "frames" not in self._argv.used

    def build(self, job: ChunkJob) -> list[list[str]]:
        """The argv lists (run one after another, no shell) that render `job`."""
        base: dict[str, Any] = {
            "scene": job.scene,
            "out_dir": job.out_dir,
            "width": job.width,
            "height": job.height,
            "camera": job.camera,
            "ext": job.output_format.extension,
        }
        if self.per_frame:
            return [
                self._argv.fill(
                    {**base, "frame": f, "start": f, "end": f, "step": 1, "frames": str(f)}
                )
                for f in job.frames
            ]
        progression = job.range
        if progression is None and self.ranges_only:
            raise ValueError("this renderer renders frame ranges only, and the chunk is not one")
        start, end, step = progression or (None, None, None)
        if self.ranges_only and step != 1 and "step" not in self._argv.used:
            raise ValueError("this renderer's template has no {step} for a stepped chunk")
        frames = ",".join(str(frame) for frame in job.frames)
        return [
            self._argv.fill({**base, "start": start, "end": end, "step": step, "frames": frames})
        ]

    def parse_line(self, line: str) -> RenderEvent | None:
        """The event one output line reports, by the configured patterns, or None."""
        text = line.rstrip("\r\n")
        error, output, progress = self._patterns
        if error is not None and (match := error.search(text)):
            message = match.groupdict().get("message") or text
            return RendererError(message=message.strip())
        if output is not None and (match := output.search(text)):
            frame = match.groupdict().get("frame")
            return OutputSaved(path=match.group("path"), frame=_int(frame))
        if progress is not None and (match := progress.search(text)):
            found = match.groupdict()
            return FrameProgress(
                frame=_int(found.get("frame")),
                percent=_float(found.get("percent")),
                sample=_int(found.get("sample")),
                samples=_int(found.get("samples")),
                memory_mb=_float(found.get("memory_mb")),
            )
        return None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
