"""The agent's scene cache: `<work dir>/scenes/<sha256>/<scene name>`, so the chunks of one task
download its scene once. One download per scene at a time (the slots that want it wait for
it); scenes in use are never evicted; past `max_bytes`, the least recently used go first."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import unicodedata
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

from yuntu.render.agent.client import AgentClient, Scene, SceneError

DEFAULT_MAX_BYTES = 20 * 1024**3
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_UNSAFE = re.compile(r"[^\w.+=@ -]")


def safe_name(name: str) -> str:
    """A scene file name fit for a local path and a command line: the base name, no control
    or shell-unfriendly characters, never starting with '-' or '.'."""
    base = unicodedata.normalize("NFC", name.replace("\\", "/").rsplit("/", 1)[-1])
    cleaned = _UNSAFE.sub("_", base).strip(" ")[:200]
    if not cleaned or cleaned[0] in "-.":
        cleaned = "scene" + cleaned
    return cleaned


class SceneCache:
    def __init__(self, root: Path, client: AgentClient, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.root = root
        self.client = client
        self.max_bytes = max_bytes
        self._locks: dict[str, asyncio.Lock] = {}
        self._pins: Counter[str] = Counter()

    def prepare(self) -> None:
        """Create the directory and drop what an interrupted download left."""
        self.root.mkdir(parents=True, exist_ok=True)
        for partial in self.root.glob("*/*.part"):
            partial.unlink(missing_ok=True)

    @contextlib.asynccontextmanager
    async def use(self, scene: Scene) -> AsyncIterator[Path]:
        """The local path of `scene`, fetched if needed and kept while the block runs."""
        digest = scene.sha256.lower()
        if not _SHA256.match(digest):
            raise SceneError("the scene's SHA-256 is not 64 hexadecimal digits")
        self._pins[digest] += 1
        try:
            lock = self._locks.setdefault(digest, asyncio.Lock())
            async with lock:
                path = await self._ensure(scene, digest)
            yield path
        finally:
            self._pins[digest] -= 1
            if not self._pins[digest]:
                del self._pins[digest]

    async def _ensure(self, scene: Scene, digest: str) -> Path:
        folder = self.root / digest
        path = folder / safe_name(scene.name)
        if path.is_file():
            os.utime(folder)  # recently used
            return path
        folder.mkdir(parents=True, exist_ok=True)
        same = [p for p in folder.iterdir() if p.is_file() and not p.name.endswith(".part")]
        if same:  # the same content under another name (the extension matters to renderers)
            try:
                os.link(same[0], path)
            except OSError:  # a file system without hard links
                await asyncio.to_thread(shutil.copyfile, same[0], path)
        else:
            await self.client.download_scene(scene, path)
            await asyncio.to_thread(self._evict, frozenset(self._pins))
        os.utime(folder)
        return path

    def _evict(self, pinned: frozenset[str]) -> None:
        folders = []
        total = 0
        for folder in self.root.iterdir():
            if not folder.is_dir():
                continue
            # the names of one scene are hard links to the same file: count it once
            files = {p.stat().st_ino: p.stat().st_size for p in folder.iterdir() if p.is_file()}
            size = sum(files.values())
            folders.append((folder.stat().st_mtime, size, folder))
            total += size
        for _mtime, size, folder in sorted(folders):
            if total <= self.max_bytes:
                break
            if folder.name in pinned:
                continue
            shutil.rmtree(folder, ignore_errors=True)
            total -= size
