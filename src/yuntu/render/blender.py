"""Blender, headless: the command line that renders one frame task, and the parser of its
output lines. Verified against Blender 3.4.1 (Debian 12).

The command, in the order Blender needs (it acts on its arguments one by one, left to right):

    blender -b -noaudio --disable-autoexec <scene> -E <ENGINE>
            --python-exit-code 2 --python-expr <setup script> [-t <threads>]
            -o <out_dir>/frame_#### -F <PNG|JPEG|OPEN_EXR|TIFF>
            (-s <start> -e <end> -j <step> -a  |  -f <f1,f2,...>)

- `--disable-autoexec` comes before the scene: a user's .blend can carry Python (registered
  text blocks, drivers) that runs on load when auto-run is on in the agent's preferences. The
  flag turns it off whatever the preferences say. It is not a sandbox (Blender is no safe
  parser of hostile files): agents should still run in an isolated account or container.
- No `--factory-startup` by default: it would ignore the agent's preferences, which is where
  an operator enables the add-ons scenes need (render engines, rigs with custom properties).
  Agents are machines the operator configures, so their preferences are part of the farm's
  setup. `factory_startup=True` is there for agents that want a bare Blender.
- `--python-exit-code` comes before `--python-expr`: Blender applies it to scripts that come
  after it only. Without it, a failing script exits 0 and Blender renders anyway (verified).
  Exit code 2 (`EXIT_SETUP_FAILED`) therefore means "the setup script failed" (a missing camera,
  for one), distinct from Blender's own failures, which exit 1 (unreadable scene, no camera in
  the scene, a denoiser the build lacks).
- The setup script runs after the scene is loaded and the engine set, before rendering. It
  turns denoising off (Debian's build has no OpenImageDenoise: a scene with denoising on fails
  with "Build without OpenImageDenoiser" and exit 1), sets the resolution at 100 %, forces file
  extensions, overwriting and no placeholders (a retried chunk rewrites what a dead attempt
  left), sets samples when asked, and selects the camera by name, failing when the scene has no
  camera object of that name. Its inputs are one JSON document embedded as a Python string
  literal (`repr` of ASCII-only JSON): a camera name is data, never code.
- Frames: a chunk that is one arithmetic progression renders with `-s -e -j -a` (`-j` also
  overrides the scene's own frame step, which `-a` would otherwise use); any other chunk with
  `-f` and the comma-separated list. Blender renders both frame by frame.
- Output: `<out_dir>/frame_####.<ext>`: `#` is Blender's frame-number placeholder (at least
  four digits), so the output directory may not contain `#`.
"""

from __future__ import annotations

import json
import os
import re

from yuntu.render.contract import (
    ChunkJob,
    FrameProgress,
    OutputSaved,
    RendererError,
    RenderEvent,
)

ENGINES = {"cycles": "CYCLES", "eevee": "BLENDER_EEVEE", "workbench": "BLENDER_WORKBENCH"}
EXIT_SETUP_FAILED = 2
OUTPUT_PREFIX = "frame_"
MAX_SAMPLES = 1 << 24

_SETUP = """
import json
import bpy


def _yuntu_setup(cfg):
    scene = bpy.context.scene
    render = scene.render
    render.resolution_x = cfg["width"]
    render.resolution_y = cfg["height"]
    render.resolution_percentage = 100
    render.use_file_extension = True
    render.use_overwrite = True
    render.use_placeholder = False
    cycles = getattr(scene, "cycles", None)
    if cycles is not None:
        cycles.use_denoising = False
        if hasattr(cycles, "use_preview_denoising"):
            cycles.use_preview_denoising = False
        if cfg["samples"] is not None:
            cycles.samples = cfg["samples"]
    for layer in scene.view_layers:
        layer_cycles = getattr(layer, "cycles", None)
        if layer_cycles is not None and hasattr(layer_cycles, "use_denoising"):
            layer_cycles.use_denoising = False
    eevee = getattr(scene, "eevee", None)
    if eevee is not None and cfg["samples"] is not None:
        eevee.taa_render_samples = cfg["samples"]
    name = cfg["camera"]
    if name is not None:
        camera = scene.objects.get(name)
        if camera is None or camera.type != "CAMERA":
            raise RuntimeError(
                "yuntu: scene %r has no camera named %r" % (scene.name, name)
            )
        scene.camera = camera
    print("yuntu: setup done", json.dumps({"engine": render.engine, "camera": name}))


_yuntu_setup(json.loads(__CONFIG__))
"""


def setup_script(job: ChunkJob, samples: int | None = None) -> str:
    """The `--python-expr` program for `job`. Its only variable part is a string literal."""
    config = {"width": job.width, "height": job.height, "camera": job.camera, "samples": samples}
    literal = repr(json.dumps(config, ensure_ascii=True))
    return _SETUP.replace("__CONFIG__", literal).strip() + "\n"


def output_pattern(out_dir: str) -> str:
    return os.path.join(out_dir, OUTPUT_PREFIX + "####")


def output_path(job: ChunkJob, frame: int) -> str:
    """Where Blender writes `frame` of `job`."""
    return os.path.join(job.out_dir, f"{OUTPUT_PREFIX}{frame:04d}.{job.output_format.extension}")


def build_command(
    job: ChunkJob,
    *,
    renderer: str = "cycles",
    executable: str = "blender",
    samples: int | None = None,
    threads: int | None = None,
    factory_startup: bool = False,
) -> list[str]:
    """The argv (no shell) that renders `job` with Blender's `renderer` engine."""
    engine = ENGINES.get(renderer.lower())
    if engine is None:
        raise ValueError(f"unknown Blender renderer {renderer!r} (one of {', '.join(ENGINES)})")
    if "#" in job.out_dir:
        raise ValueError("Blender reads '#' in an output path as the frame number")
    if job.out_dir.startswith("//"):
        raise ValueError("Blender reads an output path starting with // as blend-relative")
    if samples is not None and not (isinstance(samples, int) and 1 <= samples <= MAX_SAMPLES):
        raise ValueError(f"samples must be between 1 and {MAX_SAMPLES}")
    if threads is not None and not (isinstance(threads, int) and 0 <= threads <= 1024):
        raise ValueError("threads must be between 0 (all) and 1024")
    argv = [executable, "-b", "-noaudio", "--disable-autoexec"]
    if factory_startup:
        argv.append("--factory-startup")
    argv += [job.scene, "-E", engine]
    argv += ["--python-exit-code", str(EXIT_SETUP_FAILED)]
    argv += ["--python-expr", setup_script(job, samples)]
    if threads is not None:
        argv += ["-t", str(threads)]
    argv += ["-o", output_pattern(job.out_dir), "-F", job.output_format.value]
    progression = job.range
    if progression is not None:
        start, end, step = progression
        argv += ["-s", str(start), "-e", str(end), "-j", str(step), "-a"]
    else:
        argv += ["-f", ",".join(str(frame) for frame in job.frames)]
    return argv


# -- output lines -----------------------------------------------------------------------------

_FRA = re.compile(r"^Fra:(\d+)\b")
_MEM = re.compile(r"\bMem:([\d.]+)([KMG])?\s*\(Peak\s+([\d.]+)([KMG])?\)")
_TIME = re.compile(r"\bTime:([\d:.]+)")
_REMAINING = re.compile(r"\bRemaining:([\d:.]+)")
_SAMPLE = re.compile(r"\bSample (\d+)/(\d+)|\bRendering (\d+) / (\d+) samples")
_SAVED = re.compile(r"^Saved: (['\"])(.*)\1\s*$")
_ERROR = re.compile(r"^Error: (.+)$")
_PY_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception)): (.+)$")
_OUTPUT_FRAME = re.compile(re.escape(OUTPUT_PREFIX) + r"(\d+)\.[A-Za-z0-9]+$")
_UNIT_MB = {"K": 1 / 1024, "M": 1.0, "G": 1024.0, None: 1.0}
# "Error:" lines that are not render errors: a leak report some builds print on exit
_NOT_ERRORS = ("Not freed memory blocks",)


def _megabytes(value: str, unit: str | None) -> float:
    return float(value) * _UNIT_MB[unit]


def _seconds(clock: str) -> float | None:
    """Blender's "MM:SS.cc" or "HH:MM:SS.cc" as seconds."""
    try:
        seconds = 0.0
        for part in clock.split(":"):
            seconds = seconds * 60 + float(part)
    except ValueError:
        return None
    return seconds


def parse_line(line: str) -> RenderEvent | None:
    """The event one line of Blender's output reports, or None for any other line."""
    text = line.rstrip("\r\n")
    fra = _FRA.match(text)
    if fra:
        memory = peak = None
        mem = _MEM.search(text)
        if mem:
            memory = _megabytes(mem.group(1), mem.group(2))
            peak = _megabytes(mem.group(3), mem.group(4))
        sample = samples = None
        found = _SAMPLE.search(text)
        if found:
            done, total = (found.group(1), found.group(2)) if found.group(1) else found.group(3, 4)
            sample, samples = int(done), int(total)
        elapsed = _TIME.search(text)
        remaining = _REMAINING.search(text)
        status = text.rsplit("|", 1)[1].strip() if "|" in text else None
        return FrameProgress(
            frame=int(fra.group(1)),
            memory_mb=memory,
            peak_memory_mb=peak,
            sample=sample,
            samples=samples,
            elapsed_s=_seconds(elapsed.group(1)) if elapsed else None,
            remaining_s=_seconds(remaining.group(1)) if remaining else None,
            status=status or None,
        )
    saved = _SAVED.match(text)
    if saved:
        path = saved.group(2)
        number = _OUTPUT_FRAME.search(os.path.basename(path))
        return OutputSaved(path=path, frame=int(number.group(1)) if number else None)
    error = _ERROR.match(text)
    if error and not error.group(1).startswith(_NOT_ERRORS):
        return RendererError(message=error.group(1).strip())
    exception = _PY_EXCEPTION.match(text)
    if exception:
        return RendererError(message=f"{exception.group(1)}: {exception.group(2).strip()}")
    return None
