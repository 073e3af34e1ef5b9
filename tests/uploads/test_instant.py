"""Instant upload (秒传) with proof of possession, over HTTP: challenge, proof, dedup accounting,
and every way a proof can be refused (wrong digest, expired, tampered, foreign token, no such
content). Each test ends with the accounting invariants recounted in SQL."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from typing import Any

import httpx
import pytest

from tests.conftest import API, TEST_SECRET, bearer, register
from tests.uploads.helpers import (
    assert_accounting,
    create_task,
    drive_usage,
    entry,
    ids_by_path,
    make_team_drive,
    scalar,
    sql,
    store_file,
    user_id,
)
from yuntu.uploads import proofs

pytestmark = pytest.mark.anyio
KEY = proofs.derive_key(TEST_SECRET)


def prove(challenge: dict[str, Any], data: bytes) -> str:
    digest = hashlib.sha256(bytes.fromhex(challenge["nonce"]))
    for offset, length in challenge["ranges"]:
        digest.update(data[offset : offset + length])
    return digest.hexdigest()


async def check(
    client: httpx.AsyncClient, headers: dict[str, str], task: dict[str, Any], files: list[dict]
) -> dict[str, Any]:
    response = await client.post(
        f"{API}/upload-tasks/{task['id']}/files/check", json={"files": files}, headers=headers
    )
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def challenges(client, headers, task, file_ids: list[str]) -> dict[str, dict[str, Any]]:
    data = await check(client, headers, task, [{"file_id": i} for i in file_ids])
    return {item["file_id"]: item for item in data["files"]}


@pytest.fixture
def settings_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    """`indirect` parametrization with "s3" runs the app on S3 storage (moto over loopback)."""
    if getattr(request, "param", None) == "s3":
        return {"storage_url": request.getfixturevalue("s3_storage_url")}
    return {}


async def test_challenge_proof_instant(client, app) -> None:
    """A hit completes without bytes: one more blob reference, the drive charged, nothing sent;
    a miss looks the same until the proof and then answers `upload`."""
    owner_tokens, uploader_tokens = (
        await register(client, "owner"),
        await register(client, "uploader"),
    )
    content = os.urandom(50_000)
    stored = await store_file(app, user_id(owner_tokens), "orig/clip.mov", content)
    other = os.urandom(50_000)  # same size, never stored
    headers = bearer(uploader_tokens)
    task = await create_task(
        client, headers, [entry("in/clip.mov", content), entry("in/miss.mov", other)]
    )
    ids = ids_by_path(task)
    hit_id, miss_id = ids["in/clip.mov"], ids["in/miss.mov"]
    objects_before = sorted([key async for key in app.state.storage.list_keys()])

    round1 = await challenges(client, headers, task, [hit_id, miss_id])
    hit, miss = round1[hit_id], round1[miss_id]
    assert hit["result"] == miss["result"] == "challenge"
    assert hit["status"] == miss["status"] == "pending"
    assert set(hit) == set(miss) and set(hit["challenge"]) == set(miss["challenge"])
    assert len(hit["challenge"]["ranges"]) == len(miss["challenge"]["ranges"]) == 4
    for offset, length in hit["challenge"]["ranges"]:
        assert length == 4096 and 0 <= offset <= 50_000 - 4096
    assert len(hit["challenge"]["token"].split(".")) == 2
    assert abs(len(hit["challenge"]["token"]) - len(miss["challenge"]["token"])) <= 8
    assert hit["challenge"]["nonce"] != miss["challenge"]["nonce"]

    round2 = await check(
        client,
        headers,
        task,
        [
            {
                "file_id": hit_id,
                "proof": {
                    "token": hit["challenge"]["token"],
                    "digest": prove(hit["challenge"], content),
                },
            },
            {
                "file_id": miss_id,
                "proof": {
                    "token": miss["challenge"]["token"],
                    "digest": prove(miss["challenge"], other),  # holds the bytes, not stored
                },
            },
        ],
    )
    verdict = {item["file_id"]: item for item in round2["files"]}
    assert verdict[hit_id]["result"] == "instant" and verdict[hit_id]["status"] == "instant"
    assert verdict[miss_id]["result"] == "upload" and verdict[miss_id]["status"] == "pending"
    assert round2["bytes_saved"] == 50_000 and round2["saved_bytes"] == 50_000
    assert round2["task_status"] == "uploading"

    assert await scalar(app, "SELECT ref_count FROM blobs WHERE id = :b", b=stored["blob_id"]) == 2
    drive_id = int(task["drive_id"])
    assert await drive_usage(app, drive_id) == (50_000, 50_000)  # the miss is still reserved
    assert sorted([key async for key in app.state.storage.list_keys()]) == objects_before
    files = (await client.get(f"{API}/upload-tasks/{task['id']}/files", headers=headers)).json()
    placed = {f["path"]: f for f in files["data"]["items"]}
    assert placed["in/clip.mov"]["file_id"] and placed["in/clip.mov"]["status"] == "instant"
    name, size, blob_id, source = (
        await sql(
            app,
            "SELECT name, size, blob_id, upload_source FROM files WHERE id = :f",
            f=int(placed["in/clip.mov"]["file_id"]),
        )
    )[0]
    assert (name, size, blob_id, source) == ("clip.mov", 50_000, stored["blob_id"], "client")
    manifest = (
        await client.post(f"{API}/upload-tasks/{task['id']}/export-manifest", headers=headers)
    ).json()["data"]
    assert (
        manifest["summary"]["instant_files"] == 1 and manifest["summary"]["saved_bytes"] == 50_000
    )
    exported = {f["path"]: f for f in manifest["files"]}
    key = await scalar(app, "SELECT storage_key FROM blobs WHERE id = :b", b=stored["blob_id"])
    assert exported["in/clip.mov"]["storage_key"] == key
    assert exported["in/clip.mov"]["sha256"] == hashlib.sha256(content).hexdigest()
    progress = await client.get(f"{API}/upload-tasks/{task['id']}/progress", headers=headers)
    assert progress.json()["data"]["counts"]["instant"] == 1
    assert progress.json()["data"]["transferred_bytes"] == 0

    # the miss got its one chance: no new challenge
    again = await challenges(client, headers, task, [hit_id, miss_id])
    assert again[hit_id]["result"] == "instant" and again[miss_id]["result"] == "upload"
    assert again[miss_id]["challenge"] is None
    await assert_accounting(app)


async def _hit_round_trip(client, app, size: int) -> dict[str, Any]:
    owner, uploader = await register(client, "owner"), await register(client, "uploader")
    content = os.urandom(size)
    stored = await store_file(app, user_id(owner), "orig.bin", content)
    headers = bearer(uploader)
    task = await create_task(client, headers, [entry("copy.bin", content)])
    file_id = task["files"][0]["id"]
    challenge = (await challenges(client, headers, task, [file_id]))[file_id]["challenge"]
    proof = {"token": challenge["token"], "digest": prove(challenge, content)}
    result = await check(client, headers, task, [{"file_id": file_id, "proof": proof}])
    return {"stored": stored, "task": task, "challenge": challenge, "result": result}


@pytest.mark.parametrize("settings_overrides", ["s3"], indirect=True)
async def test_instant_upload_reads_ranges_from_s3(client, app) -> None:
    outcome = await _hit_round_trip(client, app, 70_000)
    assert app.state.storage.kind == "s3"
    assert outcome["result"]["files"][0]["result"] == "instant"
    assert outcome["result"]["bytes_saved"] == 70_000
    await assert_accounting(app)


async def test_small_and_empty_files(client, app) -> None:
    outcome = await _hit_round_trip(client, app, 100)
    assert outcome["challenge"]["ranges"] == [[0, 100]]  # small: the whole file
    assert outcome["result"]["files"][0]["result"] == "instant"
    assert outcome["result"]["task_status"] == "completed"

    headers = bearer(await register(client, "third"))
    task = await create_task(client, headers, [entry("empty", b""), entry("x", b"x" * 16384)])
    ids = ids_by_path(task)
    answers = await challenges(client, headers, task, [ids["empty"], ids["x"]])
    assert answers[ids["empty"]]["result"] == "upload"  # zero bytes: just upload them
    assert answers[ids["x"]]["challenge"]["ranges"] == [[0, 16384]]
    await assert_accounting(app)


async def test_wrong_proof_means_upload_and_no_second_challenge(client, app) -> None:
    owner, uploader = await register(client, "owner"), await register(client, "uploader")
    content = os.urandom(30_000)
    stored = await store_file(app, user_id(owner), "orig.bin", content)
    headers = bearer(uploader)
    task = await create_task(client, headers, [entry("copy.bin", content)])
    file_id = task["files"][0]["id"]
    challenge = (await challenges(client, headers, task, [file_id]))[file_id]["challenge"]

    wrong = await check(
        client,
        headers,
        task,
        [{"file_id": file_id, "proof": {"token": challenge["token"], "digest": "0" * 64}}],
    )
    assert wrong["files"][0]["result"] == "upload" and wrong["bytes_saved"] == 0
    # no new challenge, and the right answer is too late now
    assert (await challenges(client, headers, task, [file_id]))[file_id]["result"] == "upload"
    late = await check(
        client,
        headers,
        task,
        [
            {
                "file_id": file_id,
                "proof": {"token": challenge["token"], "digest": prove(challenge, content)},
            }
        ],
    )
    assert late["files"][0]["result"] == "upload" and late["saved_bytes"] == 0
    assert await scalar(app, "SELECT ref_count FROM blobs WHERE id = :b", b=stored["blob_id"]) == 1
    assert await drive_usage(app, int(task["drive_id"])) == (0, 30_000)
    # the normal upload still works
    response = await client.post(
        f"{API}/upload-tasks/{task['id']}/files/{file_id}/upload",
        content=content,
        headers={**headers, "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 200, response.text
    assert await scalar(app, "SELECT ref_count FROM blobs WHERE id = :b", b=stored["blob_id"]) == 2
    await assert_accounting(app)


def _forge(claims: dict[str, Any]) -> str:
    return proofs.sign_token(KEY, claims)


async def test_expired_tampered_and_foreign_tokens_are_refused(client, app) -> None:
    owner, uploader = await register(client, "owner"), await register(client, "uploader")
    content = os.urandom(40_000)
    stored = await store_file(app, user_id(owner), "orig.bin", content)
    headers = bearer(uploader)
    paths = ["expired", "tampered", "resigned", "garbage", "other-file", "foreign-task"]
    task = await create_task(client, headers, [entry(p, content) for p in paths])
    second = await create_task(client, headers, [entry("second", content)])
    ids = ids_by_path(task)
    round1 = await challenges(client, headers, task, [ids[p] for p in paths])
    second_id = second["files"][0]["id"]
    foreign = (await challenges(client, headers, second, [second_id]))[second_id]["challenge"]

    def proof_for(challenge: dict[str, Any], token: str | None = None) -> dict[str, str]:
        return {"token": token or challenge["token"], "digest": prove(challenge, content)}

    expired = round1[ids["expired"]]["challenge"]
    expired_token = _forge(
        {
            "task_id": task["id"],
            "file_id": ids["expired"],
            "ranges": expired["ranges"],
            "nonce": expired["nonce"],
            "exp": int(time.time()) - 1,
        }
    )
    tampered = round1[ids["tampered"]]["challenge"]
    body, mac = tampered["token"].split(".")
    claims = json.loads(proofs.unb64(body))
    claims["ranges"] = [[0, 16]]  # an easier question, same signature
    tampered_token = proofs.b64(json.dumps(claims).encode()) + "." + mac
    resigned = round1[ids["resigned"]]["challenge"]
    resigned_token = "x" + resigned["token"][1:]
    other = round1[ids["other-file"]]["challenge"]
    other_token = round1[ids["expired"]]["challenge"]["token"]  # valid, for another file

    verdict = await check(
        client,
        headers,
        task,
        [
            {"file_id": ids["expired"], "proof": proof_for(expired, expired_token)},
            {"file_id": ids["tampered"], "proof": {"token": tampered_token, "digest": "00"}},
            {"file_id": ids["resigned"], "proof": proof_for(resigned, resigned_token)},
            {"file_id": ids["garbage"], "proof": {"token": "no-dot-here", "digest": "é"}},
            {"file_id": ids["other-file"], "proof": proof_for(other, other_token)},
            {"file_id": ids["foreign-task"], "proof": proof_for(foreign)},
        ],
    )
    assert [item["result"] for item in verdict["files"]] == ["upload"] * 6
    assert verdict["bytes_saved"] == 0
    flags = await sql(
        app, "SELECT proof_failed FROM upload_task_files WHERE task_id = :t", t=int(task["id"])
    )
    assert all(row[0] for row in flags)
    assert await scalar(app, "SELECT ref_count FROM blobs WHERE id = :b", b=stored["blob_id"]) == 1

    # a file of another task is not found here; the second task's own proof still works
    elsewhere = await client.post(
        f"{API}/upload-tasks/{task['id']}/files/check",
        json={"files": [{"file_id": second_id}]},
        headers=headers,
    )
    assert elsewhere.status_code == 404 and elsewhere.json()["details"]["file_ids"] == [second_id]
    ok = await check(client, headers, second, [{"file_id": second_id, "proof": proof_for(foreign)}])
    assert ok["files"][0]["result"] == "instant"
    await assert_accounting(app)


async def test_batch_validation_and_access(client, app) -> None:
    owner_tokens, member_tokens = await register(client, "owner"), await register(client, "member")
    owner, member = user_id(owner_tokens), user_id(member_tokens)
    headers = bearer(member_tokens)
    _team, drive_id = await make_team_drive(app, owner, {member: "member"})
    task = await create_task(client, headers, [entry("a", b"abc")], drive_id=str(drive_id))
    file_id = task["files"][0]["id"]
    url = f"{API}/upload-tasks/{task['id']}/files/check"

    twice = await client.post(
        url, json={"files": [{"file_id": file_id}, {"file_id": file_id}]}, headers=headers
    )
    assert twice.status_code == 400 and twice.json()["error"] == "BAD_REQUEST"
    empty = await client.post(url, json={"files": []}, headers=headers)
    assert empty.status_code == 422
    unknown = await client.post(url, json={"files": [{"file_id": "12345"}]}, headers=headers)
    assert unknown.status_code == 404
    stranger = await client.post(
        url, json={"files": [{"file_id": file_id}]}, headers=bearer(owner_tokens)
    )
    assert stranger.status_code == 404  # the task belongs to its creator

    await sql(app, "UPDATE team_members SET role = 'viewer' WHERE user_id = :u", u=member)
    demoted = await client.post(url, json={"files": [{"file_id": file_id}]}, headers=headers)
    assert demoted.status_code == 403 and demoted.json()["error"] == "FORBIDDEN"
    await assert_accounting(app)


async def test_conflicts_fail_only_their_file(client, app) -> None:
    tokens = await register(client)
    uid, headers = user_id(tokens), bearer(tokens)
    content = os.urandom(20_000)
    await store_file(app, uid, "in/taken.bin", content)  # the same content, already at the name

    async def proven(task: dict[str, Any]) -> dict[str, Any]:
        ids = [f["id"] for f in task["files"]]
        round1 = await challenges(client, headers, task, ids)
        return await check(
            client,
            headers,
            task,
            [
                {
                    "file_id": i,
                    "proof": {
                        "token": round1[i]["challenge"]["token"],
                        "digest": prove(round1[i]["challenge"], content),
                    },
                }
                for i in ids
            ],
        )

    strict = await create_task(
        client, headers, [entry("taken.bin", content), entry("free.bin", content)],
        target_path="in", conflict="error",
    )  # fmt: skip
    verdict = {f["file_id"]: f for f in (await proven(strict))["files"]}
    ids = ids_by_path(strict)
    assert verdict[ids["taken.bin"]]["result"] == "upload"
    assert verdict[ids["taken.bin"]]["status"] == "failed"
    assert verdict[ids["free.bin"]]["result"] == "instant"
    listed = (
        await client.get(f"{API}/upload-tasks/{strict['id']}/files?status=failed", headers=headers)
    ).json()["data"]["items"]
    assert listed[0]["error"] == "NAME_CONFLICT" and listed[0]["file_id"] is None
    detail = (await client.get(f"{API}/upload-tasks/{strict['id']}", headers=headers)).json()
    assert detail["data"]["status"] == "partially_failed"
    assert detail["data"]["saved_bytes"] == 20_000

    renamed = await create_task(
        client,
        headers,
        [entry("taken.bin", content), entry("taken (1).bin", content)],
        target_path="in",
        conflict="rename",
    )
    assert [f["result"] for f in (await proven(renamed))["files"]] == ["instant", "instant"]
    overwrite = await create_task(
        client, headers, [entry("taken.bin", content)], target_path="in", conflict="overwrite"
    )
    assert (await proven(overwrite))["files"][0]["result"] == "instant"
    names = sorted(row[0] for row in await sql(app, "SELECT name FROM files"))
    assert names == ["free.bin", "taken (1).bin", "taken (2).bin", "taken.bin"]
    versions = await scalar(app, "SELECT MAX(version) FROM files WHERE name = 'taken.bin'")
    assert versions == 2
    assert await scalar(app, "SELECT ref_count FROM blobs") == 5  # five versions share it
    linked = await sql(
        app,
        "SELECT t.relative_path, f.name FROM upload_task_files t JOIN files f ON f.id = t.file_id"
        " WHERE t.task_id = :t ORDER BY t.position",
        t=int(renamed["id"]),
    )
    assert linked == [("taken.bin", "taken (2).bin"), ("taken (1).bin", "taken (1).bin")]

    # the target folder went to the trash between the challenge and the proof
    moved_away = await create_task(client, headers, [entry("gone/x.bin", content)])
    file_id = moved_away["files"][0]["id"]
    challenge = (await challenges(client, headers, moved_away, [file_id]))[file_id]["challenge"]
    await sql(  # as the trash endpoint marks it (the folder is its own trash root)
        app,
        "UPDATE folders SET trashed_at = CURRENT_TIMESTAMP, trash_root_id = id "
        "WHERE path = '/gone'",
    )
    proof = {"token": challenge["token"], "digest": prove(challenge, content)}
    late = await check(client, headers, moved_away, [{"file_id": file_id, "proof": proof}])
    assert late["files"][0]["result"] == "upload" and late["files"][0]["status"] == "failed"
    assert (
        await scalar(app, "SELECT error FROM upload_task_files WHERE id = :i", i=int(file_id))
        == "NOT_FOUND"
    )
    await assert_accounting(app)


async def test_same_folder_again_renames_in_bulk(client, app) -> None:
    """Uploading a folder a second time to the same place (the default `rename` policy): every
    file is an instant hit and lands as `name (1)` next to the first copy."""
    tokens = await register(client)
    headers = bearer(tokens)
    contents = {f"set/f{i}.bin": os.urandom(300 + i) for i in range(40)}
    for path, data in contents.items():
        await store_file(app, user_id(tokens), path, data)
    task = await create_task(client, headers, [entry(p, d) for p, d in contents.items()])
    ids = ids_by_path(task)
    round1 = await challenges(client, headers, task, list(ids.values()))
    proofs = [
        {
            "file_id": ids[path],
            "proof": {
                "token": round1[ids[path]]["challenge"]["token"],
                "digest": prove(round1[ids[path]]["challenge"], data),
            },
        }
        for path, data in contents.items()
    ]
    verdict = await check(client, headers, task, proofs)
    assert {f["result"] for f in verdict["files"]} == {"instant"}
    assert verdict["bytes_saved"] == sum(len(d) for d in contents.values())
    names = {row[0] for row in await sql(app, "SELECT name FROM files")}
    assert names == {f"f{i}.bin" for i in range(40)} | {f"f{i} (1).bin" for i in range(40)}
    assert await scalar(app, "SELECT COUNT(*) FROM drive_operations WHERE op = 'upload'") == 80
    await assert_accounting(app)


async def test_concurrent_proofs_and_cancel_place_each_file_once(client, app) -> None:
    owner, uploader = await register(client, "owner"), await register(client, "uploader")
    contents = [os.urandom(5000 + i) for i in range(20)]
    for i, data in enumerate(contents):
        await store_file(app, user_id(owner), f"lib/{i}.bin", data)
    headers = bearer(uploader)
    task = await create_task(
        client, headers, [entry(f"c/{i}.bin", d) for i, d in enumerate(contents)]
    )
    ids = [f["id"] for f in task["files"]]
    round1 = await challenges(client, headers, task, ids)
    proofs = [
        {
            "file_id": file_id,
            "proof": {
                "token": round1[file_id]["challenge"]["token"],
                "digest": prove(round1[file_id]["challenge"], contents[i]),
            },
        }
        for i, file_id in enumerate(ids)
    ]
    url = f"{API}/upload-tasks/{task['id']}/files/check"
    first, second, cancel = await asyncio.gather(
        client.post(url, json={"files": proofs[:15]}, headers=headers),
        client.post(url, json={"files": proofs[5:]}, headers=headers),
        client.put(f"{API}/upload-tasks/{task['id']}/cancel", headers=headers),
    )
    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert cancel.status_code in (200, 409)
    instant = await scalar(app, "SELECT COUNT(*) FROM upload_task_files WHERE status = 'instant'")
    assert await scalar(app, "SELECT COUNT(*) FROM files WHERE name LIKE '%.bin'") == 20 + instant
    assert await scalar(app, "SELECT SUM(ref_count) FROM blobs") == 20 + instant
    saved = first.json()["data"]["bytes_saved"] + second.json()["data"]["bytes_saved"]
    assert saved == await scalar(app, "SELECT saved_bytes FROM upload_tasks")
    await assert_accounting(app)


async def test_ten_thousand_files_challenge_and_proof_rounds(client, app) -> None:
    owner, uploader = await register(client, "owner"), await register(client, "uploader")
    contents = [os.urandom(200 + i) for i in range(10)]
    for i, data in enumerate(contents):
        await store_file(app, user_id(owner), f"lib/{i}.bin", data)
    headers = bearer(uploader)
    manifest = [entry(f"d{i % 100:02d}/f{i:05d}.bin", contents[i % 10]) for i in range(10_000)]
    task = await create_task(client, headers, manifest)
    ids = [f["id"] for f in task["files"]]

    started = time.perf_counter()
    round1 = await challenges(client, headers, task, ids)
    challenge_seconds = time.perf_counter() - started
    proofs = [
        {
            "file_id": file_id,
            "proof": {
                "token": round1[file_id]["challenge"]["token"],
                "digest": prove(round1[file_id]["challenge"], contents[i % 10]),
            },
        }
        for i, file_id in enumerate(ids)
    ]
    started = time.perf_counter()
    round2 = await check(client, headers, task, proofs)
    proof_seconds = time.perf_counter() - started
    print(f"10,000 files: challenge round {challenge_seconds:.2f} s, proofs {proof_seconds:.2f} s")
    assert all(item["result"] == "instant" for item in round2["files"])
    total = sum(len(contents[i % 10]) for i in range(10_000))
    assert round2["bytes_saved"] == total and round2["task_status"] == "completed"
    assert challenge_seconds < 4 and proof_seconds < 6  # well under 1 s each on SQLite locally
    refs = [row[0] for row in await sql(app, "SELECT ref_count FROM blobs")]
    assert refs == [1001] * 10
    assert await drive_usage(app, int(task["drive_id"])) == (total, 0)
    await assert_accounting(app)
