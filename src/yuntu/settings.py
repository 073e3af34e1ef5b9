"""One settings object for every mode: only these values differ between embedded and distributed."""

from __future__ import annotations

import ipaddress
import os
import secrets
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Values that appear in examples, tutorials and our own docs: never acceptable in production.
KNOWN_WEAK_SECRETS = frozenset(
    {"", "secret", "changeme", "change-me", "change_me", "dev", "development", "yuntu", "test"}
)
MIN_PRODUCTION_SECRET_LENGTH = 32
SECRET_FILE_NAME = "secret_key"


class ConfigError(RuntimeError):
    """Raised when the configuration cannot be used (for example production with a weak secret)."""


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="YUNTU_", env_file=".env", extra="ignore", validate_default=True
    )

    env: Literal["development", "production"] = "development"
    data_dir: Path = Path("./var")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy async URL; default SQLite file in the data dir"
    )
    redis_url: SecretStr | None = None
    storage_url: SecretStr | None = Field(
        default=None, description="Blob storage; default local disk under the data dir"
    )
    secret_key: SecretStr | None = None
    node_id: int = Field(default=0, ge=0, le=1023, description="Snowflake node id (10 bits)")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    auto_migrate: bool = True
    log_level: str = "INFO"
    log_json: bool = True

    access_token_ttl_seconds: int = Field(default=30 * 60, ge=60)
    refresh_token_ttl_seconds: int = Field(default=7 * 24 * 3600, ge=300)
    login_max_failures: int = Field(default=10, ge=1)
    login_window_seconds: int = Field(default=300, ge=1)
    register_max_per_address: int = Field(default=30, ge=1, description="Per hour")
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024)
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)

    wechat_app_id: str | None = None
    wechat_app_secret: SecretStr | None = None
    wechat_redirect_uri: str | None = None
    wechat_connect_url: str = "https://open.weixin.qq.com/connect/qrconnect"
    wechat_api_base: str = "https://api.weixin.qq.com"
    wechat_session_ttl_seconds: int = Field(default=300, ge=30)
    wechat_timeout_seconds: float = Field(default=10.0, gt=0)

    @field_validator("trusted_proxies", "cors_origins", mode="before")
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        for item in value:
            ipaddress.ip_network(item, strict=False)
        return value

    @cached_property
    def trusted_proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(item, strict=False) for item in self.trusted_proxies)

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'yuntu.db').resolve()}"

    @property
    def effective_storage_url(self) -> str:
        if self.storage_url:
            return self.storage_url.get_secret_value()
        return f"file://{(self.data_dir / 'blobs').resolve()}"

    @property
    def rate_limit_storage_url(self) -> str:
        if self.redis_url:
            url = self.redis_url.get_secret_value()
            return "async+" + url if not url.startswith("async+") else url
        return "async+memory://"

    @property
    def wechat_enabled(self) -> bool:
        return bool(self.wechat_app_id and self.wechat_app_secret and self.wechat_redirect_uri)

    def ensure_data_dir(self) -> Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return self.data_dir

    def resolve_secret_key(self) -> str:
        """Return the signing key; generate and persist one in development, refuse weak ones in
        production."""
        if self.secret_key is not None:
            key = self.secret_key.get_secret_value()
            if self.is_production and (
                key.lower() in KNOWN_WEAK_SECRETS or len(key) < MIN_PRODUCTION_SECRET_LENGTH
            ):
                raise ConfigError(
                    "YUNTU_SECRET_KEY is a default or too short "
                    f"(< {MIN_PRODUCTION_SECRET_LENGTH} characters); refusing to start in production"
                )
            if not key:
                raise ConfigError("YUNTU_SECRET_KEY is empty")
            return key
        if self.is_production:
            raise ConfigError(
                "YUNTU_SECRET_KEY is not set; production refuses a generated secret. "
                'Generate one with: python -c "import secrets; print(secrets.token_urlsafe(48))"'
            )
        path = self.ensure_data_dir() / SECRET_FILE_NAME
        if path.exists():
            return path.read_text().strip()
        key = secrets.token_urlsafe(48)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key)
        return key

    def masked(self) -> dict[str, object]:
        """Effective settings for display: secrets and credentials in URLs are masked."""
        out: dict[str, object] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = "********" if value.get_secret_value() else ""
            elif isinstance(value, Path):
                value = str(value)
            out[name] = value
        out["database_url"] = mask_url(self.effective_database_url)
        out["storage_url"] = mask_url(self.effective_storage_url)
        if self.redis_url:
            out["redis_url"] = mask_url(self.redis_url.get_secret_value())
        return out


def mask_url(url: str) -> str:
    """Hide the password (and S3 secret) part of a URL's userinfo."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest.split("/", 1)[0]:
        return url
    userinfo, _, host = rest.partition("@")
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:********@{host}"


def get_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]
