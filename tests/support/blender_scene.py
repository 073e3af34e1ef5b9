"""A small Blender scene made by Blender itself, for the render farm's end-to-end test and
benchmark: a cube, a camera ("Cam", the active one), a sun, Cycles with a few samples and
denoising on (the farm's setup script must turn it off: Debian's Blender has no denoiser)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SCENE_SCRIPT = """
import sys
import bpy

args = sys.argv[sys.argv.index("--") + 1:]
path, samples = args[0], int(args[1])
bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
bpy.ops.mesh.primitive_cube_add(location=(0, 0, 0))
bpy.ops.mesh.primitive_uv_sphere_add(location=(1.6, 0.4, 0.6), radius=0.7)
cam = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
scene.collection.objects.link(cam)
cam.location = (5.0, -5.0, 4.0)
cam.rotation_euler = (1.1, 0.0, 0.785)
sun = bpy.data.objects.new("Light", bpy.data.lights.new("Light", type="SUN"))
scene.collection.objects.link(sun)
scene.camera = cam
scene.render.engine = "CYCLES"
scene.cycles.samples = samples
scene.cycles.use_denoising = True
scene.render.resolution_x = 160
scene.render.resolution_y = 90
scene.frame_start, scene.frame_end = 1, 250
bpy.ops.wm.save_as_mainfile(filepath=path)
"""


def blender_executable() -> str | None:
    found = shutil.which("blender")
    if found:
        return found
    return "/usr/bin/blender" if Path("/usr/bin/blender").exists() else None


def need_blender() -> str:
    """The binary; a skip where it is missing, a failure under CI=true (.ci/run installs it)."""
    import pytest

    executable = blender_executable()
    if executable is None:
        if os.environ.get("CI") == "true":
            pytest.fail("blender is not installed, and CI=true requires the real renderer")
        pytest.skip("blender is not installed")
    return executable


def run_scene_script(executable: str, script: str, path: Path, *args: str) -> Path:
    """Run a Python `script` in a factory-fresh Blender that saves a scene at `path` (its
    first argument after `--`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [executable, "-b", "--factory-startup", "-noaudio", "--python-exit-code", "3",
         "--python-expr", script, "--", str(path), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if done.returncode != 0 or not path.is_file():
        raise RuntimeError(f"blender could not make the scene:\n{done.stdout}\n{done.stderr}")
    return path


def make_scene(executable: str, path: Path, samples: int = 8) -> Path:
    return run_scene_script(executable, SCENE_SCRIPT, path, str(samples))


def png_size(data: bytes) -> tuple[int, int]:
    import struct

    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert (length, kind) == (13, b"IHDR")
    width, height = struct.unpack(">II", data[16:24])
    return width, height
