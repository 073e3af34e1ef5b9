"""The agent's renderers, run for real: the no-op renderer, Blender on a tiny generated scene
(skipped without Blender unless CI=true), and command templates driven by a fake renderer this
file writes (a Python script honouring the template's command line). Processes are checked for
what the agent relies on: exit codes, CPU time and peak memory of the whole process tree, lines
parsed into events, the process group killed on stop, and no YUNTU_* variable passed on."""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
import time
from pathlib import Path

import pytest

from tests.render.test_blender_real import MAKE_SCENE
from tests.support.blender_scene import need_blender, run_scene_script
from yuntu.render.agent.runners import (
    BlenderRenderer,
    NoopRenderer,
    RendererMissing,
    Renderers,
    RunResult,
    TemplateRenderer,
    collect_outputs,
)
from yuntu.render.command_template import CommandTemplate
from yuntu.render.contract import ChunkJob, FrameProgress, OutputFormat, OutputSaved, RenderEvent
from yuntu.render.settings import RenderSettings
from yuntu.render.settings import TemplateRenderer as TemplateSetting

pytestmark = pytest.mark.anyio

FAKE_RENDERER = """
import os, signal, subprocess, sys, time

args = sys.argv[1:]
opts = dict(zip(args[0:-1:2], args[1::2]))
scene, out_dir = args[-1], opts["-o"]
frames = range(int(opts["-s"]), int(opts["-e"]) + 1)
mode = os.environ.get("FAKE_MODE", "ok")
print("fake renderer: scene", scene, "camera", opts.get("-cam"), flush=True)
print("env token:", os.environ.get("YUNTU_AGENT_TOKEN"), flush=True)
if mode == "burn":  # CPU and memory in a grandchild, which this process waits for
    subprocess.run([sys.executable, "-c", "import time\\n"
        "x = bytearray(64 * 1024 * 1024)\\n"
        "for i in range(0, len(x), 4096): x[i] = 1\\n"
        "t = time.process_time()\\n"
        "while time.process_time() - t < 0.3: pass"], check=True)
if mode in ("hang", "stubborn"):
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c",
        "import signal, time\\n"
        + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n" if mode == "stubborn" else "")
        + "time.sleep(60)"])
    with open(os.environ["FAKE_PIDS"], "w") as f:
        f.write(f"{os.getpid()} {child.pid}")
    time.sleep(60)
if mode == "straggler":  # leaves a child behind that holds stdout open
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with open(os.environ["FAKE_PIDS"], "w") as f:
        f.write(f"{child.pid}")
for frame in frames:
    for percent in (50, 100):
        print(f"frame {frame}: {percent}% done", flush=True)
    if mode == "fail" and frame == frames[-1]:
        print("ERROR: out of licenses", file=sys.stderr, flush=True)
        sys.exit(3)
    path = os.path.join(out_dir, f"shot.{frame:04d}.png")
    with open(path, "wb") as f:
        f.write(b"fake image %d" % frame)
    print(f"writing file '{path}'", flush=True)
"""


def write_fake_renderer(directory: Path) -> Path:
    """FAKE_RENDERER as an executable `fakerender` in `directory/bin`."""
    script = directory / "bin" / "fakerender"
    script.parent.mkdir()
    script.write_text(f"#!{sys.executable}\n{FAKE_RENDERER}")
    script.chmod(0o755)
    return script


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    return write_fake_renderer(tmp_path)


def template_renderer(script: Path, *, per_frame: bool = False) -> TemplateRenderer:
    frames = "-s {frame} -e {frame}" if per_frame else "-s {start} -e {end}"
    template = CommandTemplate(
        template=f"{shlex.quote(str(script))} {frames} -o {{out_dir}} [-cam {{camera}}] {{scene}}",
        progress_pattern=r"frame (?P<frame>\d+): (?P<percent>\d+)% done",
        output_pattern=r"writing file '(?P<path>[^']+)'",
        error_pattern=r"^ERROR: (?P<message>.+)",
    )
    renderer = TemplateRenderer("fake/arnold", template)
    renderer.terminate_grace = 0.3
    return renderer


def make_job(tmp_path: Path, frames: tuple[int, ...], **extra: object) -> ChunkJob:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    scene = tmp_path / "scene file.ma"
    scene.touch()
    return ChunkJob(scene=str(scene), frames=frames, out_dir=str(out), width=64, height=36, **extra)


class Lines:
    def __init__(self) -> None:
        self.items: list[tuple[str, str, RenderEvent | None]] = []

    def __call__(self, level: str, line: str, event: RenderEvent | None) -> None:
        self.items.append((level, line, event))

    def events(self, kind: type) -> list:
        return [event for _, _, event in self.items if isinstance(event, kind)]

    def text(self) -> str:
        return "\n".join(line for _, line, _ in self.items)


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a parent that is not us counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def listing(directory: str) -> list[str]:
    return sorted(p.name for p in Path(directory).iterdir())


def read_if_any(path: Path) -> str:
    return path.read_text().strip() if path.exists() else ""


async def wait_for_file(path: Path, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text := read_if_any(path):
            return text
        await asyncio.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


# -- the no-op renderer -----------------------------------------------------------------------


async def test_noop_renderer_writes_a_tiny_file_per_frame(tmp_path):
    job = make_job(tmp_path, (1, 2, 3), output_format=OutputFormat.JPEG)
    lines = Lines()
    result = await NoopRenderer().render(job, "cycles", lines)
    assert result.exit_code == 0 and result.core_seconds == 0
    assert listing(job.out_dir) == [
        "frame_0001.jpg",
        "frame_0002.jpg",
        "frame_0003.jpg",
    ]
    assert [e.frame for e in lines.events(OutputSaved)] == [1, 2, 3]
    assert [e.frame for e in lines.events(FrameProgress)] == [1, 2, 3]
    outputs, missing = collect_outputs(job, result.saved)
    assert [(o.filename, o.frame) for o in outputs] == [
        ("frame_0001.jpg", 1),
        ("frame_0002.jpg", 2),
        ("frame_0003.jpg", 3),
    ]
    assert missing == []


async def test_noop_renderer_can_write_nothing(tmp_path):
    renderer = NoopRenderer(write_files=False)
    job = make_job(tmp_path, (4, 5))
    result = await renderer.render(job, "cycles", Lines())
    assert result.exit_code == 0 and listing(job.out_dir) == []
    assert not renderer.expects_outputs
    assert collect_outputs(job, result.saved) == ([], [4, 5])


# -- command templates, driven by the fake renderer --------------------------------------------


async def test_template_renderer_runs_parses_and_measures(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "burn")
    monkeypatch.setenv("YUNTU_AGENT_TOKEN", "yta_must_not_leak")
    job = make_job(tmp_path, (3, 4, 5), camera="Main Cam; rm -rf /")
    lines = Lines()
    result = await template_renderer(fake).render(job, "arnold", lines)

    assert result.exit_code == 0, lines.text()
    assert "camera Main Cam; rm -rf /" in lines.text()  # one argument, never a shell
    assert "env token: None" in lines.text()
    # the grandchild's 0.3 s of CPU and 64 MiB are the renderer's, as the process reaped it
    assert result.core_seconds >= 0.25, result
    assert result.peak_memory_bytes >= 64 * 1024 * 1024, result
    assert result.duration_ms >= 250
    progress = lines.events(FrameProgress)
    assert [(e.frame, e.percent) for e in progress][:2] == [(3, 50.0), (3, 100.0)]
    assert [e.path for e in result.saved] == [
        os.path.join(job.out_dir, f"shot.{f:04d}.png") for f in (3, 4, 5)
    ]
    outputs, missing = collect_outputs(job, result.saved)
    assert [(o.filename, o.frame) for o in outputs] == [
        ("shot.0003.png", 3),
        ("shot.0004.png", 4),
        ("shot.0005.png", 5),
    ]
    assert missing == []


async def test_a_failing_command_stops_the_chunk_with_its_exit_code(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "fail")
    job = make_job(tmp_path, (1, 2, 3))
    lines = Lines()
    # one process per frame: each fails on its last (only) frame, so the first stops the chunk
    result = await template_renderer(fake, per_frame=True).render(job, "arnold", lines)
    assert result.exit_code == 3
    assert result.errors == ["out of licenses"]
    assert [line for level, line, _ in lines.items if level == "error"] == [
        "ERROR: out of licenses"
    ]
    assert result.saved == [] and "frame 2" not in lines.text()
    assert result.core_seconds > 0 and result.peak_memory_bytes > 0
    assert collect_outputs(job, result.saved) == ([], [1, 2, 3])


async def test_per_frame_commands_add_up(tmp_path, fake, monkeypatch):
    monkeypatch.setenv("FAKE_MODE", "ok")
    job = make_job(tmp_path, (7, 9))
    result = await template_renderer(fake, per_frame=True).render(job, "arnold", Lines())
    assert result.exit_code == 0
    assert [e.frame for e in result.saved] == [None, None]  # the pattern has no frame group
    outputs, missing = collect_outputs(job, result.saved)
    assert [(o.filename, o.frame) for o in outputs] == [("shot.0007.png", 7), ("shot.0009.png", 9)]
    assert missing == []


@pytest.mark.parametrize("mode", ["hang", "stubborn"])
async def test_stopping_kills_the_whole_process_group(tmp_path, fake, monkeypatch, mode):
    """Cancelling `render` sends SIGTERM to the group, then SIGKILL after the grace period to
    processes that ignore it (the renderer and the child it started)."""
    pids = tmp_path / "pids"
    monkeypatch.setenv("FAKE_MODE", mode)
    monkeypatch.setenv("FAKE_PIDS", str(pids))
    job = make_job(tmp_path, (1,))
    render = asyncio.create_task(template_renderer(fake).render(job, "arnold", Lines()))
    leader, child = map(int, (await wait_for_file(pids)).split())
    assert alive(leader) and alive(child)

    started = time.monotonic()
    render.cancel()
    with pytest.raises(asyncio.CancelledError):
        await render
    assert time.monotonic() - started < 5
    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:  # init reaps the orphan
        await asyncio.sleep(0.02)
    assert not alive(leader) and not alive(child)


async def test_what_a_renderer_leaves_behind_is_killed(tmp_path, fake, monkeypatch):
    """A child that outlives the renderer (and holds its stdout) neither keeps the frame
    running nor survives it."""
    pids = tmp_path / "pids"
    monkeypatch.setenv("FAKE_MODE", "straggler")
    monkeypatch.setenv("FAKE_PIDS", str(pids))
    job = make_job(tmp_path, (2,))
    started = time.monotonic()
    result = await template_renderer(fake).render(job, "arnold", Lines())
    assert result.exit_code == 0 and time.monotonic() - started < 10
    straggler = int(read_if_any(pids))
    deadline = time.monotonic() + 5
    while alive(straggler) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert not alive(straggler)


async def test_a_renderer_that_cannot_start_is_missing(tmp_path):
    template = CommandTemplate(template=f"{tmp_path}/nowhere -s {{start}} -e {{end}} {{scene}}")
    with pytest.raises(RendererMissing, match="cannot start"):
        await TemplateRenderer("x", template).render(make_job(tmp_path, (1,)), "x", Lines())
    with pytest.raises(RendererMissing):
        await BlenderRenderer(str(tmp_path / "blender")).render(
            make_job(tmp_path, (1,)), "cycles", Lines()
        )


# -- choosing renderers and collecting outputs --------------------------------------------------


def test_renderers_from_settings(fake):
    settings = RenderSettings(
        render_blender_path="/nonexistent/blender",
        render_templates={
            "fake/arnold": TemplateSetting(template=f"{fake} -s {{start}} -e {{end}} {{scene}}"),
            "maya": TemplateSetting(template="no-such-maya -s {start} -e {end} {scene}"),
        },
    )
    renderers = Renderers.from_settings(settings)
    assert renderers.find("Fake", "Arnold").name == "fake/arnold"
    assert renderers.find("maya", "arnold").name == "maya"  # the program's template
    assert renderers.find("blender", "cycles").name == "blender"
    assert renderers.find("noop", "cycles").name == "noop"
    assert renderers.find("houdini", "karma") is None
    # offered by default: what is found here, and never the no-op renderer
    assert renderers.detect() == ["fake/arnold"]
    assert renderers.unknown(["blender", "maya/vray", "noop"]) == ["maya/vray"]


def test_collect_outputs_skips_links_and_hidden_files_and_flattens(tmp_path):
    job = make_job(tmp_path, (1, 2, 3))
    out = Path(job.out_dir)
    (out / "beauty.0001.exr").write_bytes(b"1")
    (out / "aov").mkdir()
    (out / "aov" / "depth.0002.exr").write_bytes(b"2")
    (out / ".tmp0003").write_bytes(b"hidden")
    (out / "frame_0003.png").symlink_to("/etc/hostname")
    (out / "render.log").write_bytes(b"no frame number")
    saved = [OutputSaved(path="render.log", frame=3)]  # a relative path, named by the renderer
    outputs, missing = collect_outputs(job, saved)
    assert [(o.filename, o.frame) for o in outputs] == [
        ("beauty.0001.exr", 1),
        ("render.log", 3),
        ("aov_depth.0002.exr", 2),
    ]
    assert missing == []
    (tmp_path / "one").mkdir()
    one = make_job(tmp_path / "one", (42,))
    Path(one.out_dir, "final.png").write_bytes(b"x")
    assert [(o.filename, o.frame) for o in collect_outputs(one, [])[0]] == [("final.png", 42)]


# -- Blender for real ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def blend(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("agent-blend") / "tiny.blend"
    return run_scene_script(need_blender(), MAKE_SCENE, path)


@pytest.mark.slow
async def test_blender_renderer_renders_a_chunk(blend, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    job = ChunkJob(
        scene=str(blend), frames=(2, 4), out_dir=str(out), width=32, height=18, camera="Cam"
    )
    lines = Lines()
    # Cycles (2 samples, as saved) prints the Fra: progress lines; Workbench prints none
    result = await BlenderRenderer(need_blender(), threads=1).render(job, "cycles", lines)
    assert result.exit_code == 0, lines.text()[-3000:]
    assert result.core_seconds > 0 and result.peak_memory_bytes > 10 * 1024 * 1024
    assert {e.frame for e in lines.events(FrameProgress)} == {2, 4}
    outputs, missing = collect_outputs(job, result.saved)
    assert [(o.filename, o.frame) for o in outputs] == [
        ("frame_0002.png", 2),
        ("frame_0004.png", 4),
    ]
    assert missing == []


@pytest.mark.slow
async def test_blender_setup_failure_is_a_failed_exit(blend, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    job = ChunkJob(
        scene=str(blend), frames=(1,), out_dir=str(out), width=32, height=18, camera="Nope"
    )
    result: RunResult = await BlenderRenderer(need_blender()).render(job, "workbench", Lines())
    assert result.exit_code == 2
    assert any("has no camera named" in message for message in result.errors)


def test_per_sample_lines_travel_as_progress_not_as_log_lines() -> None:
    from yuntu.render.agent.runtime import _sample_tick

    def tick(sample: int | None, samples: int | None = 128) -> bool:
        return _sample_tick(FrameProgress(frame=1, sample=sample, samples=samples))

    assert [tick(1), tick(2), tick(127), tick(128)] == [False, True, True, False]
    assert not tick(None) and not tick(5, None) and not _sample_tick(None)
