"""Password hashing: Argon2id for new hashes; bcrypt hashes from the old server still verify and
are upgraded on the next successful login. Hashing runs in a worker thread: it is deliberately
slow and must not stall the event loop."""

from __future__ import annotations

from anyio import to_thread
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from pwdlib.hashers.bcrypt import BcryptHasher

_hasher = PasswordHash((Argon2Hasher(), BcryptHasher()))
# Verified against when the account does not exist, so both paths take the same time.
_DUMMY_HASH = _hasher.hash("yuntu-timing-equaliser")

MIN_LENGTH = 8
MAX_LENGTH = 128


def password_problem(password: str, identifiers: list[str | None]) -> str | None:
    """Why a password is refused, or None when it is acceptable."""
    if len(password) < MIN_LENGTH:
        return f"at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"at most {MAX_LENGTH} characters"
    if password.isdigit():
        return "must not be only digits"
    lowered = password.casefold()
    for identifier in identifiers:
        if identifier and lowered == identifier.casefold():
            return "must not equal the username, email or phone"
    return None


async def hash_password(password: str) -> str:
    return await to_thread.run_sync(_hasher.hash, password)


async def verify_password(password: str, password_hash: str | None) -> tuple[bool, str | None]:
    """(valid, replacement hash when the stored one uses an outdated scheme or parameters)."""
    if not password_hash:
        await to_thread.run_sync(_hasher.verify, password, _DUMMY_HASH)
        return False, None
    try:
        return await to_thread.run_sync(_hasher.verify_and_update, password, password_hash)
    except Exception:  # an unparseable stored hash verifies nothing
        return False, None
