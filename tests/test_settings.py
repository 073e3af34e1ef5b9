"""Settings: the development secret (generated once, persisted 0600, reused), production's refusal
of weak secrets, list parsing, URL masking and .env support."""

from __future__ import annotations

import ipaddress
import stat
import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from yuntu.app import create_app
from yuntu.kit.clientip import client_address
from yuntu.settings import (
    KNOWN_WEAK_SECRETS,
    SECRET_FILE_NAME,
    ConfigError,
    Settings,
    mask_url,
)

STRONG = "Zq7-settings-test-secret-4f9a8b7c6d5e4f3a2b1c0d9e8f7a"


@pytest.fixture(autouse=True)
def _clean_env(env_without_yuntu, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no stray .env


def make(tmp_path: Path, **values) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path / "var", **values)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---- development: generated once, persisted, reused ---------------------------------------------


def test_development_generates_persists_0600_and_reuses(tmp_path):
    settings = make(tmp_path)
    key_file = tmp_path / "var" / SECRET_FILE_NAME
    assert not key_file.exists()
    key = settings.resolve_secret_key()
    assert len(key) >= 48 and key_file.read_text() == key
    assert mode(key_file) == 0o600
    assert settings.secret_key_file == key_file.resolve()
    # Same instance, a fresh instance (another process start): the same key.
    assert settings.resolve_secret_key() == key
    assert make(tmp_path).resolve_secret_key() == key
    assert [p.name for p in (tmp_path / "var").iterdir()] == [SECRET_FILE_NAME]  # no temp files
    # Another data dir, another key.
    assert Settings(_env_file=None, data_dir=tmp_path / "other").resolve_secret_key() != key


def test_development_blank_secret_counts_as_unset(tmp_path):
    for blank in ("", "   "):
        assert (
            make(tmp_path, secret_key=blank).resolve_secret_key()
            == make(tmp_path).resolve_secret_key()
        )


def test_development_explicit_secret_is_used_and_nothing_written(tmp_path):
    assert make(tmp_path, secret_key="dev").resolve_secret_key() == "dev"
    assert not (tmp_path / "var" / SECRET_FILE_NAME).exists()


def test_loose_permissions_are_tightened_and_empty_file_replaced(tmp_path):
    key_file = tmp_path / "var" / SECRET_FILE_NAME
    key_file.parent.mkdir()
    key_file.write_text("kept-key-value\n")
    key_file.chmod(0o644)
    assert make(tmp_path).resolve_secret_key() == "kept-key-value"
    assert mode(key_file) == 0o600

    key_file.write_text("")  # a crash between create and write in an older version
    key = make(tmp_path).resolve_secret_key()
    assert len(key) >= 48 and key_file.read_text() == key and mode(key_file) == 0o600


def test_concurrent_first_starts_agree_on_one_key(tmp_path):
    barrier = threading.Barrier(8)
    keys: list[str] = []

    def start() -> None:
        settings = make(tmp_path)
        barrier.wait()
        keys.append(settings.resolve_secret_key())

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(keys) == 8 and len(set(keys)) == 1
    assert (tmp_path / "var" / SECRET_FILE_NAME).read_text() == keys[0]


def test_describe_and_masked_never_show_the_key(tmp_path):
    settings = make(tmp_path)
    path = str(settings.secret_key_file)
    assert settings.describe_secret_key() == (
        f"not set: generated on first start and persisted in {path}"
    )
    assert not settings.secret_key_file.exists()  # describing writes nothing
    key = settings.resolve_secret_key()
    masked = settings.masked()
    assert masked["secret_key"] == f"generated, persisted in {path}"
    assert key not in repr(masked)

    explicit = make(tmp_path, secret_key=STRONG, wechat_app_secret="wx-secret-1")
    masked = explicit.masked()
    assert STRONG not in repr(masked) and "wx-secret-1" not in repr(masked)
    assert masked["secret_key"] == "******** (YUNTU_SECRET_KEY)"
    assert masked["wechat_app_secret"] == "********"


# ---- production refuses weak secrets ------------------------------------------------------------


@pytest.mark.parametrize(
    "secret",
    [
        None,
        "",
        "   ",
        *sorted(KNOWN_WEAK_SECRETS - {""}),
        "CHANGEME",
        "x7Kq-short-random-31-characters"[:31],
        "ab" * 32,
        "0" * 64,
    ],
)
def test_production_refuses_unset_weak_and_short_secrets(tmp_path, secret):
    settings = make(tmp_path, env="production", secret_key=secret)
    with pytest.raises(ConfigError, match="YUNTU_SECRET_KEY") as caught:
        settings.resolve_secret_key()
    if secret and len(secret) > 10:  # the message never repeats the value
        assert secret not in str(caught.value)
    with pytest.raises(ConfigError):
        settings.validate_secret_key()
    with pytest.raises(ConfigError):
        create_app(settings)
    assert not (tmp_path / "var" / SECRET_FILE_NAME).exists()


def test_production_ignores_a_generated_development_key(tmp_path):
    make(tmp_path).resolve_secret_key()  # development run left a key file behind
    with pytest.raises(ConfigError, match="not set"):
        make(tmp_path, env="production").resolve_secret_key()


def test_production_accepts_a_strong_secret(tmp_path):
    settings = make(tmp_path, env="production", secret_key=STRONG)
    assert settings.resolve_secret_key() == STRONG
    settings.validate_secret_key()
    assert not (tmp_path / "var" / SECRET_FILE_NAME).exists()


def test_production_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("YUNTU_ENV", "production")
    monkeypatch.setenv("YUNTU_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("YUNTU_SECRET_KEY", "changeme")
    with pytest.raises(ConfigError):
        Settings(_env_file=None).resolve_secret_key()
    monkeypatch.setenv("YUNTU_SECRET_KEY", STRONG)
    assert Settings(_env_file=None).resolve_secret_key() == STRONG


def test_dotenv_file_is_read(tmp_path):
    (tmp_path / ".env").write_text(
        f"YUNTU_ENV=production\nYUNTU_SECRET_KEY={STRONG}\nYUNTU_NODE_ID=7\n"
    )
    settings = Settings()
    assert settings.is_production and settings.node_id == 7
    assert settings.resolve_secret_key() == STRONG


def test_invalid_values_are_refused(tmp_path):
    for values in ({"env": "staging"}, {"node_id": 1024}, {"port": 0}):
        with pytest.raises(ValidationError):
            make(tmp_path, **values)


# ---- YUNTU_TRUSTED_PROXIES ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", []),
        ("10.0.0.0/8", ["10.0.0.0/8"]),
        (" 10.0.0.0/8 , 192.168.1.10,,::1 ", ["10.0.0.0/8", "192.168.1.10", "::1"]),
        ('["10.0.0.0/8", "fd00::/8"]', ["10.0.0.0/8", "fd00::/8"]),
        ("10.1.2.3/8", ["10.1.2.3/8"]),  # host bits set: accepted as the network
    ],
)
def test_trusted_proxies_parsing(tmp_path, monkeypatch, raw, expected):
    monkeypatch.setenv("YUNTU_TRUSTED_PROXIES", raw)
    settings = Settings(_env_file=None, data_dir=tmp_path)
    assert settings.trusted_proxies == expected
    networks = settings.trusted_proxy_networks
    assert len(networks) == len(expected)
    assert all(isinstance(n, ipaddress.IPv4Network | ipaddress.IPv6Network) for n in networks)


def test_trusted_proxy_networks_drive_the_client_address(tmp_path, monkeypatch):
    monkeypatch.setenv("YUNTU_TRUSTED_PROXIES", "10.0.0.0/8,::1")
    networks = Settings(_env_file=None, data_dir=tmp_path).trusted_proxy_networks
    assert ipaddress.ip_address("10.200.1.1") in networks[0]
    assert client_address("10.0.0.5", "198.51.100.7, 10.0.0.9", networks) == "198.51.100.7"
    assert client_address("::1", "198.51.100.7", networks) == "198.51.100.7"
    assert client_address("203.0.113.5", "198.51.100.7", networks) == "203.0.113.5"


@pytest.mark.parametrize(
    "raw", ["not-an-ip", "10.0.0.0/33", "10.0.0.0/8,bogus", '["10.0.0.0/8", 5]', "[oops"]
)
def test_trusted_proxies_invalid(tmp_path, monkeypatch, raw):
    monkeypatch.setenv("YUNTU_TRUSTED_PROXIES", raw)
    with pytest.raises(ValidationError):
        Settings(_env_file=None, data_dir=tmp_path)


def test_cors_origins_parse_the_same_way(tmp_path, monkeypatch):
    monkeypatch.setenv("YUNTU_CORS_ORIGINS", "https://a.example, https://b.example")
    assert Settings(_env_file=None, data_dir=tmp_path).cors_origins == [
        "https://a.example",
        "https://b.example",
    ]


# ---- URL masking --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql+asyncpg://user:pw@host/db", "postgresql+asyncpg://user:********@host/db"),
        (
            "postgresql+asyncpg://user:p/w@host:5432/db",
            "postgresql+asyncpg://user:********@host:5432/db",
        ),
        ("postgresql+asyncpg://user:p@ss@host/db", "postgresql+asyncpg://user:********@host/db"),
        ("redis://:pw@cache:6379/0", "redis://:********@cache:6379/0"),
        ("postgresql+asyncpg://user@host/db", "postgresql+asyncpg://user@host/db"),
        (
            "postgresql+asyncpg://host/db?password=pw&ssl=true",
            "postgresql+asyncpg://host/db?password=********&ssl=true",
        ),
        (
            "s3://bucket/prefix?access_key=AK&secret_key=SK",
            "s3://bucket/prefix?access_key=********&secret_key=********",
        ),
        ("sqlite+aiosqlite:////data/we@ird/yuntu.db", "sqlite+aiosqlite:////data/we@ird/yuntu.db"),
        ("file:///var/blobs", "file:///var/blobs"),
        ("not a url", "not a url"),
    ],
)
def test_mask_url(url, masked):
    assert mask_url(url) == masked


def test_masked_settings_hide_every_credential(tmp_path):
    settings = make(
        tmp_path,
        secret_key=STRONG,
        database_url="postgresql+asyncpg://app:dbpass1@db/yuntu",
        redis_url="redis://:redispass2@cache:6379/0",
        storage_url="s3://AKID:s3pass3@minio:9000/bucket",
    )
    text = repr(settings.masked())
    for secret in (STRONG, "dbpass1", "redispass2", "s3pass3"):
        assert secret not in text
    assert settings.masked()["database_url"] == "postgresql+asyncpg://app:********@db/yuntu"
