"""The Blender command line and its output parser, without running Blender."""

from __future__ import annotations

import ast
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from yuntu.render import blender
from yuntu.render.blender import build_command, parse_line, setup_script
from yuntu.render.contract import (
    ChunkJob,
    FrameProgress,
    OutputFormat,
    OutputSaved,
    RendererError,
)


def job(**changes: object) -> ChunkJob:
    values: dict[str, object] = {
        "scene": "/farm/scenes/shot 1.blend",
        "frames": (1, 2, 3, 4),
        "out_dir": "/farm/out/task-7",
        "width": 64,
        "height": 36,
        "camera": "Cam",
        "output_format": OutputFormat.PNG,
    }
    values.update(changes)
    return ChunkJob(**values)  # type: ignore[arg-type]


def test_contiguous_chunk_command() -> None:
    argv = build_command(job())
    script = argv[argv.index("--python-expr") + 1]
    assert argv == [
        "blender",
        "-b",
        "-noaudio",
        "--disable-autoexec",
        "/farm/scenes/shot 1.blend",
        "-E",
        "CYCLES",
        "--python-exit-code",
        "2",
        "--python-expr",
        script,
        "-o",
        "/farm/out/task-7/frame_####",
        "-F",
        "PNG",
        "-s",
        "1",
        "-e",
        "4",
        "-j",
        "1",
        "-a",
    ]


def test_order_blender_needs() -> None:
    argv = build_command(job(frames=(1, 5, 7)), renderer="eevee", threads=4, samples=8)
    # autoexec off before the scene loads; the exit code before the script it applies to;
    # every option before the render flag
    assert argv.index("--disable-autoexec") < argv.index("/farm/scenes/shot 1.blend")
    assert argv.index("--python-exit-code") < argv.index("--python-expr")
    assert argv[-2:] == ["-f", "1,5,7"]
    assert argv[argv.index("-E") + 1] == "BLENDER_EEVEE"
    assert argv[argv.index("-t") + 1] == "4"
    assert "--factory-startup" not in argv
    bare = build_command(job(), factory_startup=True, executable="/opt/blender/blender")
    assert bare[0] == "/opt/blender/blender"
    assert bare.index("--factory-startup") < bare.index("/farm/scenes/shot 1.blend")


@pytest.mark.parametrize(
    ("frames", "tail"),
    [
        ((3,), ["-s", "3", "-e", "3", "-j", "1", "-a"]),
        ((1, 3, 5, 7), ["-s", "1", "-e", "7", "-j", "2", "-a"]),
        ((1, 2, 4), ["-f", "1,2,4"]),
    ],
)
def test_frame_arguments(frames: tuple[int, ...], tail: list[str]) -> None:
    assert build_command(job(frames=frames))[-len(tail) :] == tail


@pytest.mark.parametrize(
    ("fmt", "flag", "extension"),
    [
        ("png", "PNG", "png"),
        ("jpg", "JPEG", "jpg"),
        ("exr", "OPEN_EXR", "exr"),
        ("TIFF", "TIFF", "tif"),
    ],
)
def test_output_formats(fmt: str, flag: str, extension: str) -> None:
    chunk_job = job(output_format=OutputFormat.parse(fmt))
    argv = build_command(chunk_job)
    assert argv[argv.index("-F") + 1] == flag
    assert blender.output_path(chunk_job, 12) == f"/farm/out/task-7/frame_0012.{extension}"


@pytest.mark.parametrize("renderer", ["workbench", "Cycles", "EEVEE"])
def test_engines(renderer: str) -> None:
    argv = build_command(job(), renderer=renderer)
    assert argv[argv.index("-E") + 1] == blender.ENGINES[renderer.lower()]


@pytest.mark.parametrize(
    ("changes", "options", "message"),
    [
        ({}, {"renderer": "arnold"}, "unknown Blender renderer"),
        ({"out_dir": "/farm/out/#1"}, {}, "'#'"),
        ({"out_dir": "//relative"}, {}, "blend-relative"),
        ({}, {"samples": 0}, "samples"),
        ({}, {"threads": -1}, "threads"),
    ],
)
def test_build_refuses(
    changes: dict[str, object], options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        build_command(job(**changes), **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"scene": "relative.blend"}, "absolute"),
        ({"scene": "-P evil.py"}, "absolute"),
        ({"out_dir": ""}, "absolute"),
        ({"frames": ()}, "at least one frame"),
        ({"frames": (2, 1)}, "sorted"),
        ({"frames": (-1, 0)}, "frames go from 0"),
        ({"width": 0}, "resolution"),
        ({"height": 70_000}, "resolution"),
        ({"width": 6.4}, "whole pixels"),
        ({"camera": ""}, "camera name"),
        ({"camera": "Cam\nimport os"}, "control characters"),
        ({"output_format": "gif"}, "unknown output format"),
    ],
)
def test_chunk_job_checks_itself(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        job(**changes)


HOSTILE = [
    "Cam",
    "'); import os; os.system('touch /tmp/pwned'); ('",
    '"); import os; os.system("touch /tmp/pwned"); ("',
    "\\'; __import__('os').system('id') #",
    "摄像机 ✓ \u202e",
    "{camera}",
]


def _config_literal(script: str) -> str:
    """The one argument of json.loads(...) in the script's last statement, as parsed by Python:
    a plain string constant, whatever the camera is called."""
    tree = ast.parse(script)
    call = tree.body[-1].value  # type: ignore[attr-defined]
    (argument,) = call.args[0].args
    assert isinstance(argument, ast.Constant) and isinstance(argument.value, str)
    return argument.value


@pytest.mark.parametrize("name", HOSTILE)
def test_setup_script_carries_the_camera_as_data(name: str) -> None:
    script = setup_script(job(camera=name), samples=3)
    literal = _config_literal(script)
    assert json.loads(literal) == {"width": 64, "height": 36, "camera": name, "samples": 3}
    # the script is the fixed program plus that literal: nothing else varies
    assert script.replace(repr(literal), "X") == setup_script(job(camera="Y")).replace(
        repr(json.dumps({"width": 64, "height": 36, "camera": "Y", "samples": None})), "X"
    )


@given(st.text(min_size=1, max_size=60))
def test_any_camera_name_stays_a_string_literal(name: str) -> None:
    try:
        chunk_job = job(camera=name)
    except ValueError:
        return  # control characters are refused earlier
    assert json.loads(_config_literal(setup_script(chunk_job)))["camera"] == name


def test_setup_script_turns_denoising_off_and_sets_the_resolution() -> None:
    script = setup_script(job(width=1280, height=720))
    for needle in (
        "cycles.use_denoising = False",
        "layer_cycles.use_denoising = False",
        "render.resolution_percentage = 100",
        'render.resolution_x = cfg["width"]',
        "raise RuntimeError(",
    ):
        assert needle in script
    ast.parse(script)


CYCLES_LINES = [
    "Fra:2 Mem:8.47M (Peak 10.20M) | Time:00:00.01 | Mem:0.00M, Peak:0.00M | Scene, ViewLayer "
    "| Synchronizing object | Cube",
    "Fra:2 Mem:9.47M (Peak 10.20M) | Time:00:00.07 | Remaining:00:01.50 | Mem:0.84M, "
    "Peak:0.84M | Scene, ViewLayer | Sample 1/2",
    "Fra:12 Mem:1.5G (Peak 2G) | Time:01:02:03.25 | Rendering 26 / 64 samples\n",
]


def test_parse_progress_lines() -> None:
    first, second, third = (parse_line(line) for line in CYCLES_LINES)
    assert first == FrameProgress(
        frame=2,
        memory_mb=8.47,
        peak_memory_mb=10.2,
        elapsed_s=0.01,
        status="Cube",
    )
    assert second == FrameProgress(
        frame=2,
        memory_mb=9.47,
        peak_memory_mb=10.2,
        sample=1,
        samples=2,
        elapsed_s=0.07,
        remaining_s=1.5,
        status="Sample 1/2",
    )
    assert isinstance(third, FrameProgress)
    assert (third.frame, third.sample, third.samples) == (12, 26, 64)
    assert third.memory_mb == 1536.0 and third.peak_memory_mb == 2048.0
    assert third.elapsed_s == pytest.approx(3723.25)
    assert parse_line("Fra:7") == FrameProgress(frame=7)


def test_parse_saved_and_error_lines() -> None:
    assert parse_line("Saved: '/out/frame_0002.png'") == OutputSaved("/out/frame_0002.png", 2)
    assert parse_line("Saved: '/out/it's/frame_10000.exr'\r\n") == OutputSaved(
        "/out/it's/frame_10000.exr", 10000
    )
    assert parse_line('Saved: "/out/other.png"') == OutputSaved("/out/other.png", None)
    assert parse_line("Error: Build without OpenImageDenoiser") == RendererError(
        "Build without OpenImageDenoiser"
    )
    assert parse_line("Error: Cannot render, no camera") == RendererError(
        "Cannot render, no camera"
    )
    assert parse_line(
        "RuntimeError: yuntu: scene 'Scene' has no camera named 'Nope'"
    ) == RendererError("RuntimeError: yuntu: scene 'Scene' has no camera named 'Nope'")


@pytest.mark.parametrize(
    "line",
    [
        "",
        "Blender 3.4.1",
        "Read blend: /tmp/scene.blend",
        " Time: 00:00.22 (Saving: 00:00.14)",
        "Blender quit",
        "Error: Not freed memory blocks: 1, total unfreed memory 0.000214 MB",
        "Managed to successfully fallback to surfaceless EGL rendering!",
        "Frame:2 is not a Fra line",
        "Saved: no quotes",
        'yuntu: setup done {"engine": "CYCLES", "camera": "Cam"}',
    ],
)
def test_other_lines_are_ignored(line: str) -> None:
    assert parse_line(line) is None


@given(st.text(max_size=300))
def test_parse_line_never_raises(line: str) -> None:
    parse_line(line)
