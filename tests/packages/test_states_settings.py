"""The version state machine table, the derived package status, and the package settings'
start-up checks."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_settings
from yuntu.kit.errors import AppError
from yuntu.packages.states import (
    TRANSITIONS,
    PackageStatus,
    VersionStatus,
    can_move,
    check_move,
    package_status,
)

V = VersionStatus
ALLOWED = {
    (V.UPLOADED, V.PROCESSING),
    (V.PROCESSING, V.PROCESSING),  # a retried job starts a new run
    (V.PROCESSING, V.PROCESSED),
    (V.PROCESSING, V.PROCESSING_FAILED),
    (V.PROCESSING_FAILED, V.PROCESSING),  # reprocess
}


def test_the_transition_table_is_exactly_the_documented_one() -> None:
    assert set(TRANSITIONS) == set(VersionStatus)
    for old, new in itertools.product(VersionStatus, repeat=2):
        assert can_move(old, new) == ((old, new) in ALLOWED), (old, new)
        if (old, new) not in ALLOWED:
            with pytest.raises(AppError) as refused:
                check_move(old, new)
            assert refused.value.spec.name == "INVALID_STATE"
    assert TRANSITIONS[V.PROCESSED] == frozenset()  # a processed version is final


@pytest.mark.parametrize(
    ("disabled", "current", "newest", "expected"),
    [
        (True, True, V.PROCESSED, PackageStatus.DISABLED),
        (False, True, V.PROCESSING_FAILED, PackageStatus.AVAILABLE),
        (False, False, None, PackageStatus.NO_VERSION),
        (False, False, V.UPLOADED, PackageStatus.PROCESSING),
        (False, False, V.PROCESSING, PackageStatus.PROCESSING),
        (False, False, V.PROCESSING_FAILED, PackageStatus.PROCESSING_FAILED),
    ],
)
def test_package_status(disabled: bool, current: bool, newest: Any, expected: Any) -> None:
    status = package_status(disabled=disabled, has_current=current, newest_version_status=newest)
    assert status == expected


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"packages_steps": ["checksum", "virus"]}, "unknown step 'virus'"),
        ({"packages_steps": ["checksum", "checksum"]}, "appears twice"),
        ({"packages_commands": {"clamav": {"template": "x {input}"}}}, "not a usable step name"),
        ({"packages_commands": {"Bad Name": {"template": "x {input}"}}}, "not a usable step name"),
        ({"packages_commands": {"harden": {"template": "harden --out {output}"}}}, "{input}"),
        ({"packages_commands": {"harden": {"template": "{input} --x"}}}, "program"),
        ({"packages_commands": {"harden": {"template": "h {input} {secret}"}}}, "secret"),
        ({"packages_cdn_base_url": "ftp://cdn.example.com"}, "http(s)"),
        ({"packages_cdn_base_url": "https://cdn.example.com/?x=1"}, "http(s)"),
        ({"packages_clamd_address": "http://clamd:3310"}, "clamd"),
    ],
)
def test_bad_package_settings_stop_the_start(
    tmp_path: Path, overrides: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ValueError) as refused:
        make_settings(tmp_path, "sqlite+aiosqlite://", **overrides)
    assert needle.lower() in str(refused.value).lower()


def test_package_settings_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("YUNTU_PACKAGES_STEPS", "checksum, harden ,clamav")
    monkeypatch.setenv(
        "YUNTU_PACKAGES_COMMANDS", '{"harden": {"template": "harden --in {input} --out {output}"}}'
    )
    monkeypatch.setenv("YUNTU_PACKAGES_CLAMSCAN_OPTIONS", "--max-filesize=10M")
    monkeypatch.setenv("YUNTU_PACKAGES_CDN_BASE_URL", "https://dl.example.com/")
    settings = make_settings(tmp_path, "sqlite+aiosqlite://")
    assert settings.packages_steps == ["checksum", "harden", "clamav"]
    assert settings.packages_commands["harden"].timeout_seconds == 600
    assert settings.packages_clamscan_options == ["--max-filesize=10M"]
    assert settings.packages_cdn_base_url == "https://dl.example.com"
