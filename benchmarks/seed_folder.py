"""Benchmark setup: fill one folder with many files by bulk rows (sharing one stored blob), with
the reference count and drive usage updated to match. Not timed; not for production use."""

from __future__ import annotations

import random
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from yuntu.kit import ids


async def seed_folder(db_path: Path, drive_id: int, count: int) -> str:
    ids.configure(1023)
    connection = sqlite3.connect(db_path, timeout=60)
    try:
        root = connection.execute(
            "SELECT root_folder_id, owner_user_id FROM drives WHERE id = ?", (drive_id,)
        ).fetchone()
        root_id, user_id = root
        now = datetime.now(UTC).replace(tzinfo=None)
        folder_id = ids.new_id()
        blob_id, sha, md5, size = any_blob(connection)
        with connection:
            connection.execute(
                "INSERT INTO folders (id, created_at, updated_at, drive_id, parent_id, name, path,"
                " created_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (folder_id, now, now, drive_id, root_id, "many", "/many", user_id),
            )
            rows, versions = [], []
            for i in range(count):
                file_id = ids.new_id()
                when = now - timedelta(seconds=random.randint(0, 10**7))
                name = f"file-{random.randint(0, 10**9):09d}-{i}.bin"
                rows.append(
                    (
                        file_id,
                        when,
                        when,
                        drive_id,
                        folder_id,
                        name,
                        "bin",
                        "application/octet-stream",
                        size,
                        md5,
                        sha,
                        blob_id,
                        1,
                        user_id,
                        "web",
                    )
                )
                versions.append(
                    (ids.new_id(), file_id, drive_id, 1, blob_id, size, md5, sha, user_id, when)
                )
            connection.executemany(
                "INSERT INTO files (id, created_at, updated_at, drive_id, folder_id, name, extension,"
                " mime_type, size, md5, sha256, blob_id, version, created_by, upload_source)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            connection.executemany(
                "INSERT INTO file_versions (id, file_id, drive_id, version, blob_id, size, md5,"
                " sha256, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                versions,
            )
            connection.execute(
                "UPDATE blobs SET ref_count = ref_count + ?, zero_since = NULL WHERE id = ?",
                (count, blob_id),
            )
            connection.execute(
                "UPDATE drives SET used_bytes = used_bytes + ? WHERE id = ?",
                (count * size, drive_id),
            )
        return str(folder_id)
    finally:
        connection.close()


def any_blob(connection: sqlite3.Connection) -> tuple[int, str, str, int]:
    row = connection.execute("SELECT id, sha256, md5, size FROM blobs LIMIT 1").fetchone()
    if row is None:
        raise RuntimeError("upload one file first: the seeded rows share its blob")
    return row
