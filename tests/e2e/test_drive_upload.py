"""The whole upload workflow against a real `yuntu serve` over TCP, on the local and S3 backends
and on SQLite and PostgreSQL: a 200-file folder tree (mixed sizes, one over 50 MiB), duplicates
through instant upload with proof of possession, a client restart in the middle of a multipart
upload (resumed from the parts listing), then every file and the ZIP downloaded and compared
by checksum, and `yuntu drive fsck` clean at the end."""

from __future__ import annotations

import hashlib
import io
import os
import random
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import BACKENDS
from tests.e2e.conftest import running_server

pytestmark = pytest.mark.slow
MiB = 1024 * 1024
API = "/api/v1"


def build_tree(seed: int) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """(earlier backup, new folder tree): the tree reuses 30 of the backup's contents, has two
    paths with identical new content, a zero-byte file, multipart-sized files and one 51 MiB."""
    rng = random.Random(seed)
    backup = {f"old/{i}.dat": rng.randbytes(rng.randint(1, 64 * 1024)) for i in range(30)}
    tree: dict[str, bytes] = {}
    reused = list(backup.values())
    for i in range(200):
        path = f"project/scene{i % 7}/shot{i % 5}/take-{i:03d}.bin"
        if i < 30:
            tree[path] = reused[i]
        elif i == 30:
            tree[path] = b""
        elif i == 31:
            tree[path] = rng.randbytes(51 * MiB + 4321)
        elif i in (32, 33):
            tree[path] = rng.randbytes(6 * MiB + i)
        else:
            tree[path] = rng.randbytes(rng.choice((10, 500, 4096, 70_000, 300_000)))
    # identical new content at two paths
    tree["project/copies/one.bin"] = tree["project/copies/two.bin"] = rng.randbytes(123_456)
    del tree["project/scene6/shot4/take-034.bin"], tree["project/scene0/shot0/take-035.bin"]
    assert len(tree) == 200
    return backup, tree


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def manifest(files: dict[str, bytes]) -> list[dict[str, Any]]:
    return [{"path": p, "size": len(d), "md5": md5(d)} for p, d in files.items()]


def absolute(base: str, url: str) -> str:
    return f"{base}{url}" if url.startswith("/") else url


class Client:
    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self.base = base
        self.headers = headers
        self.http = httpx.Client(base_url=base, headers=headers, timeout=120)

    def ok(self, response: httpx.Response, status: int = 200) -> Any:
        assert response.status_code == status, response.text
        return response.json()["data"]

    def create_task(self, name: str, files: dict[str, bytes]) -> dict[str, Any]:
        body = {"name": name, "files": manifest(files)}
        return self.ok(self.http.post(f"{API}/upload-tasks", json=body), 201)

    def direct(self, task_id: str, file_id: str, data: bytes) -> None:
        url = f"{API}/upload-tasks/{task_id}/files/{file_id}/upload"
        assert self.ok(self.http.post(url, content=data))["status"] == "completed"

    def part(self, url: str, number: int, data: bytes) -> None:
        self.ok(
            self.http.post(f"{url}/multipart/upload", params={"part_number": number}, content=data)
        )


def upload_all(
    client: Client,
    task: dict[str, Any],
    files: dict[str, bytes],
    skip: frozenset[str] = frozenset(),
) -> None:
    for entry in task["files"]:
        if entry["id"] in skip:
            continue
        data = files[entry["path"]]
        if len(data) <= 5 * MiB:
            client.direct(task["id"], entry["id"], data)
            continue
        url = f"{API}/upload-tasks/{task['id']}/files/{entry['id']}"
        plan = client.ok(client.http.post(f"{url}/multipart/init", json={}))
        size = plan["part_size"]
        parts = [data[i : i + size] for i in range(0, len(data), size)]
        order = list(range(1, len(parts) + 1))
        if len(parts) > 6:
            # send half the parts (out of order), then "crash" and resume with a new client
            first = order[: len(order) // 2]
            for number in reversed(first):
                client.part(url, number, parts[number - 1])
            client.http.close()
            client.http = httpx.Client(base_url=client.base, headers=client.headers, timeout=120)
            again = client.ok(client.http.post(f"{url}/multipart/init", json={}))
            assert again["upload_id"] == plan["upload_id"]
            listing = client.ok(client.http.get(f"{url}/multipart"))
            assert sorted(listing["missing"]) == order[len(first) :]
            order = listing["missing"]
        for number in order:
            client.part(url, number, parts[number - 1])
        done = client.ok(client.http.post(f"{url}/multipart/complete"))
        assert done["status"] == "completed"
        assert done["sha256"] == hashlib.sha256(data).hexdigest()


def prove(client: Client, task: dict[str, Any], files: dict[str, bytes]) -> dict[str, str]:
    """Instant upload: challenge every file, answer with the hash of the asked ranges."""
    by_id = {entry["id"]: files[entry["path"]] for entry in task["files"]}
    url = f"{API}/upload-tasks/{task['id']}/files/check"
    challenged = client.ok(client.http.post(url, json={"files": [{"file_id": i} for i in by_id]}))
    proofs = []
    for answer in challenged["files"]:
        if answer["result"] != "challenge":
            continue
        challenge = answer["challenge"]
        digest = hashlib.sha256(bytes.fromhex(challenge["nonce"]))
        data = by_id[answer["file_id"]]
        for offset, length in challenge["ranges"]:
            digest.update(data[offset : offset + length])
        proofs.append(
            {
                "file_id": answer["file_id"],
                "proof": {"token": challenge["token"], "digest": digest.hexdigest()},
            }
        )
    proved = client.ok(client.http.post(url, json={"files": proofs}))
    return {answer["file_id"]: answer["result"] for answer in proved["files"]}


@pytest.mark.parametrize("storage", ["local", "s3"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_folder_tree_round_trip(
    backend: str, storage: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    extra = {"YUNTU_SECRET_KEY": "e2e-secret-key-0123456789-abcdefghijklmnop"}
    if storage == "s3":
        extra["YUNTU_STORAGE_URL"] = request.getfixturevalue("s3_storage_url")
    backup, tree = build_tree(seed=len(backend) * 7 + len(storage))
    with running_server(backend, tmp_path, **extra) as server:
        registered = httpx.post(
            f"{server.base_url}{API}/auth/register",
            json={"username": "e2e", "password": "e2e-password-42"},
        )
        token = registered.json()["data"]["access_token"]
        client = Client(server.base_url, {"Authorization": f"Bearer {token}"})

        earlier = client.create_task("backup", backup)
        upload_all(client, earlier, backup)

        task = client.create_task("tree", tree)
        results = prove(client, task, tree)
        instant = {file_id for file_id, result in results.items() if result == "instant"}
        reused = set(backup.values())
        expected_instant = {e["id"] for e in task["files"] if tree[e["path"]] in reused}
        assert instant == expected_instant and len(instant) == 30
        upload_all(client, task, tree, skip=frozenset(instant))

        state = client.ok(client.http.get(f"{API}/upload-tasks/{task['id']}"))
        assert state["status"] == "completed", state
        assert (state["completed_files"], state["instant_files"]) == (170, 30)
        assert state["saved_bytes"] == sum(len(d) for d in tree.values() if d in reused)

        links = client.ok(client.http.get(f"{API}/upload-tasks/{task['id']}/download"))
        assert len(links["files"]) == 200
        with httpx.Client(timeout=120) as raw:
            for link in links["files"]:
                body = raw.get(absolute(server.base_url, link["url"])).content
                assert hashlib.sha256(body).digest() == hashlib.sha256(tree[link["path"]]).digest()

        archive = client.http.get(f"{API}/upload-tasks/{task['id']}/archive.zip")
        assert archive.status_code == 200
        with zipfile.ZipFile(io.BytesIO(archive.content)) as bundle:
            names = {info.filename: info for info in bundle.infolist()}
            assert set(names) == set(tree)
            for name in names:
                assert md5(bundle.read(name)) == md5(tree[name])

        fsck = server.cli("drive", "fsck", "--json")
        assert fsck.returncode == 0, fsck.stdout + fsck.stderr
        client.http.close()


def test_tree_is_what_the_issue_asks() -> None:
    _, tree = build_tree(seed=1)
    sizes = sorted(len(d) for d in tree.values())
    assert len(tree) == 200 and sizes[-1] > 50 * MiB and sizes[0] == 0
    assert os.path.commonpath(list(tree)) == "project"
