"""Request and response shapes of the drive API: drives, teams, folders, files, trash and the
operation log.

Item names are plain strings here on purpose: `drive/paths.py` validates them (NFC, `..`, `/`,
control characters, length) and answers 400 INVALID_PATH, the documented error for a bad name,
rather than a schema 422."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from yuntu.kit.schemas import Id, Schema, UtcDatetime
from yuntu.kit.text import line, text

TeamRoleName = Literal["owner", "admin", "member", "viewer"]
FolderConflict = Literal["error", "rename"]
FileConflict = Literal["error", "rename", "overwrite"]
# Loose bounds only: the exact rules (255 UTF-8 bytes, path length) answer 400 INVALID_PATH.
ItemName = Annotated[str, Field(max_length=1024, examples=["report.pdf"])]
ItemPath = Annotated[str, Field(max_length=8192, examples=["/projects/2026/renders"])]
Extension = Annotated[
    str, Field(min_length=1, max_length=33, pattern=r"^\.?[A-Za-z0-9_+\-]{1,32}$", examples=["mp4"])
]
ExtensionList = Annotated[list[Extension], Field(max_length=200)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- drives ------------------------------------------------------------------------------------
class DriveCreate(StrictModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "Renders", "quota_bytes": 10737418240, "denied_types": ["exe", "bat"]}
            ]
        },
    )
    name: Annotated[str, line(100, 1)]
    icon: Annotated[str, line(200)] | None = None
    description: Annotated[str, text(500)] | None = None
    quota_bytes: int | None = Field(default=None, ge=0, le=2**62, description="null: unlimited")
    allowed_types: ExtensionList = Field(
        default_factory=list, description="Extensions allowed (empty: all)"
    )
    denied_types: ExtensionList = Field(default_factory=list, description="Extensions refused")
    max_file_size: int | None = Field(default=None, ge=1, le=2**62, description="null: no limit")
    team_id: Id | None = Field(default=None, description="Create a team drive (admin or owner)")


class DriveUpdate(StrictModel):
    """Only the fields present change; `quota_bytes: null` makes the drive unlimited."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "Renders 2026"}]}
    )
    name: Annotated[str, line(100, 1)] | None = None
    icon: Annotated[str, line(200)] | None = None
    description: Annotated[str, text(500)] | None = None
    quota_bytes: int | None = Field(default=None, ge=0, le=2**62)
    allowed_types: ExtensionList | None = None
    denied_types: ExtensionList | None = None
    max_file_size: int | None = Field(default=None, ge=1, le=2**62)


class DriveUsage(BaseModel):
    files: int = Field(description="Live files", examples=[12])
    folders: int = Field(description="Live folders (the root not counted)", examples=[3])
    used_bytes: int = Field(description="Every kept version, trashed files included")
    reserved_bytes: int = Field(description="Held by unfinished uploads")
    quota_bytes: int | None = Field(description="null: unlimited")
    available_bytes: int = Field(description="-1: unlimited", examples=[-1])
    usage_percentage: float = Field(examples=[12.5])
    logical_bytes: int = Field(description="Sum of every kept version's size")
    stored_bytes: int = Field(description="Sum of the distinct blobs those versions reference")
    trash_bytes: int = Field(description="Versions of trashed files (still counted as used)")
    trash_files: int


class DriveOut(Schema):
    id: Id
    name: str
    icon: str | None
    description: str | None
    owner_user_id: Id | None
    team_id: Id | None
    is_default: bool
    quota_bytes: int | None
    used_bytes: int
    reserved_bytes: int
    available_bytes: int = Field(description="-1: unlimited")
    usage_percentage: float
    allowed_types: list[str]
    denied_types: list[str]
    max_file_size: int | None
    root_folder_id: Id | None
    role: TeamRoleName = Field(description="The caller's role (a personal drive: owner)")
    created_at: UtcDatetime
    updated_at: UtcDatetime


class DriveDetail(DriveOut):
    usage: DriveUsage


class DriveDeleted(BaseModel):
    id: Id
    deleted: bool = True
    purged_files: int
    freed_bytes: int


# -- teams -------------------------------------------------------------------------------------
class TeamCreate(StrictModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "Studio A", "description": ""}]}
    )
    name: Annotated[str, line(100, 1)]
    description: Annotated[str, text(500)] | None = None


class TeamUpdate(StrictModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"description": "Lighting and comp"}]}
    )
    name: Annotated[str, line(100, 1)] | None = None
    description: Annotated[str, text(500)] | None = None


class TeamOut(Schema):
    id: Id
    name: str
    description: str | None
    created_by: Id
    role: TeamRoleName = Field(description="The caller's role")
    member_count: int
    created_at: UtcDatetime
    updated_at: UtcDatetime


class MemberAdd(StrictModel):
    """Exactly one of `username` or `email`."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"username": "bob", "role": "member"}]}
    )
    username: Annotated[str, line(64, 1)] | None = None
    email: Annotated[str, line(254, 3)] | None = None
    role: TeamRoleName = "member"

    @model_validator(mode="after")
    def _one_identifier(self) -> MemberAdd:
        if (self.username is None) == (self.email is None):
            raise ValueError("give exactly one of username or email")
        return self


class MemberRole(StrictModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"role": "admin"}]})
    role: TeamRoleName


class MemberOut(BaseModel):
    user_id: Id
    username: str | None
    nickname: str | None
    role: TeamRoleName
    joined_at: UtcDatetime


class TeamDeleted(BaseModel):
    id: Id
    deleted: bool = True


class MemberRemoved(BaseModel):
    team_id: Id
    user_id: Id
    removed: bool = True


# -- folders and files -------------------------------------------------------------------------
class FolderCreate(StrictModel):
    """`{parent_id, name}` creates one folder; `{path}` creates a path below `parent_id` (default
    the root; a leading `/` changes nothing), `parents: true` creating missing folders
    (mkdir -p; an existing final folder is returned as it is)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"parent_id": None, "name": "renders", "conflict": "error"},
                {"path": "/projects/2026/renders", "parents": True},
            ]
        },
    )
    parent_id: Id | None = None
    name: ItemName | None = None
    path: ItemPath | None = None
    parents: bool = False
    conflict: FolderConflict = "error"

    @model_validator(mode="after")
    def _name_or_path(self) -> FolderCreate:
        if (self.name is None) == (self.path is None):
            raise ValueError("give exactly one of name or path")
        return self


class FolderPatch(StrictModel):
    """Rename (`name`) and/or move (`parent_id`, null: the root)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"name": "renders-final"}]}
    )
    name: ItemName | None = None
    parent_id: Id | None = None
    conflict: FolderConflict = "error"

    @model_validator(mode="after")
    def _something(self) -> FolderPatch:
        if self.name is None and "parent_id" not in self.model_fields_set:
            raise ValueError("give name and/or parent_id")
        return self


class FilePatch(StrictModel):
    """Rename (`name`) and/or move (`folder_id`, null: the root). `overwrite` makes this file's
    content the new version of the file holding the target name; this file goes away."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"name": "final.mp4", "conflict": "rename"}]},
    )
    name: ItemName | None = None
    folder_id: Id | None = None
    conflict: FileConflict = "error"

    @model_validator(mode="after")
    def _something(self) -> FilePatch:
        if self.name is None and "folder_id" not in self.model_fields_set:
            raise ValueError("give name and/or folder_id")
        return self


class FileCopy(StrictModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"folder_id": None, "conflict": "rename"}]}
    )
    folder_id: Id | None = Field(default=None, description="Target folder (null: the root)")
    name: ItemName | None = Field(default=None, description="Default: the source's name")
    conflict: FileConflict = "error"
    target_drive_id: Id | None = Field(
        default=None, description="Another drive you can write (its quota is charged)"
    )


class RestoreIn(StrictModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"conflict": "rename"}]}
    )
    conflict: FolderConflict = "rename"


class FolderOut(Schema):
    type: Literal["folder"] = "folder"
    id: Id
    drive_id: Id
    parent_id: Id | None
    name: str
    path: str
    created_by: Id | None
    created_at: UtcDatetime
    updated_at: UtcDatetime


class FileOut(Schema):
    type: Literal["file"] = "file"
    id: Id
    drive_id: Id
    folder_id: Id
    name: str
    path: str
    extension: str
    mime_type: str
    size: int
    md5: str
    sha256: str
    version: int
    mtime: UtcDatetime | None
    created_by: Id | None
    upload_source: str
    created_at: UtcDatetime
    updated_at: UtcDatetime


class VersionOut(Schema):
    id: Id
    version: int
    size: int
    md5: str
    sha256: str
    created_by: Id | None
    created_at: UtcDatetime
    current: bool = False


class ChildOut(BaseModel):
    type: Literal["folder", "file"]
    id: Id
    name: str
    path: str
    size: int | None = Field(description="null for folders")
    updated_at: UtcDatetime
    md5: str | None = None
    mime_type: str | None = None
    version: int | None = None


class Restored(BaseModel):
    type: Literal["folder", "file"]
    id: Id
    name: str = Field(description="Possibly renamed to avoid a conflict")
    path: str


class ItemGone(BaseModel):
    type: Literal["folder", "file"]
    id: Id
    trashed: bool = False
    purged: bool = False


# -- trash and operations ----------------------------------------------------------------------
class TrashItemOut(BaseModel):
    type: Literal["folder", "file"]
    id: Id
    name: str
    original_path: str
    size: int = Field(description="A folder: the current sizes of the files trashed with it")
    trashed_at: UtcDatetime
    trashed_by: Id | None


class TrashEmptied(BaseModel):
    purged_files: int
    purged_folders: int
    skipped: int = Field(description="Roots kept because an unfinished upload targets them")


class OperationOut(Schema):
    id: Id
    op: str
    item_type: str
    item_id: Id
    actor_id: Id | None
    before_path: str | None
    after_path: str | None
    detail: dict[str, Any]
    created_at: UtcDatetime
