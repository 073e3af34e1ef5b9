"""A per-process cache of valid sessions for read-only requests, so a GET does not look the
session and user up in the database every time.

Correctness rests on invalidation, not on expiry: every committed change to a users or
auth_sessions row made through the ORM (attribute changes and bulk UPDATE/DELETE statements
alike) evicts the affected entries in this process at commit, and is published on the event
bus so every other process (sharing Redis) evicts them too. `max_age` only bounds how long a
change made outside the application (an operator's manual SQL) can go unseen."""

from __future__ import annotations

import time
from itertools import chain
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session

from yuntu.kit.db import database_of, on_commit
from yuntu.models.identity import AuthSession, User

CHANNEL = "system:auth-invalidate"
_PENDING = "yuntu_auth_invalidate"


class AuthCache:
    def __init__(self, max_age: float = 30.0, max_entries: int = 10_000) -> None:
        self.max_age = max_age
        self.max_entries = max_entries
        self._entries: dict[int, tuple[User, float]] = {}

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

    def invalidate(self, users: list[int], sessions: list[int], everything: bool) -> None:
        if everything:
            self._entries.clear()
            return
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
        )


def _pending(session: Session) -> dict[str, Any]:
    pending = session.info.get(_PENDING)
    if pending is None:
        pending = session.info[_PENDING] = {"users": set(), "sessions": set(), "all": False}
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
            "all": pending["all"],
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


@event.listens_for(Session, "do_orm_execute")
def _collect_bulk(state: ORMExecuteState) -> None:
    if not (state.is_update or state.is_delete):
        return
    mapper = state.bind_mapper
    if mapper is not None and mapper.class_ in (User, AuthSession):
        _pending(state.session)["all"] = True


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(_PENDING, None)
