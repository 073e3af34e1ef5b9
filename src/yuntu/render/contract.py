"""What every renderer receives (`ChunkJob`: one frame task's inputs) and what it reports (the
events its output lines parse into), shared by the Blender and command-template renderers.

A ChunkJob checks what it can without the files: absolute paths (so no path can be read as a
command-line option), frames sorted and in range, a sane resolution, and a camera name without
control characters. Values reach renderers as separate arguments or as data, never through a
shell (see blender.py and command_template.py)."""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

from yuntu.render.frames import MAX_FRAME_NUMBER, as_range

MAX_DIMENSION = 65_536  # Blender's largest resolution per side
MAX_CAMERA_NAME = 255


class OutputFormat(StrEnum):
    """Image formats, named as Blender's `-F` names them."""

    PNG = "PNG"
    JPEG = "JPEG"
    OPEN_EXR = "OPEN_EXR"
    TIFF = "TIFF"

    @property
    def extension(self) -> str:
        return _EXTENSIONS[self]

    @classmethod
    def parse(cls, value: str) -> OutputFormat:
        """Case-insensitive, accepting the usual extensions too ("jpg", "exr", "tif")."""
        key = value.strip().upper().replace("-", "_")
        found = _ALIASES.get(key)
        if found is None:
            names = ", ".join(f.value for f in cls)
            raise ValueError(f"unknown output format {value!r} (one of {names})")
        return found


_EXTENSIONS = {
    OutputFormat.PNG: "png",
    OutputFormat.JPEG: "jpg",
    OutputFormat.OPEN_EXR: "exr",
    OutputFormat.TIFF: "tif",
}
_ALIASES = {
    **{f.value: f for f in OutputFormat},
    "JPG": OutputFormat.JPEG,
    "EXR": OutputFormat.OPEN_EXR,
    "OPENEXR": OutputFormat.OPEN_EXR,
    "TIF": OutputFormat.TIFF,
}


def check_camera_name(name: str) -> str:
    """A camera name fit to pass on: 1 to 255 characters, no control characters."""
    if not name or len(name) > MAX_CAMERA_NAME:
        raise ValueError(f"a camera name has 1 to {MAX_CAMERA_NAME} characters")
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in name):
        raise ValueError("a camera name cannot hold control characters")
    return name


@dataclass(frozen=True, slots=True)
class ChunkJob:
    """The inputs of one frame task, as an agent hands them to a renderer."""

    scene: str  # absolute path of the scene file on the agent
    frames: tuple[int, ...]  # sorted, unique
    out_dir: str  # absolute path of an existing, empty directory for this attempt
    width: int
    height: int
    camera: str | None = None
    output_format: OutputFormat = OutputFormat.PNG

    def __post_init__(self) -> None:
        for what, path in (("scene", self.scene), ("output directory", self.out_dir)):
            if not path or "\x00" in path or not os.path.isabs(path):
                raise ValueError(f"the {what} must be an absolute path")
        object.__setattr__(self, "frames", tuple(self.frames))
        as_range(self.frames)  # sorted, unique, not empty
        if self.frames[0] < 0 or self.frames[-1] > MAX_FRAME_NUMBER:
            raise ValueError(f"frames go from 0 to {MAX_FRAME_NUMBER}")
        for side in (self.width, self.height):
            if isinstance(side, bool) or not isinstance(side, int):
                raise ValueError("the resolution is whole pixels")
            if not 1 <= side <= MAX_DIMENSION:
                raise ValueError(f"the resolution is 1 to {MAX_DIMENSION} pixels per side")
        if self.camera is not None:
            check_camera_name(self.camera)
        object.__setattr__(self, "output_format", OutputFormat.parse(str(self.output_format)))

    @property
    def range(self) -> tuple[int, int, int] | None:
        """(start, end, step) when the frames are one arithmetic progression."""
        return as_range(self.frames)


# -- events parsed from a renderer's output lines ---------------------------------------------


@dataclass(frozen=True, slots=True)
class FrameProgress:
    """A renderer is working on `frame` (None when its line does not say which)."""

    frame: int | None
    memory_mb: float | None = None
    peak_memory_mb: float | None = None
    sample: int | None = None
    samples: int | None = None
    percent: float | None = None
    elapsed_s: float | None = None
    remaining_s: float | None = None
    status: str | None = None


@dataclass(frozen=True, slots=True)
class OutputSaved:
    """A renderer wrote an output file."""

    path: str
    frame: int | None = None


@dataclass(frozen=True, slots=True)
class RendererError:
    """A line that reports an error; the exit code still decides whether the frame failed."""

    message: str


RenderEvent = FrameProgress | OutputSaved | RendererError
