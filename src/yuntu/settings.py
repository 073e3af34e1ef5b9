"""One settings object for every mode: only these values differ between embedded and distributed."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import parse_qsl, quote, urlencode

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from yuntu.packages.settings import PackageSettings
from yuntu.render.settings import RenderSettings

# Values that appear in examples, tutorials and our own docs: never acceptable in production.
KNOWN_WEAK_SECRETS = frozenset(
    {"", "secret", "changeme", "change-me", "change_me", "dev", "development", "yuntu", "test"}
)
MIN_PRODUCTION_SECRET_LENGTH = 32
MIN_DISTINCT_SECRET_CHARACTERS = 8
SECRET_FILE_NAME = "secret_key"  # noqa: S105 (a file name)


class ConfigError(RuntimeError):
    """Raised when the configuration cannot be used (for example production with a weak secret)."""


def _split_csv(value: object) -> object:
    """`a, b` or a JSON list `["a", "b"]` (what pydantic-settings would expect) -> list."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            try:
                parsed = json.loads(stripped)
            except ValueError:
                raise ValueError("not a valid JSON list") from None
            if not isinstance(parsed, list) or not all(isinstance(i, str) for i in parsed):
                raise ValueError("expected a JSON list of strings")
            return [item.strip() for item in parsed if item.strip()]
        return [item.strip() for item in stripped.split(",") if item.strip()]
    return value


class PointsProduct(BaseModel):
    product_id: str = Field(min_length=1, max_length=128)
    points: int = Field(ge=1, le=10**9)
    price: Decimal = Field(ge=0, le=1_000_000, decimal_places=2)
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    title: str | None = None


class Settings(RenderSettings, PackageSettings, BaseSettings):
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
    node_id: int | None = Field(
        default=None,
        ge=0,
        le=1023,
        description="Snowflake node id (10 bits); unset: random per process",
    )

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

    workers: int = Field(
        default=4,
        ge=0,
        le=256,
        description="Jobs run concurrently by the in-process worker of `yuntu serve` (0: none)",
    )
    plugins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Python modules imported at start-up to register extra job handlers",
    )
    worker_lease_seconds: float = Field(default=30.0, ge=1.0)
    worker_poll_interval_seconds: float = Field(default=1.0, gt=0)
    worker_shutdown_timeout_seconds: float = Field(default=30.0, ge=0)
    cron_max_lateness_seconds: float = Field(default=300.0, ge=1.0)
    auth_cache_seconds: float = Field(
        default=30.0,
        ge=0,
        description="Read-only requests may reuse a checked session this long (0: off); every "
        "change made through the app invalidates it at once",
    )
    ws_auth_timeout_seconds: float = Field(default=5.0, gt=0)
    ws_recheck_seconds: float = Field(
        default=60.0, gt=0, description="How often an open WebSocket re-checks its session"
    )

    drive_default_quota_bytes: int | None = Field(
        default=None, ge=0, description="Quota of a user's default drive (unset: unlimited)"
    )
    drive_max_versions: int = Field(
        default=10, ge=1, le=1000, description="Versions kept per file; older ones are dropped"
    )
    trash_retention_days: int = Field(default=30, ge=1, description="Trash is purged after this")
    blob_gc_grace_hours: float = Field(
        default=24.0, ge=0, description="An unreferenced blob is deleted after this long"
    )
    upload_direct_max_bytes: int = Field(
        default=5 * 1024 * 1024, ge=1, description="Largest single-request file upload"
    )
    upload_part_size: int = Field(
        default=5 * 1024 * 1024,
        ge=5 * 1024 * 1024,
        le=5 * 1024 * 1024 * 1024,
        description="Default multipart part size (S3's rules: 5 MiB to 5 GiB, 10,000 parts)",
    )
    upload_max_part_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=5 * 1024 * 1024,
        description="Largest part a client may choose when it sends parts through the server",
    )
    upload_form_max_bytes: int = Field(
        default=2 * 1024 * 1024 * 1024, ge=1, description="Largest `POST /files/upload` form"
    )
    upload_idle_expiry_hours: float = Field(
        default=24.0, gt=0, description="Idle multipart uploads expire after this"
    )
    upload_max_attempts: int = Field(default=3, ge=1, le=20, description="Attempts per file")
    upload_max_manifest_files: int = Field(default=100_000, ge=1)
    instant_upload_challenge_seconds: int = Field(
        default=300, ge=10, description="Lifetime of an instant-upload proof challenge"
    )
    download_url_ttl_seconds: int = Field(
        default=3600, ge=10, description="Lifetime of signed download links"
    )
    max_path_bytes: int = Field(
        default=2000, ge=255, le=2000, description="Longest folder path (UTF-8 bytes)"
    )

    payment_provider: Literal["dev_simulated", "none"] | None = Field(
        default=None,
        description="Who takes recharge payments. `dev_simulated` is a development stand-in "
        "(its checkout confirms through a signed callback; no money moves) and is refused in "
        "production; `none` turns recharge off. Unset: `dev_simulated` in development, `none` "
        "in production",
    )
    recharge_min_fen: int = Field(default=100, ge=1, description="Smallest recharge, in fen")
    recharge_max_fen: int = Field(
        default=5_000_000, ge=1, description="Largest single recharge, in fen"
    )
    order_expiry_minutes: int = Field(
        default=30, ge=1, description="An unpaid order expires after this"
    )
    hold_expiry_hours: float = Field(
        default=72.0, gt=0, description="Default lifetime of a hold not captured or released"
    )
    idempotency_retention_hours: float = Field(
        default=24.0, ge=1, description="How long an Idempotency-Key's first response is kept"
    )
    points_products: list[PointsProduct] = Field(
        default_factory=lambda: [
            PointsProduct(
                product_id="points_1000", points=1000, price=Decimal("0.99"), currency="USD"
            ),
            PointsProduct(
                product_id="points_6000", points=6000, price=Decimal("4.99"), currency="USD"
            ),
            PointsProduct(
                product_id="points_15000", points=15000, price=Decimal("9.99"), currency="USD"
            ),
        ],
        description="Points packs on sale (JSON list of {product_id, points, price, currency, "
        "title}); product_id is the store's (RevenueCat) product id",
    )
    subscription_plans: dict[str, str] = Field(
        default_factory=dict,
        description="Store product id -> plan type (weekly, monthly, yearly, lifetime); products "
        "not listed are classified by the period word in their id",
    )
    revenuecat_webhook_auth: SecretStr | None = Field(
        default=None,
        description="The Authorization header value configured in RevenueCat's dashboard; the "
        "webhook answers 401 to everything while it is unset",
    )
    revenuecat_webhook_secret: SecretStr | None = Field(
        default=None,
        description="When set, `X-RevenueCat-Webhook-Signature` (HMAC-SHA256) is required too",
    )
    revenuecat_signature_tolerance_seconds: int = Field(default=300, ge=1)
    revenuecat_accept_sandbox: bool | None = Field(
        default=None,
        description="Act on SANDBOX events (test purchases cost nothing). Unset: yes in "
        "development, no in production, where they are recorded and ignored",
    )
    weekly_reward_enabled: bool = True
    weekly_reward_points: int = Field(default=2000, ge=1)
    weekly_reward_cron: str = Field(
        default="0 0 * * 1", description="When the weekly subscriber reward runs (UTC)"
    )
    weekly_reward_plans: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["weekly"], description="Plan types that earn the weekly reward"
    )
    weekly_reward_batch: int = Field(default=100, ge=1, le=10_000)

    wechat_app_id: str | None = None
    wechat_app_secret: SecretStr | None = None
    wechat_redirect_uri: str | None = None
    wechat_connect_url: str = "https://open.weixin.qq.com/connect/qrconnect"
    wechat_api_base: str = "https://api.weixin.qq.com"
    wechat_session_ttl_seconds: int = Field(default=300, ge=30)
    wechat_timeout_seconds: float = Field(default=10.0, gt=0)

    @field_validator(
        "trusted_proxies", "cors_origins", "plugins", "weekly_reward_plans", mode="before"
    )
    @classmethod
    def _csv(cls, value: object) -> object:
        return _split_csv(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"not an IP address or network: {item!r}") from None
        return value

    @cached_property
    def trusted_proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(item, strict=False) for item in self.trusted_proxies)

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    @property
    def effective_revenuecat_accept_sandbox(self) -> bool:
        if self.revenuecat_accept_sandbox is None:
            return not self.is_production
        return self.revenuecat_accept_sandbox

    @property
    def effective_payment_provider(self) -> str:
        if self.payment_provider is None:
            return "none" if self.is_production else "dev_simulated"
        return self.payment_provider

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

    @property
    def secret_key_file(self) -> Path:
        """Where development keeps its generated signing key."""
        return (self.data_dir / SECRET_FILE_NAME).resolve()

    def _explicit_secret_key(self) -> str | None:
        """YUNTU_SECRET_KEY if set (an empty or blank value counts as unset); in production,
        refuse anything that is missing, a known default, short or low-entropy."""
        self._refuse_simulations_in_production()
        raw = self.secret_key.get_secret_value() if self.secret_key else ""
        key = raw.strip()
        if not self.is_production:
            return raw if key else None
        if not key:
            raise ConfigError(
                "YUNTU_SECRET_KEY is not set; production refuses a generated secret. "
                'Generate one with: python -c "import secrets; print(secrets.token_urlsafe(48))"'
            )
        if (
            key.lower() in KNOWN_WEAK_SECRETS
            or len(key) < MIN_PRODUCTION_SECRET_LENGTH
            or len(set(key)) < MIN_DISTINCT_SECRET_CHARACTERS
        ):
            raise ConfigError(
                "YUNTU_SECRET_KEY is a default, too short "
                f"(< {MIN_PRODUCTION_SECRET_LENGTH} characters) or too repetitive; "
                "refusing to start in production. "
                'Generate one with: python -c "import secrets; print(secrets.token_urlsafe(48))"'
            )
        return raw

    def validate_secret_key(self) -> None:
        """Raise ConfigError when production would refuse the key; never writes anything."""
        self._explicit_secret_key()

    def _refuse_simulations_in_production(self) -> None:
        if self.is_production and self.payment_provider == "dev_simulated":
            raise ConfigError(
                "YUNTU_PAYMENT_PROVIDER=dev_simulated confirms payments nobody made; "
                "refusing to start in production"
            )

    def resolve_secret_key(self) -> str:
        """Return the signing key; generate and persist one (mode 0600, under the data dir) in
        development, refuse weak ones in production."""
        key = self._explicit_secret_key()
        if key is not None:
            return key
        path = self.secret_key_file
        existing = _read_secret_file(path)
        if existing:
            return existing
        self.ensure_data_dir()
        # Write a private temporary file, then link it into place: the key file never exists
        # half-written, and when two processes start at once both end up with the winner's key.
        key = secrets.token_urlsafe(48)
        temporary = path.with_name(f".{SECRET_FILE_NAME}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(key)
                handle.flush()
                os.fsync(handle.fileno())
            if path.exists() and not _read_secret_file(path):
                path.unlink(missing_ok=True)  # an empty leftover from a crash: replace it
            try:
                os.link(temporary, path)
            except FileExistsError:
                return _read_secret_file(path) or key
        finally:
            temporary.unlink(missing_ok=True)
        return key

    def describe_secret_key(self) -> str:
        """How the signing key is configured, for display (never the value)."""
        if self._explicit_secret_key() is not None:
            return "******** (YUNTU_SECRET_KEY)"
        path = self.secret_key_file
        if _read_secret_file(path):
            return f"generated, persisted in {path}"
        return f"not set: generated on first start and persisted in {path}"

    def masked(self) -> dict[str, object]:
        """Effective settings for display: secrets and credentials in URLs are masked; the
        secret key line says where a generated key lives."""
        out: dict[str, object] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = MASK if value.get_secret_value() else ""
            elif isinstance(value, Path):
                value = str(value)
            out[name] = value
        out["secret_key"] = self.describe_secret_key()
        out["database_url"] = mask_url(self.effective_database_url)
        out["storage_url"] = mask_url(self.effective_storage_url)
        if self.redis_url:
            out["redis_url"] = mask_url(self.redis_url.get_secret_value())
        return out


MASK = "********"
_SECRET_QUERY_NAMES = ("password", "passwd", "pwd", "secret", "token", "key", "credential")


def _read_secret_file(path: Path) -> str | None:
    try:
        if path.stat().st_mode & 0o077:
            with contextlib.suppress(OSError):
                path.chmod(0o600)  # a generated key is readable by its owner only
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def mask_url(url: str) -> str:
    """Hide the password in a URL's userinfo and the values of secret-looking query parameters
    (password, secret, token, key...)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    rest, qmark, query = rest.partition("?")
    # The userinfo ends at the last "@" before the path: passwords may contain "/" or "@".
    at = rest.rfind("@")
    if at != -1:
        userinfo, hostpart = rest[:at], rest[at + 1 :]
        user, colon, _password = userinfo.partition(":")
        if "/" not in user and colon:
            rest = f"{user}:{MASK}@{hostpart}"
    if qmark:
        pairs = parse_qsl(query, keep_blank_values=True)
        masked = [
            (name, MASK if any(word in name.lower() for word in _SECRET_QUERY_NAMES) else value)
            for name, value in pairs
        ]
        query = urlencode(masked, safe="*", quote_via=quote)
    return f"{scheme}://{rest}{qmark}{query}"


def get_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]
