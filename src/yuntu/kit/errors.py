"""The one error catalogue: numeric code (HTTP status x 1000 + n), machine name, zh-CN and English.

docs/errors.md is generated from this table (`python -m yuntu.kit.errors`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    code: int
    name: str
    zh: str
    en: str

    @property
    def status(self) -> int:
        return self.code // 1000


class E:
    """Every error the API can answer with. Add new ones here, never inline."""

    BAD_REQUEST = ErrorSpec(400001, "BAD_REQUEST", "请求无效", "Bad request")
    MALFORMED_JSON = ErrorSpec(
        400002, "MALFORMED_JSON", "请求体不是有效的 JSON", "Request body is not valid JSON"
    )
    WEAK_PASSWORD = ErrorSpec(
        400003, "WEAK_PASSWORD", "密码不符合要求", "Password does not meet the policy"
    )
    WECHAT_STATE_INVALID = ErrorSpec(
        400004,
        "WECHAT_STATE_INVALID",
        "微信登录状态无效或已使用",
        "WeChat login state is unknown, expired or already used",
    )
    WECHAT_CODE_INVALID = ErrorSpec(
        400005,
        "WECHAT_CODE_INVALID",
        "微信授权码无效或已过期",
        "WeChat authorization code is invalid or expired",
    )
    INVALID_PATH = ErrorSpec(
        400006, "INVALID_PATH", "文件名或路径无效", "Invalid file name or path"
    )
    FILE_TYPE_NOT_ALLOWED = ErrorSpec(
        400007,
        "FILE_TYPE_NOT_ALLOWED",
        "该盘不允许此文件类型",
        "File type not allowed on this drive",
    )
    CHECKSUM_MISMATCH = ErrorSpec(
        400008, "CHECKSUM_MISMATCH", "文件校验失败", "Checksum does not match the declared one"
    )
    SIZE_MISMATCH = ErrorSpec(
        400009, "SIZE_MISMATCH", "文件大小与声明不符", "Size does not match the declared one"
    )
    INVALID_PART = ErrorSpec(
        400010, "INVALID_PART", "分片编号或大小无效", "Part number or part size is invalid"
    )
    PARTS_MISSING = ErrorSpec(
        400011, "PARTS_MISSING", "分片不完整", "Some parts have not been uploaded"
    )
    DIRECT_PARTS_UNAVAILABLE = ErrorSpec(
        400012,
        "DIRECT_PARTS_UNAVAILABLE",
        "直传分片需要 S3 兼容存储",
        "Direct-to-storage parts need S3-compatible storage on this server",
    )
    INVALID_STATE = ErrorSpec(
        409005, "INVALID_STATE", "当前状态不允许此操作", "Not allowed in the current state"
    )
    NAME_CONFLICT = ErrorSpec(
        409006, "NAME_CONFLICT", "同名文件或文件夹已存在", "An item with this name already exists"
    )
    IDEMPOTENCY_KEY_REUSED = ErrorSpec(
        409008,
        "IDEMPOTENCY_KEY_REUSED",
        "幂等键已用于另一个请求",
        "This Idempotency-Key was already used for a different request",
    )
    IDEMPOTENCY_IN_FLIGHT = ErrorSpec(
        409009,
        "IDEMPOTENCY_IN_FLIGHT",
        "相同幂等键的请求正在处理，请稍后重试",
        "A request with this Idempotency-Key is being processed; retry shortly",
    )
    HOLD_CLOSED = ErrorSpec(
        409010, "HOLD_CLOSED", "冻结已结束", "The hold is already captured, released or expired"
    )
    HOLD_EXCEEDED = ErrorSpec(
        409011, "HOLD_EXCEEDED", "扣款超过冻结余额", "Capture exceeds what is left of the hold"
    )
    ORDER_NOT_PAYABLE = ErrorSpec(
        409012, "ORDER_NOT_PAYABLE", "订单状态不允许此操作", "The order cannot change this way"
    )
    BUDGET_EXHAUSTED = ErrorSpec(
        409013,
        "BUDGET_EXHAUSTED",
        "任务预算已用完",
        "The task's budget is spent: raise it to resume",
    )
    PACKAGE_NAME_TAKEN = ErrorSpec(
        409014, "PACKAGE_NAME_TAKEN", "包名称已被使用", "A package with this name already exists"
    )
    VERSION_NOT_PROCESSED = ErrorSpec(
        409015,
        "VERSION_NOT_PROCESSED",
        "该版本尚未处理成功，不能发布",
        "Only a successfully processed version can be published",
    )
    PAYMENT_MISMATCH = ErrorSpec(
        409020,
        "PAYMENT_MISMATCH",
        "支付通知的金额或币种与订单不符",
        "The payment notice's amount or currency does not match the order",
    )
    RETRY_LIMIT = ErrorSpec(
        409007, "RETRY_LIMIT", "已达到重试次数上限", "No attempts left for this file"
    )
    FILE_TOO_LARGE = ErrorSpec(
        413003, "FILE_TOO_LARGE", "文件超过允许的大小", "File is larger than allowed"
    )
    RANGE_NOT_SATISFIABLE = ErrorSpec(
        416001, "RANGE_NOT_SATISFIABLE", "请求的范围无效", "Requested range not satisfiable"
    )
    STORAGE_FULL = ErrorSpec(
        507001, "STORAGE_FULL", "存储空间不足", "The storage backend is out of space"
    )

    UNAUTHENTICATED = ErrorSpec(401000, "UNAUTHENTICATED", "需要登录", "Authentication required")
    TOKEN_EXPIRED = ErrorSpec(401001, "TOKEN_EXPIRED", "令牌已过期", "Token expired")
    TOKEN_INVALID = ErrorSpec(401002, "TOKEN_INVALID", "令牌无效", "Token invalid")
    INVALID_CREDENTIALS = ErrorSpec(
        401003, "INVALID_CREDENTIALS", "账号或密码错误", "Wrong account or password"
    )
    TOKEN_REUSED = ErrorSpec(
        401004,
        "TOKEN_REUSED",
        "刷新令牌已被使用，该登录的所有会话已注销",
        "Refresh token was already used; every session of this login was revoked",
    )
    SESSION_REVOKED = ErrorSpec(401005, "SESSION_REVOKED", "会话已注销", "Session revoked")
    ACCOUNT_DISABLED = ErrorSpec(
        401006, "ACCOUNT_DISABLED", "账号已停用", "Account suspended or deleted"
    )
    API_KEY_INVALID = ErrorSpec(
        401007, "API_KEY_INVALID", "API 密钥无效", "API key invalid or revoked"
    )
    SIGNATURE_INVALID = ErrorSpec(
        401008,
        "SIGNATURE_INVALID",
        "回调签名或授权无效",
        "Callback signature or authorization invalid",
    )

    INSUFFICIENT_BALANCE = ErrorSpec(
        402001, "INSUFFICIENT_BALANCE", "余额不足", "Insufficient balance"
    )
    INSUFFICIENT_POINTS = ErrorSpec(
        402002, "INSUFFICIENT_POINTS", "积分不足", "Insufficient points"
    )

    FORBIDDEN = ErrorSpec(403001, "FORBIDDEN", "没有权限", "Permission denied")
    SCOPE_MISSING = ErrorSpec(
        403002, "SCOPE_MISSING", "API 密钥缺少所需权限", "API key lacks the required scope"
    )

    NOT_FOUND = ErrorSpec(404001, "NOT_FOUND", "资源不存在", "Not found")
    ROUTE_NOT_FOUND = ErrorSpec(404002, "ROUTE_NOT_FOUND", "接口不存在", "No such endpoint")

    METHOD_NOT_ALLOWED = ErrorSpec(
        405001, "METHOD_NOT_ALLOWED", "不支持该请求方法", "Method not allowed"
    )
    NOT_ACCEPTABLE = ErrorSpec(406001, "NOT_ACCEPTABLE", "无法提供请求的格式", "Not acceptable")

    CONFLICT = ErrorSpec(409001, "CONFLICT", "资源冲突", "Conflict")
    USERNAME_TAKEN = ErrorSpec(409002, "USERNAME_TAKEN", "用户名已被使用", "Username already taken")
    EMAIL_TAKEN = ErrorSpec(409003, "EMAIL_TAKEN", "邮箱已被使用", "Email already registered")
    PHONE_TAKEN = ErrorSpec(
        409004, "PHONE_TAKEN", "手机号已被使用", "Phone number already registered"
    )

    QUOTA_EXCEEDED = ErrorSpec(413001, "QUOTA_EXCEEDED", "超出存储配额", "Storage quota exceeded")
    PAYLOAD_TOO_LARGE = ErrorSpec(
        413002, "PAYLOAD_TOO_LARGE", "请求体过大", "Request body too large"
    )
    UNSUPPORTED_MEDIA_TYPE = ErrorSpec(
        415001, "UNSUPPORTED_MEDIA_TYPE", "不支持的内容类型", "Unsupported media type"
    )

    VALIDATION_ERROR = ErrorSpec(422001, "VALIDATION_ERROR", "参数校验失败", "Validation failed")

    RATE_LIMITED = ErrorSpec(
        429001, "RATE_LIMITED", "请求过于频繁，请稍后再试", "Too many requests; retry later"
    )

    INTERNAL_ERROR = ErrorSpec(500001, "INTERNAL_ERROR", "服务器内部错误", "Internal server error")
    UPSTREAM_ERROR = ErrorSpec(502001, "UPSTREAM_ERROR", "上游服务出错", "Upstream service failed")
    STORAGE_UNAVAILABLE = ErrorSpec(
        502002, "STORAGE_UNAVAILABLE", "存储服务出错", "The storage backend failed"
    )
    SERVICE_UNAVAILABLE = ErrorSpec(
        503001, "SERVICE_UNAVAILABLE", "服务暂不可用", "Service unavailable"
    )
    FEATURE_NOT_CONFIGURED = ErrorSpec(
        503002,
        "FEATURE_NOT_CONFIGURED",
        "该功能未配置",
        "This feature is not configured on this server",
    )


CATALOGUE: tuple[ErrorSpec, ...] = tuple(
    value for value in vars(E).values() if isinstance(value, ErrorSpec)
)
assert len({spec.code for spec in CATALOGUE}) == len(CATALOGUE), "duplicate error code"
BY_STATUS: dict[int, ErrorSpec] = {}
for _spec in sorted(CATALOGUE, key=lambda spec: spec.code):  # the generic one: lowest code
    BY_STATUS.setdefault(_spec.status, _spec)


class AppError(Exception):
    """Raised by services and dependencies; the app turns it into the error envelope.

    `commit` asks the request harness to commit what the unit of work wrote before answering
    with the error (refresh-token reuse revokes the family *and* answers 401)."""

    def __init__(
        self,
        spec: ErrorSpec,
        *,
        message: str | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
        commit: bool = False,
    ) -> None:
        super().__init__(message or spec.en)
        self.spec = spec
        self.message = message
        self.details = details
        self.headers = headers or {}
        self.commit = commit


def render_markdown() -> str:
    lines = [
        "# Error catalogue",
        "",
        "Every error answers with the HTTP status and "
        '`{"code", "message", "error", "data": null, "details"}`. '
        "`code` is the HTTP status x 1000 + n; `error` is the stable machine name. "
        "Messages are zh-CN unless `Accept-Language` prefers English.",
        "",
        "| code | HTTP | error | English | 中文 |",
        "|---|---|---|---|---|",
    ]
    for spec in sorted(CATALOGUE, key=lambda s: s.code):
        lines.append(f"| {spec.code} | {spec.status} | `{spec.name}` | {spec.en} | {spec.zh} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_markdown(), end="")
