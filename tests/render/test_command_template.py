"""Command-template renderers: argv built per argument (no shell), optional groups, per-frame
templates, and output lines parsed by the configured patterns."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from yuntu.render.command_template import CommandTemplate
from yuntu.render.contract import ChunkJob, FrameProgress, OutputFormat, OutputSaved, RendererError

MAYA = CommandTemplate(
    template=(
        "Render -r arnold -s {start} -e {end} -b {step} -x {width} -y {height} "
        "[-cam {camera}] -rd {out_dir} -im frame {scene}"
    ),
    progress_pattern=r"(?P<percent>\d+(?:\.\d+)?)% done",
    output_pattern=r"writing file `(?P<path>[^']+)'",
    error_pattern=r"^ERROR\s*\|?\s*(?P<message>.+)$",
)
VRAY = CommandTemplate(
    template=(
        "vray -sceneFile={scene} -frames={frames} -imgFile={out_dir}/frame.{ext} "
        "-imgWidth={width} -imgHeight={height} -display=0"
    ),
    output_pattern=r'Successfully written image file "(?P<path>[^"]+?(?P<frame>\d+)\.\w+)"',
    progress_pattern=r"Rendering frame (?P<frame>\d+) .*?(?P<percent>[\d.]+)%",
)
KICK = CommandTemplate(
    template="kick -i {scene} -o '{out_dir}/frame_{frame:04}.{ext}' -r {width} {height} "
    "[-c {camera}] -dw -dp",
)


def job(**changes: object) -> ChunkJob:
    values: dict[str, object] = {
        "scene": "/farm/scenes/my shot; rm -rf ~.mb",
        "frames": (1, 2, 3, 4),
        "out_dir": "/farm/out/$(id)",
        "width": 64,
        "height": 36,
        "camera": "persp Cam",
        "output_format": OutputFormat.OPEN_EXR,
    }
    values.update(changes)
    return ChunkJob(**values)  # type: ignore[arg-type]


def test_maya_range() -> None:
    assert MAYA.ranges_only and not MAYA.per_frame
    assert MAYA.build(job()) == [
        [
            "Render", "-r", "arnold", "-s", "1", "-e", "4", "-b", "1", "-x", "64", "-y", "36",
            "-cam", "persp Cam", "-rd", "/farm/out/$(id)", "-im", "frame",
            "/farm/scenes/my shot; rm -rf ~.mb",
        ]
    ]  # fmt: skip


def test_optional_group_is_dropped_without_a_value() -> None:
    (argv,) = MAYA.build(job(camera=None, frames=(2, 4, 6)))
    assert "-cam" not in argv
    assert argv[3:9] == ["-s", "2", "-e", "6", "-b", "2"]


def test_range_only_templates_refuse_lists() -> None:
    with pytest.raises(ValueError, match="frame ranges only"):
        MAYA.build(job(frames=(1, 2, 4)))
    no_step = CommandTemplate("Render -s {start} -e {end} {scene}")
    assert no_step.build(job(frames=(5,))) == [
        ["Render", "-s", "5", "-e", "5", "/farm/scenes/my shot; rm -rf ~.mb"]
    ]
    with pytest.raises(ValueError, match=r"no \{step\}"):
        no_step.build(job(frames=(1, 3)))


def test_frame_list_template() -> None:
    assert not VRAY.ranges_only
    (argv,) = VRAY.build(job(frames=(1, 5, 7)))
    assert argv == [
        "vray",
        "-sceneFile=/farm/scenes/my shot; rm -rf ~.mb",
        "-frames=1,5,7",
        "-imgFile=/farm/out/$(id)/frame.exr",
        "-imgWidth=64",
        "-imgHeight=36",
        "-display=0",
    ]


def test_per_frame_template() -> None:
    assert KICK.per_frame
    commands = KICK.build(job(frames=(9, 10), camera=None, output_format=OutputFormat.PNG))
    assert commands == [
        ["kick", "-i", "/farm/scenes/my shot; rm -rf ~.mb", "-o", "/farm/out/$(id)/frame_0009.png",
         "-r", "64", "36", "-dw", "-dp"],
        ["kick", "-i", "/farm/scenes/my shot; rm -rf ~.mb", "-o", "/farm/out/$(id)/frame_0010.png",
         "-r", "64", "36", "-dw", "-dp"],
    ]  # fmt: skip


def test_braces_and_padding() -> None:
    template = CommandTemplate("r '--json={{\"f\":{start:6}}}' --to {end} {scene}")
    (argv,) = template.build(job(frames=(3, 4)))
    assert argv[1] == '--json={"f":000003}'


def test_values_cannot_become_options() -> None:
    with pytest.raises(ValueError, match="into an option"):
        MAYA.build(job(camera="-rd /etc"))
    # inside an argument that already is an option, a leading dash is harmless
    (argv,) = CommandTemplate("r -cam={camera} -f {frames}").build(job(camera="-x"))
    assert argv[1] == "-cam=-x"


def test_a_missing_required_value_is_an_error() -> None:
    template = CommandTemplate("r -cam {camera} -f {frames}")
    with pytest.raises(ValueError, match=r"needs \{camera\}"):
        template.build(job(camera=None))


@given(st.text(min_size=1, max_size=40))
def test_values_never_split_or_merge_arguments(name: str) -> None:
    template = CommandTemplate("r [-cam {camera}] -f {frames} {scene}")
    try:
        chunk_job = job(camera=name)
        (argv,) = template.build(chunk_job)
    except ValueError:
        return  # control characters, or a name that would read as an option
    assert argv == ["r", "-cam", name, "-f", "1,2,3,4", chunk_job.scene]


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("", "empty"),
        ("render 'unclosed {frames}", "cannot be split"),
        ("render {nope} {frames}", "unknown placeholder"),
        ("render {frames", "unmatched brace"),
        ("render frames} {frames}", "unmatched brace"),
        ("render {scene:04} {frames}", "cannot be padded"),
        ("render [-cam {camera} {frames}", "not closed"),
        ("{scene} {frames}", "fixed program name"),
        ("[render] {frames}", "fixed program name"),
        ("render {scene}", "never says which frames"),
        ("render -s {start} {scene}", "needs {end}"),
    ],
)
def test_bad_templates_are_refused(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("}", r"\}")):
        CommandTemplate(template)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"output_pattern": "("}, "not a valid regular expression"),
        ({"output_pattern": "Saved (.*)"}, "path"),
        ({"progress_pattern": r"(\d+)%"}, "named group"),
    ],
)
def test_bad_patterns_are_refused(options: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CommandTemplate("render {frames}", **options)


def test_parse_lines() -> None:
    assert MAYA.parse_line("00:00:03  1024MB   |    40% done - 12 rays/pixel") == FrameProgress(
        frame=None, percent=40.0
    )
    assert MAYA.parse_line("00:00:05 [driver_exr] writing file `/o/frame.0001.exr'\n") == (
        OutputSaved("/o/frame.0001.exr")
    )
    assert MAYA.parse_line("ERROR | license not available") == RendererError(
        "license not available"
    )
    assert MAYA.parse_line("some other line") is None
    assert VRAY.parse_line('Successfully written image file "/o/frame0003.exr"') == OutputSaved(
        "/o/frame0003.exr", 3
    )
    assert VRAY.parse_line("Rendering frame 3 (1/4) ... 12.5%") == FrameProgress(
        frame=3, percent=12.5
    )
    assert KICK.parse_line("anything at all") is None
    whole = CommandTemplate("r {frames}", error_pattern="FATAL")
    assert whole.parse_line("FATAL: out of memory") == RendererError("FATAL: out of memory")
