"""Teams over HTTP: membership rules (admins add people, only owners make owners, the last owner
stays) and the role matrix on a team drive: owner, admin, member, viewer and outsider against
read, write, manage and delete (200 / 403 / 404)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import register
from tests.drive.helpers import User, check_accounting, data, error, put_file, user

pytestmark = pytest.mark.anyio


async def team_of(owner: User, *members: tuple[User, str]) -> dict[str, Any]:
    team = data(await owner.post("/teams", json={"name": "Studio", "description": "VFX"}), 201)
    for member, role in members:
        body = {"username": member.username, "role": role}
        data(await owner.post(f"/teams/{team['id']}/members", json=body), 201)
    return team


async def test_team_crud_and_members(client, app) -> None:
    alice = await user(client, "alice")
    bob = await user(client, "bob")
    carol = User(client, await register(client, "carol", email="carol@example.com"))
    outsider = await user(client, "mallory")

    team = data(await alice.post("/teams", json={"name": "Studio"}), 201)
    assert team["role"] == "owner" and team["member_count"] == 1
    assert team["created_by"] == alice.id
    tid = team["id"]
    added = data(
        await alice.post(f"/teams/{tid}/members", json={"username": "BOB", "role": "admin"}), 201
    )
    assert added == {**added, "user_id": bob.id, "username": "bob", "role": "admin"}
    by_email = {"email": "Carol@Example.com", "role": "member"}
    assert data(await bob.post(f"/teams/{tid}/members", json=by_email), 201)["role"] == "member"

    error(await alice.post(f"/teams/{tid}/members", json={"username": "nobody"}), 404)
    error(await alice.post(f"/teams/{tid}/members", json={"username": "bob"}), 409, "CONFLICT")
    error(await alice.post(f"/teams/{tid}/members", json={"role": "member"}), 422)
    error(
        await alice.post(f"/teams/{tid}/members", json={"username": "bob", "email": "b@x.io"}), 422
    )
    error(
        await alice.post(f"/teams/{tid}/members", json={"username": "mallory", "role": "god"}), 422
    )
    error(
        await bob.post(f"/teams/{tid}/members", json={"username": "mallory", "role": "owner"}),
        403,
        "FORBIDDEN",
    )
    error(await carol.post(f"/teams/{tid}/members", json={"username": "mallory"}), 403)
    error(await outsider.post(f"/teams/{tid}/members", json={"username": "mallory"}), 404)

    members = data(await carol.get(f"/teams/{tid}/members"))
    assert [(m["username"], m["role"]) for m in members["items"]] == [
        ("alice", "owner"),
        ("bob", "admin"),
        ("carol", "member"),
    ]
    assert data(await carol.get("/teams"))["items"][0]["role"] == "member"
    assert data(await carol.get(f"/teams/{tid}"))["member_count"] == 3
    assert data(await outsider.get("/teams"))["total"] == 0
    error(await outsider.get(f"/teams/{tid}"), 404, "NOT_FOUND")
    error(await outsider.get(f"/teams/{tid}/members"), 404, "NOT_FOUND")

    renamed = data(await bob.put(f"/teams/{tid}", json={"name": "Studio B"}))
    assert renamed["name"] == "Studio B" and renamed["description"] is None
    error(await carol.put(f"/teams/{tid}", json={"name": "mine"}), 403, "FORBIDDEN")
    error(await outsider.put(f"/teams/{tid}", json={"name": "mine"}), 404, "NOT_FOUND")
    error(await bob.put(f"/teams/{tid}", json={"name": ""}), 422, "VALIDATION_ERROR")

    error(await bob.delete(f"/teams/{tid}"), 403, "FORBIDDEN")
    data(await alice.delete(f"/teams/{tid}"))
    error(await alice.get(f"/teams/{tid}"), 404)
    await check_accounting(app)


async def test_owner_rules_and_leaving(client, app) -> None:
    alice = await user(client, "alice")
    bob = await user(client, "bob")
    carol = await user(client, "carol")
    team = await team_of(alice, (bob, "admin"), (carol, "member"))
    tid = team["id"]
    members = f"/teams/{tid}/members"

    error(await bob.put(f"{members}/{carol.id}", json={"role": "owner"}), 403, "FORBIDDEN")
    error(await bob.put(f"{members}/{alice.id}", json={"role": "member"}), 403, "FORBIDDEN")
    error(await bob.delete(f"{members}/{alice.id}"), 403, "FORBIDDEN")
    error(await carol.put(f"{members}/{bob.id}", json={"role": "viewer"}), 403, "FORBIDDEN")
    error(await carol.delete(f"{members}/{bob.id}"), 403, "FORBIDDEN")
    assert data(await bob.put(f"{members}/{carol.id}", json={"role": "viewer"}))["role"] == (
        "viewer"
    )
    error(await alice.put(f"{members}/{alice.id}", json={"role": "admin"}), 409, "INVALID_STATE")
    error(await alice.post(f"/teams/{tid}/leave"), 409, "INVALID_STATE")
    error(await alice.delete(f"{members}/{alice.id}"), 409, "INVALID_STATE")
    error(await alice.put(f"{members}/999999999", json={"role": "admin"}), 404, "NOT_FOUND")

    assert data(await alice.put(f"{members}/{bob.id}", json={"role": "owner"}))["role"] == "owner"
    data(await alice.post(f"/teams/{tid}/leave"))  # bob is an owner now
    error(await alice.get(f"/teams/{tid}"), 404)
    error(await bob.post(f"/teams/{tid}/leave"), 409, "INVALID_STATE")
    data(await carol.delete(f"{members}/{carol.id}"))  # a viewer may leave
    page = data(await bob.get(members))
    assert [(m["username"], m["role"]) for m in page["items"]] == [("bob", "owner")]
    await check_accounting(app)


async def test_team_drive_creation_needs_admin(client, app) -> None:
    alice = await user(client, "alice")
    bob = await user(client, "bob")
    carol = await user(client, "carol")
    outsider = await user(client, "mallory")
    team = await team_of(alice, (bob, "admin"), (carol, "member"))
    drive = data(await bob.post("/drives", json={"name": "Shared", "team_id": team["id"]}), 201)
    assert drive["team_id"] == team["id"] and drive["owner_user_id"] is None
    assert drive["role"] == "admin"
    body = {"name": "Nope", "team_id": team["id"]}
    error(await carol.post("/drives", json=body), 403, "FORBIDDEN")
    error(await outsider.post("/drives", json=body), 404, "NOT_FOUND")
    error(await alice.post("/drives", json={"name": "x", "team_id": "999999999"}), 404)

    error(await alice.delete(f"/teams/{team['id']}"), 409, "INVALID_STATE")  # owns a drive
    data(await alice.delete(f"/drives/{drive['id']}"))
    data(await alice.delete(f"/teams/{team['id']}"))
    await check_accounting(app)


async def test_role_matrix_on_a_team_drive(client, app) -> None:
    owner = await user(client, "owner")
    admin = await user(client, "admin")
    member = await user(client, "member")
    viewer = await user(client, "viewer")
    outsider = await user(client, "outsider")
    team = await team_of(owner, (admin, "admin"), (member, "member"), (viewer, "viewer"))
    drive = await owner.new_drive(name="Team", team_id=team["id"])
    did = drive["id"]
    base = f"/drives/{did}"
    folder = await owner.mkdir(did, "shared")
    file_id = await put_file(app, did, "a.txt", b"hello", actor_id=owner.id)
    trashed = await put_file(app, did, "t.txt", b"trashed")
    data(await owner.delete(f"{base}/files/{trashed}"))

    everyone = {"owner": owner, "admin": admin, "member": member, "viewer": viewer}
    for name, who in everyone.items():
        assert (await who.drive(did))["role"] == name
        listed = data(await who.get("/drives"))["items"]
        assert any(d["id"] == did and d["role"] == name for d in listed)
        for path in (
            "/children",
            "/operations",
            "/trash",
            f"/files/{file_id}",
            f"/files/{file_id}/versions",
            f"/folders/{folder['id']}",
        ):
            data(await who.get(f"{base}{path}"))
            error(await outsider.get(f"{base}{path}"), 404, "NOT_FOUND")
    error(await outsider.get(base), 404, "NOT_FOUND")
    assert all(d["id"] != did for d in data(await outsider.get("/drives"))["items"])

    # Every write: viewers 403, outsiders 404, members and up succeed.
    writes: list[tuple[str, str, Any]] = [
        ("POST", f"{base}/folders", {"name": "new"}),
        ("PATCH", f"{base}/folders/{folder['id']}", {"name": "renamed"}),
        ("PATCH", f"{base}/files/{file_id}", {"name": "b.txt"}),
        ("POST", f"{base}/files/{file_id}/copy", {"conflict": "rename"}),
        ("POST", f"{base}/trash/file/{trashed}/restore", None),
        ("DELETE", f"{base}/files/{file_id}", None),
        ("DELETE", f"{base}/trash/file/{trashed}", None),
        ("DELETE", f"{base}/trash", None),
        ("DELETE", f"{base}/folders/{folder['id']}", None),
    ]
    for method, path, body in writes:
        kwargs = {"json": body} if body is not None else {}
        error(await viewer.request(method, path, **kwargs), 403, "FORBIDDEN")
        error(await outsider.request(method, path, **kwargs), 404, "NOT_FOUND")
    for method, path, body in writes[:5]:
        kwargs = {"json": body} if body is not None else {}
        assert (await member.request(method, path, **kwargs)).status_code in (200, 201), path
    names = await admin.names(did)
    assert "new" in names and "renamed" in names and "b (1).txt" in names and "t.txt" in names

    # Manage: owners and admins; delete: owners only.
    for who, status in ((owner, 200), (admin, 200), (member, 403), (viewer, 403), (outsider, 404)):
        response = await who.put(base, json={"description": f"by {who.username}"})
        assert response.status_code == status, (who.username, response.text)
    for who, status in ((admin, 403), (member, 403), (viewer, 403), (outsider, 404)):
        assert (await who.delete(base)).status_code == status, who.username
    ops = data(await owner.get(f"{base}/operations"))["items"]
    assert {op["actor_id"] for op in ops} >= {owner.id, member.id}
    data(await owner.delete(base))
    error(await member.get(base), 404, "NOT_FOUND")
    await check_accounting(app)
