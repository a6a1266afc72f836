"""TOML + environment -> one frozen, validated settings object (SPEC section 3)."""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


class ConfigError(Exception):
    """A configuration problem the user must fix; the message names the key."""


@dataclass(frozen=True)
class BridgeSettings:
    public_url: str = "https://bro.example.kommune.no"
    database_url: str = "sqlite+aiosqlite:///skolebro.db"
    timezone: str = "Europe/Oslo"
    default_language: str = "nb"


@dataclass(frozen=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8080


@dataclass(frozen=True)
class SmsSettings:
    enabled: bool = False
    account_sid: str = "AC..."
    auth_token_env: str = "TWILIO_AUTH_TOKEN"
    from_number: str = "+4759440000"
    messaging_service_sid: str = ""
    api_base_url: str = "https://api.twilio.com"
    max_per_second: float = 10


@dataclass(frozen=True)
class TelegramSettings:
    enabled: bool = False
    token_env: str = "TELEGRAM_BOT_TOKEN"
    mode: str = "polling"
    api_base_url: str = "https://api.telegram.org"
    webhook_secret_env: str = "TELEGRAM_WEBHOOK_SECRET"
    bot_username: str = "skolebro_bot"
    max_per_second: float = 30


@dataclass(frozen=True)
class EmailSettings:
    enabled: bool = False
    smtp_host: str = "smtp.example.kommune.no"
    smtp_port: int = 587
    smtp_tls: str = "starttls"
    smtp_username: str = ""
    smtp_password_env: str = "SMTP_PASSWORD"
    from_address: str = "skolebro@example.kommune.no"
    reply_domain: str = "svar.example.kommune.no"
    listen_host: str = "127.0.0.1"
    listen_port: int = 2525
    protocol: str = "smtp"
    max_message_bytes: int = 10485760
    trusted_authserv_ids: tuple[str, ...] = ()
    reply_token_days: int = 60
    max_per_second: float = 20


@dataclass(frozen=True)
class DeliverySettings:
    max_attempts: int = 8
    backoff_initial_seconds: float = 5
    backoff_max_seconds: float = 900
    quiet_hours: str = "21:00-07:00"
    lease_seconds: float = 60


@dataclass(frozen=True)
class DigestSettings:
    enabled: bool = True
    absence_time: str = "08:15"
    days: str = "mon-fri"
    unanswered_after_hours: int = 24
    grace_minutes: int = 120


@dataclass(frozen=True)
class WebhookSettings:
    unit_id: str = ""
    url: str = ""
    secret_env: str = ""


@dataclass(frozen=True)
class PrivacySettings:
    sensitive_action: str = "redact"
    retention_days: int = 365


@dataclass(frozen=True)
class Settings:
    bridge: BridgeSettings = field(default_factory=BridgeSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    sms: SmsSettings = field(default_factory=SmsSettings)
    telegram: TelegramSettings = field(default_factory=TelegramSettings)
    email: EmailSettings = field(default_factory=EmailSettings)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    digests: DigestSettings = field(default_factory=DigestSettings)
    webhooks: tuple[WebhookSettings, ...] = ()
    privacy: PrivacySettings = field(default_factory=PrivacySettings)
    # Where the config file lives: relative sqlite paths are resolved against it.
    base_dir: Path = field(default_factory=Path.cwd, compare=False)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.bridge.timezone)

    @property
    def database_url(self) -> str:
        """The database URL with a relative SQLite path made relative to the config file."""
        url = make_url(self.bridge.database_url)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            path = Path(url.database)
            if not path.is_absolute():
                url = url.set(database=str((self.base_dir / path).resolve()))
        return url.render_as_string(hide_password=False)

    def secret(self, section: str, key: str) -> str:
        """The secret that `[section] key` (a `*_env` key) names; ConfigError when unset."""
        return _env_secret(f"{section}.{key}", getattr(getattr(self, section), key))

    def webhook_secret(self, index: int) -> str:
        """The shared secret of the `index`-th `[[webhooks]]` entry."""
        return _env_secret(f"webhooks[{index}].secret_env", self.webhooks[index].secret_env)

    def require_channel_secrets(self, *channels: str) -> None:
        """Check the secrets of the enabled channels a command is going to use."""
        needed = {
            "sms": ["auth_token_env"],
            "telegram": ["token_env"]
            + (["webhook_secret_env"] if self.telegram.mode == "webhook" else []),
            "email": ["smtp_password_env"] if self.email.smtp_username else [],
        }
        for channel in channels:
            if getattr(self, channel).enabled:
                for key in needed[channel]:
                    self.secret(channel, key)


_CHOICES = {
    "bridge.default_language": ("nb", "nn", "en"),
    "telegram.mode": ("polling", "webhook"),
    "email.smtp_tls": ("starttls", "tls", "none"),
    "email.protocol": ("smtp", "lmtp"),
    "privacy.sensitive_action": ("redact", "reject", "flag"),
}
_HHMM = r"([01]\d|2[0-3]):[0-5]\d"
_PATTERNS = {
    "delivery.quiet_hours": (rf"^({_HHMM}-{_HHMM})?$", "HH:MM-HH:MM or empty"),
    "digests.absence_time": (rf"^{_HHMM}$", "HH:MM"),
    "digests.days": (
        r"^(mon|tue|wed|thu|fri|sat|sun)(-(mon|tue|wed|thu|fri|sat|sun))?"
        r"(,(mon|tue|wed|thu|fri|sat|sun)(-(mon|tue|wed|thu|fri|sat|sun))?)*$",
        "day names such as mon-fri or mon,wed,fri",
    ),
}
_POSITIVE = {
    "http.port",
    "email.smtp_port",
    "email.listen_port",
    "email.max_message_bytes",
    "email.reply_token_days",
    "delivery.max_attempts",
    "delivery.lease_seconds",
    "privacy.retention_days",
    "sms.max_per_second",
    "telegram.max_per_second",
    "email.max_per_second",
}


def _type_name(tp: Any) -> str:
    if tp is bool:
        return "a boolean"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    return "a list of strings"


def _check_value(key: str, tp: Any, value: Any) -> Any:
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    else:  # tuple[str, ...]
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    if not ok:
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if key in _CHOICES and value not in _CHOICES[key]:
        raise ConfigError(f"{key}: must be one of {', '.join(_CHOICES[key])}, got {value!r}")
    if key in _PATTERNS and not re.match(_PATTERNS[key][0], value):
        raise ConfigError(f"{key}: expected {_PATTERNS[key][1]}, got {value!r}")
    if key in _POSITIVE and value <= 0:
        raise ConfigError(f"{key}: must be greater than 0, got {value!r}")
    return value


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix}: expected a table")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls) if f.name != "base_dir"}
    values: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in known:
            raise ConfigError(f"{key}: unknown key")
        tp = hints[name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            values[name] = _build(tp, value, key)
        elif typing.get_origin(tp) is tuple and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            if not isinstance(value, list):
                raise ConfigError(f"{key}: expected an array of tables ([[{key}]])")
            item_cls = typing.get_args(tp)[0]
            values[name] = tuple(
                _build(item_cls, item, f"{key}[{i}]") for i, item in enumerate(value)
            )
        else:
            if isinstance(tp, types.UnionType):  # pragma: no cover - no optional keys today
                tp = typing.get_args(tp)[0]
            values[name] = _check_value(key, tp, value)
    return cls(**values)


def _validate(settings: Settings) -> None:
    try:
        ZoneInfo(settings.bridge.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"bridge.timezone: unknown time zone {settings.bridge.timezone!r}"
        ) from None
    try:
        url = make_url(settings.bridge.database_url)
    except ArgumentError:
        raise ConfigError(
            f"bridge.database_url: cannot parse {settings.bridge.database_url!r}"
        ) from None
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError("bridge.database_url: only sqlite and postgresql are supported")
    if not re.match(r"^https?://", settings.bridge.public_url):
        raise ConfigError("bridge.public_url: expected an http(s) URL")
    for i, hook in enumerate(settings.webhooks):
        for name in ("unit_id", "url", "secret_env"):
            if not getattr(hook, name):
                raise ConfigError(f"webhooks[{i}].{name}: required")
    if settings.sms.enabled and not (
        settings.sms.from_number or settings.sms.messaging_service_sid
    ):
        raise ConfigError("sms.from_number: set it or sms.messaging_service_sid")
    if settings.sms.enabled and not settings.sms.account_sid:
        raise ConfigError("sms.account_sid: required when sms.enabled")


def parse_config(text: str, base_dir: Path | None = None, source: str = "config") -> Settings:
    """Parse TOML text into Settings; ConfigError names the offending key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source}: not valid TOML: {e}") from None
    settings: Settings = _build(Settings, data, "")
    settings = dataclasses.replace(settings, base_dir=base_dir or Path.cwd())
    _validate(settings)
    return settings


def default_config_path() -> Path:
    return Path(os.environ.get("SKOLEBRO_CONFIG") or "skolebro.toml")


def load_config(path: str | Path | None = None) -> Settings:
    """Load the config file; with no file at the default path, every setting's default."""
    explicit = path is not None or bool(os.environ.get("SKOLEBRO_CONFIG"))
    p = Path(path) if path is not None else default_config_path()
    if not p.exists():
        if explicit:
            raise ConfigError(f"config file not found: {p}")
        return Settings()
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {p}: {e}") from None
    return parse_config(text, base_dir=p.resolve().parent, source=str(p))


def _env_secret(key: str, env_name: str) -> str:
    value = os.environ.get(env_name, "") if env_name else ""
    if not value:
        raise ConfigError(f"{key}: environment variable {env_name or '(none)'} is not set")
    return value
