"""A per-process cache of valid sessions and API keys for read-only requests, so a GET does
not look the session and user (or the key) up in the database every time.

Correctness rests on invalidation, not on expiry: every committed change to a users,
auth_sessions or api_keys row made through the ORM (attribute changes, and bulk UPDATE/DELETE
statements on users and sessions) evicts the affected entries in this process at commit, and
is published on the event bus so every other process (sharing Redis) evicts them too.
`max_age` only bounds how long a change made outside the application (an operator's manual
SQL) can go unseen."""

from __future__ import annotations

import time
from collections.abc import Sequence
from itertools import chain
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session

from yuntu.identity.apikeys import KeyRef
from yuntu.kit.db import database_of, on_commit
from yuntu.models.identity import ApiKey, AuthSession, User

CHANNEL = "system:auth-invalidate"
_PENDING = "yuntu_auth_invalidate"


class AuthCache:
    def __init__(self, max_age: float = 30.0, max_entries: int = 10_000) -> None:
        self.max_age = max_age
        self.max_entries = max_entries
        self._entries: dict[int, tuple[User, float]] = {}
        # key digest -> (key, stored at, last recorded use), all monotonic seconds
        self._keys: dict[str, tuple[KeyRef, float, float]] = {}

    def get_key(self, digest: str) -> tuple[KeyRef, float] | None:
        """(key, when its use was last recorded) of a cached, still valid key."""
        entry = self._keys.get(digest)
        if entry is None:
            return None
        key, stored, touched = entry
        if time.monotonic() - stored > self.max_age:
            self._keys.pop(digest, None)
            return None
        return key, touched

    def put_key(self, digest: str, key: KeyRef, touched: float) -> None:
        if len(self._keys) >= self.max_entries:
            self._keys.clear()
        entry = self._keys.get(digest)
        stored = entry[1] if entry is not None and entry[0] == key else time.monotonic()
        self._keys[digest] = (key, stored, touched)

    def get(self, session_id: int, user_id: int) -> User | None:
        entry = self._entries.get(session_id)
        if entry is None:
            return None
        user, stored = entry
        if user.id != user_id or time.monotonic() - stored > self.max_age:
            self._entries.pop(session_id, None)
            return None
        return user

    def put(self, session_id: int, user: User) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # crude but bounded; refills from the database
        self._entries[session_id] = (user, time.monotonic())

    def invalidate(
        self,
        users: list[int],
        sessions: list[int],
        everything: bool,
        keys: Sequence[int] = (),
        all_keys: bool = False,
    ) -> None:
        if everything or all_keys:
            self._keys.clear()
        if everything:
            self._entries.clear()
            return
        if keys:
            gone = set(keys)
            for digest, (key, _, _) in list(self._keys.items()):
                if key.id in gone:
                    self._keys.pop(digest, None)
        for session_id in sessions:
            self._entries.pop(session_id, None)
        if users:
            wanted = set(users)
            for session_id, (user, _) in list(self._entries.items()):
                if user.id in wanted:
                    self._entries.pop(session_id, None)

    def apply(self, message: dict[str, Any]) -> None:
        data = message.get("data", {})
        self.invalidate(
            [int(u) for u in data.get("users", [])],
            [int(s) for s in data.get("sessions", [])],
            bool(data.get("all")),
            [int(k) for k in data.get("keys", [])],
            bool(data.get("all_keys")),
        )


def _pending(session: Session) -> dict[str, Any]:
    pending = session.info.get(_PENDING)
    if pending is None:
        pending = session.info[_PENDING] = {
            "users": set(),
            "sessions": set(),
            "keys": set(),
            "all": False,
            "all_keys": False,
        }
        on_commit(session, lambda: _announce(session, pending))
    return pending


def _announce(session: Session, pending: dict[str, Any]) -> None:
    session.info.pop(_PENDING, None)
    db = database_of(session)
    message = {
        "type": "auth.invalidate",
        "data": {
            "users": [str(u) for u in pending["users"]],
            "sessions": [str(s) for s in pending["sessions"]],
            "keys": [str(k) for k in pending["keys"]],
            "all": pending["all"],
            "all_keys": pending["all_keys"],
        },
    }
    cache = getattr(db, "auth_cache", None)
    if cache is not None:
        cache.apply(message)  # this process: at once, before the response leaves
    if db.bus is not None:
        db.bus.publish_soon(CHANNEL, message)  # the others


@event.listens_for(Session, "after_flush")
def _collect_changes(session: Session, _context: Any) -> None:
    for obj in chain(session.new, session.dirty, session.deleted):
        if isinstance(obj, User):
            _pending(session)["users"].add(obj.id)
        elif isinstance(obj, AuthSession):
            _pending(session)["sessions"].add(obj.id)
        elif isinstance(obj, ApiKey):
            _pending(session)["keys"].add(obj.id)


@event.listens_for(Session, "do_orm_execute")
def _collect_bulk(state: ORMExecuteState) -> None:
    if not (state.is_update or state.is_delete):
        return
    mapper = state.bind_mapper
    if mapper is not None and mapper.class_ in (User, AuthSession):
        _pending(state.session)["all"] = True
    elif mapper is not None and mapper.class_ is ApiKey:
        _pending(state.session)["all_keys"] = True


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(_PENDING, None)
