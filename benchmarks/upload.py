"""Upload pipeline figures on the embedded default (`yuntu serve`: SQLite, local disk), each with
a baseline measured in the same run.

1. MB/s of a 1 GiB multipart upload through the API (5 MiB parts, in order, one client) against
   the least work any verifying server must do on the same bytes: one process reading the file
   in 8 MiB blocks, updating MD5 and SHA-256 and writing a copy to the same disk with fsync.
   Goal: ratio >= 0.5, and faster than tuspyserver's ~75 MB/s measured on these machines.
2. Time of an instant-upload check of 10,000 files: the challenge round and the proof round
   (all 10,000 are hits, so the proof round reads 40,000 ranges from storage). Goal <= 1 s.
3. MB/s of the streaming ZIP of a task's files against `zip -0` of the same files (written to
   /dev/null). Goal: ratio >= 0.8.
4. Time to list the first page of a folder holding 100,000 files. Goal <= 50 ms. (Context:
   `GET /health` latency in the same run.)

    .venv/bin/python benchmarks/upload.py [--size-mib 1024] [--files 10000] [--listing 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from serving import free_port, yuntu

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MiB = 1024 * 1024
API = "/api/v1"


class Server:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data_dir = workdir / "var"
        env = {
            **os.environ,
            "YUNTU_DATA_DIR": str(self.data_dir),
            "YUNTU_PORT": str(self.port),
            "YUNTU_LOG_LEVEL": "WARNING",
            "YUNTU_LOG_JSON": "false",
            "YUNTU_SECRET_KEY": "benchmark-secret-key-0123456789-abcdefghijkl",
        }
        for key in ("YUNTU_DATABASE_URL", "YUNTU_REDIS_URL", "YUNTU_STORAGE_URL"):
            env.pop(key, None)
        self.log = (workdir / "server.log").open("wb")
        self.process = subprocess.Popen(
            [*yuntu(), "serve", "--port", str(self.port)],
            env=env,
            cwd=workdir,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


def make_file(path: Path, size: int) -> str:
    block = os.urandom(8 * MiB)
    md5 = hashlib.md5()
    with path.open("wb") as handle:
        written = 0
        while written < size:
            chunk = block[: min(len(block), size - written)]
            # vary each block a little so the file is not one repeated block
            chunk = written.to_bytes(8, "little") + chunk[8:]
            handle.write(chunk)
            md5.update(chunk)
            written += len(chunk)
    return md5.hexdigest()


def baseline_copy(source: Path, target: Path) -> float:
    """Read 8 MiB blocks, MD5 + SHA-256, write a copy with fsync: MB/s."""
    started = time.perf_counter()
    md5, sha = hashlib.md5(), hashlib.sha256()
    with source.open("rb") as reader, target.open("wb") as writer:
        while block := reader.read(8 * MiB):
            md5.update(block)
            sha.update(block)
            writer.write(block)
        writer.flush()
        os.fsync(writer.fileno())
    elapsed = time.perf_counter() - started
    return source.stat().st_size / MiB / elapsed


async def login(http: httpx.AsyncClient) -> dict[str, str]:
    response = await http.post(
        f"{API}/auth/register", json={"username": "bench", "password": "benchmark-pass-42"}
    )
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['data']['access_token']}"}


async def create_task(
    http: httpx.AsyncClient, headers: dict[str, str], files: list[dict[str, Any]], name: str
) -> dict[str, Any]:
    response = await http.post(
        f"{API}/upload-tasks", json={"name": name, "files": files}, headers=headers, timeout=120
    )
    response.raise_for_status()
    return response.json()["data"]


async def upload_multipart(
    http: httpx.AsyncClient, headers: dict[str, str], path: Path, md5: str
) -> float:
    size = path.stat().st_size
    task = await create_task(http, headers, [{"path": path.name, "size": size, "md5": md5}], "big")
    url = f"{API}/upload-tasks/{task['id']}/files/{task['files'][0]['id']}"
    started = time.perf_counter()
    init = (await http.post(f"{url}/multipart/init", json={}, headers=headers)).json()["data"]
    part_size = init["part_size"]
    with path.open("rb") as reader:
        for number in range(1, init["part_count"] + 1):
            data = reader.read(part_size)
            response = await http.post(
                f"{url}/multipart/upload",
                params={"part_number": number},
                content=data,
                headers=headers,
            )
            response.raise_for_status()
    done = await http.post(f"{url}/multipart/complete", headers=headers, timeout=600)
    done.raise_for_status()
    elapsed = time.perf_counter() - started
    return size / MiB / elapsed


async def instant_check(
    http: httpx.AsyncClient, headers: dict[str, str], count: int
) -> dict[str, float]:
    """Upload `count` small distinct files once, then check the same content in a new task."""
    contents = [i.to_bytes(8, "little") + os.urandom(1016) for i in range(count)]
    manifest = [
        {"path": f"d{i // 100}/f{i}.bin", "size": len(c), "md5": hashlib.md5(c).hexdigest()}
        for i, c in enumerate(contents)
    ]
    seed = await create_task(http, headers, manifest, "seed")
    print(f"  seeded the manifest of {count} files", file=sys.stderr)
    semaphore = asyncio.Semaphore(16)
    started = time.perf_counter()

    async def send(entry: dict[str, Any], data: bytes) -> None:
        async with semaphore:
            response = await http.post(
                f"{API}/upload-tasks/{seed['id']}/files/{entry['id']}/upload",
                content=data,
                headers=headers,
            )
            response.raise_for_status()

    await asyncio.gather(*(send(e, contents[e["position"]]) for e in seed["files"]))
    seed_seconds = time.perf_counter() - started

    print(f"  uploaded {count} files in {seed_seconds:.1f} s", file=sys.stderr)
    task = await create_task(http, headers, manifest, "again")
    url = f"{API}/upload-tasks/{task['id']}/files/check"
    started = time.perf_counter()
    challenges = await http.post(
        url,
        json={"files": [{"file_id": e["id"]} for e in task["files"]]},
        headers=headers,
        timeout=120,
    )
    challenges.raise_for_status()
    challenge_seconds = time.perf_counter() - started
    by_id = {e["id"]: contents[e["position"]] for e in task["files"]}
    proofs = []
    for answer in challenges.json()["data"]["files"]:
        challenge = answer["challenge"]
        data = by_id[answer["file_id"]]
        digest = hashlib.sha256(bytes.fromhex(challenge["nonce"]))
        for offset, length in challenge["ranges"]:
            digest.update(data[offset : offset + length])
        proofs.append(
            {
                "file_id": answer["file_id"],
                "proof": {"token": challenge["token"], "digest": digest.hexdigest()},
            }
        )
    started = time.perf_counter()
    proved = await http.post(url, json={"files": proofs}, headers=headers, timeout=120)
    proved.raise_for_status()
    proof_seconds = time.perf_counter() - started
    results = [answer["result"] for answer in proved.json()["data"]["files"]]
    assert results.count("instant") == count, {r: results.count(r) for r in set(results)}
    return {
        "seed_upload_s": seed_seconds,
        "challenge_s": challenge_seconds,
        "proof_s": proof_seconds,
        "task_id": task["id"],
    }


async def zip_speed(
    http: httpx.AsyncClient, headers: dict[str, str], workdir: Path, files: int, each_mib: int
) -> tuple[float, float]:
    folder = workdir / "zipsrc"
    folder.mkdir()
    manifest, paths = [], []
    for i in range(files):
        path = folder / f"clip{i:03d}.bin"
        md5 = make_file(path, each_mib * MiB)
        manifest.append({"path": path.name, "size": path.stat().st_size, "md5": md5})
        paths.append(path)
    task = await create_task(http, headers, manifest, "zip")
    for entry, path in zip(task["files"], paths, strict=True):
        url = f"{API}/upload-tasks/{task['id']}/files/{entry['id']}"
        init = (await http.post(f"{url}/multipart/init", json={}, headers=headers)).json()["data"]
        with path.open("rb") as reader:
            for number in range(1, init["part_count"] + 1):
                await http.post(
                    f"{url}/multipart/upload",
                    params={"part_number": number},
                    content=reader.read(init["part_size"]),
                    headers=headers,
                )
        (
            await http.post(f"{url}/multipart/complete", headers=headers, timeout=600)
        ).raise_for_status()
    total = sum(p.stat().st_size for p in paths) / MiB

    started = time.perf_counter()
    received = 0
    async with http.stream(
        "GET", f"{API}/upload-tasks/{task['id']}/archive.zip", headers=headers, timeout=600
    ) as response:
        response.raise_for_status()
        async for chunk in response.aiter_raw():
            received += len(chunk)
    ours = total / (time.perf_counter() - started)

    started = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        subprocess.run(
            ["zip", "-0", "-q", "-", *[p.name for p in paths]], cwd=folder, stdout=sink, check=True
        )
    theirs = total / (time.perf_counter() - started)
    shutil.rmtree(folder)
    return ours, theirs


async def listing(
    http: httpx.AsyncClient, headers: dict[str, str], server: Server, count: int
) -> dict[str, float]:
    """Put `count` files into one folder (bulk rows, sharing one blob: setup, not timed), then
    time the first page of the listing in three sort orders."""
    from benchmarks.seed_folder import seed_folder

    drive = (await http.get(f"{API}/drives/default", headers=headers)).json()["data"]
    folder_id = await seed_folder(server.data_dir / "yuntu.db", int(drive["id"]), count)
    figures: dict[str, float] = {}
    for sort in ("name", "-size", "-updated"):
        samples = []
        for _ in range(15):
            started = time.perf_counter()
            response = await http.get(
                f"{API}/drives/{drive['id']}/children",
                params={"folder_id": folder_id, "sort": sort, "page": 1, "page_size": 50},
                headers=headers,
            )
            samples.append(time.perf_counter() - started)
            response.raise_for_status()
            assert response.json()["data"]["total"] == count, response.json()["data"]["total"]
        figures[sort] = statistics.median(samples) * 1000
    samples = []
    for _ in range(15):
        started = time.perf_counter()
        (await http.get("/health")).raise_for_status()
        samples.append(time.perf_counter() - started)
    figures["health"] = statistics.median(samples) * 1000
    return figures


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--listing", type=int, default=100_000)
    parser.add_argument("--zip-files", type=int, default=40)
    parser.add_argument("--zip-mib", type=int, default=16)
    parser.add_argument("--only", default="upload,instant,zip,listing")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    workdir = Path(tempfile.mkdtemp(prefix="yuntu-bench-", dir=os.environ.get("YUNTU_BENCH_DIR")))
    server = Server(workdir)
    try:
        server.wait()
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
        async with httpx.AsyncClient(base_url=server.base, timeout=120, limits=limits) as http:
            headers = await login(http)
            if "upload" in parts:
                source = workdir / "source.bin"
                md5 = make_file(source, args.size_mib * MiB)
                # The disk's write-back state makes single runs noisy: baseline before and
                # after, and their mean.
                before = baseline_copy(source, workdir / "copy.bin")
                (workdir / "copy.bin").unlink()
                ours = await upload_multipart(http, headers, source, md5)
                after = baseline_copy(source, workdir / "copy.bin")
                (workdir / "copy.bin").unlink()
                baseline = (before + after) / 2
                source.unlink()
                print(
                    f"multipart upload {args.size_mib} MiB: {ours:.0f} MB/s; "
                    f"baseline (read+md5+sha256+write+fsync) {baseline:.0f} MB/s "
                    f"({before:.0f} before, {after:.0f} after); "
                    f"ratio {ours / baseline:.2f} (goal >= 0.5; tuspyserver ~75 MB/s)"
                )
            if "instant" in parts:
                figures = await instant_check(http, headers, args.files)
                print(
                    f"instant upload of {args.files} files: challenge round "
                    f"{figures['challenge_s'] * 1000:.0f} ms, proof round "
                    f"{figures['proof_s'] * 1000:.0f} ms (goal <= 1000 ms each); seeding them "
                    f"by direct upload took {figures['seed_upload_s']:.1f} s "
                    f"({args.files / figures['seed_upload_s']:.0f} files/s)"
                )
            if "zip" in parts:
                ours, theirs = await zip_speed(http, headers, workdir, args.zip_files, args.zip_mib)
                print(
                    f"streaming ZIP of {args.zip_files} x {args.zip_mib} MiB: {ours:.0f} MB/s; "
                    f"zip -0: {theirs:.0f} MB/s; ratio {ours / theirs:.2f} (goal >= 0.8)"
                )
            if "listing" in parts:
                figures = await listing(http, headers, server, args.listing)
                print(
                    f"first page of a folder with {args.listing} files: by name "
                    f"{figures['name']:.1f} ms, by size {figures['-size']:.1f} ms, by time "
                    f"{figures['-updated']:.1f} ms (goal <= 50 ms); GET /health "
                    f"{figures['health']:.1f} ms"
                )
    except BaseException:
        server.stop()
        log = (workdir / "server.log").read_text(errors="replace")
        print("server log (tail):\n" + log[-3000:], file=sys.stderr)
        raise
    else:
        server.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
