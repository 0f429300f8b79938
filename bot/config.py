"""Typed settings: config.toml, overridden by WAYSTATION_* environment variables.

Lookup order for the file: ``--config PATH``, then ``$WAYSTATION_CONFIG``, then ``./config.toml``
(a missing default file is fine: defaults and the environment may be enough).
Nested keys in the environment use a double underscore: ``WAYSTATION_TELEGRAM__TOKEN``.
"""

from __future__ import annotations

import os
import tomllib
import zoneinfo
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_CONFIG_FILE = Path("config.toml")
ENV_PREFIX = "WAYSTATION_"


class ConfigError(Exception):
    """A configuration problem, worded as one line that names the key and what is expected."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WebhookSettings(_Section):
    listen: str = "0.0.0.0"
    port: int = Field(8443, ge=1, le=65535)
    url: str | None = None
    secret_token: SecretStr | None = None

    @field_validator("secret_token")
    @classmethod
    def _secret_charset(cls, value: SecretStr | None) -> SecretStr | None:
        # Telegram only allows 1-256 characters A-Z, a-z, 0-9, _ and - in the header value.
        if value is not None:
            raw = value.get_secret_value()
            if not (1 <= len(raw) <= 256) or not all(c.isascii() and (c.isalnum() or c in "_-") for c in raw):
                raise ValueError("1-256 characters of A-Z, a-z, 0-9, _ or -")
        return value

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("the public https:// URL Telegram should send updates to")
        return value


class TelegramSettings(_Section):
    token: SecretStr | None = None
    api_base_url: str = "https://api.telegram.org/bot"
    api_base_file_url: str = "https://api.telegram.org/file/bot"
    mode: Literal["polling", "webhook"] = "polling"
    webhook: WebhookSettings = WebhookSettings()
    # Telegram's limits for free messages; the outbox and rate limiter respect them.
    overall_max_rate: float = Field(25.0, gt=0)
    group_max_per_minute: int = Field(20, gt=0)


class DatabaseSettings(_Section):
    url: str = "sqlite+aiosqlite:///waystation.db"
    upgrade_on_start: bool = True
    echo: bool = False

    @field_validator("url")
    @classmethod
    def _async_driver(cls, value: str) -> str:
        if value.startswith("postgresql://") or value.startswith("postgres://"):
            value = "postgresql+asyncpg://" + value.split("://", 1)[1]
        if value.startswith("sqlite://"):
            value = "sqlite+aiosqlite://" + value.split("://", 1)[1]
        if not (value.startswith("sqlite+aiosqlite://") or value.startswith("postgresql+asyncpg://")):
            raise ValueError("a sqlite+aiosqlite:/// or postgresql+asyncpg:// URL")
        return value


class I18nSettings(_Section):
    default_language: Literal["en", "zh_Hans"] = "en"


class GeocodingSettings(_Section):
    # Nominatim (OpenStreetMap) by default; any server speaking its /search API works (a self-hosted one, the fake).
    domain: str = "nominatim.openstreetmap.org"
    scheme: Literal["https", "http"] = "https"
    # Nominatim's usage policy asks for an identifying user agent and at most one request per second.
    user_agent: str = "waystation-bot/0.1"
    min_delay_seconds: float = Field(1.0, ge=0)
    timeout_seconds: float = Field(5.0, gt=0)
    # Bias results to these countries (ISO 3166-1 alpha-2, comma separated); empty: worldwide.
    country_codes: str = "cn"
    cache_days: int = Field(30, ge=0)


class StationsSettings(_Section):
    # Search outward up to this distance; beyond it the bot says so and still shows the nearest station.
    search_radius_km: float = Field(50.0, gt=0)
    # Directions link on a station card: osm, amap, google or apple.
    directions: Literal["osm", "amap", "google", "apple"] = "osm"


class HelpSettings(_Section):
    # Shown at once when someone is in danger: service name -> number (police, ambulance, fire, or any label).
    emergency_numbers: dict[str, str] = {"police": "110", "ambulance": "120", "fire": "119"}
    # The relief station's 24-hour hotline (empty: not shown).
    hotline: str = ""
    # For people under 18 (China: 12355 youth service line).
    child_protection_line: str = "12355"
    # Reference numbers look like WS-2026-000123.
    reference_prefix: str = Field("WS", pattern=r"^[A-Z]{1,8}$")
    max_documents: int = Field(5, ge=0, le=10)


class StaffSettings(_Section):
    # Telegram group chats (ids like -1001234567890) where new cases post their alert card.
    alert_chat_ids: list[int] = []


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Settings(BaseSettings):
    """Everything Waystation reads from config.toml / the environment."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        case_sensitive=False,
    )

    timezone: str = "Asia/Shanghai"
    telegram: TelegramSettings = TelegramSettings()
    database: DatabaseSettings = DatabaseSettings()
    i18n: I18nSettings = I18nSettings()
    geocoding: GeocodingSettings = GeocodingSettings()
    stations: StationsSettings = StationsSettings()
    help: HelpSettings = HelpSettings()
    staff: StaffSettings = StaffSettings()
    logging: LoggingSettings = LoggingSettings()

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError("an IANA time zone name such as Asia/Shanghai") from exc
        return value

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    def require_token(self) -> str:
        """The bot token, or a ConfigError naming the key (the token itself is never shown)."""
        if self.telegram.token is None or not self.telegram.token.get_secret_value().strip():
            raise ConfigError(
                "telegram.token: missing — put the token from @BotFather in config.toml "
                f"or set {ENV_PREFIX}TELEGRAM__TOKEN"
            )
        return self.telegram.token.get_secret_value().strip()


def resolve_config_path(explicit: str | os.PathLike[str] | None) -> Path | None:
    """The file to read, following --config, $WAYSTATION_CONFIG, ./config.toml."""
    if explicit:
        return Path(explicit)
    from_env = os.environ.get(f"{ENV_PREFIX}CONFIG")
    if from_env:
        return Path(from_env)
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.exists() else None


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Read and validate the settings; raise ConfigError with a one-line message on any problem."""
    config_path = resolve_config_path(path)
    if config_path is not None:
        if not config_path.is_file():
            raise ConfigError(f"config file {config_path}: not found")
        try:
            with config_path.open("rb") as fh:
                tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_path}: not valid TOML ({exc})") from None

    class _FileSettings(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if config_path is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=config_path))
            return tuple(sources)

    try:
        loaded = _FileSettings(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
    return loaded


def describe_validation_error(exc: ValidationError) -> str:
    """First problem as ``key.path: expected …`` — never echoing the offending value (it may be a secret)."""
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"]) or "config"
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key (check the spelling against config.example.toml)"
    message = str(error["msg"])
    message = message.removeprefix("Value error, ").removeprefix("Input should be ")
    extra = f" (and {len(exc.errors()) - 1} more problem(s))" if len(exc.errors()) > 1 else ""
    return f"{key}: expected {message[0].lower() + message[1:] if message else 'a valid value'}{extra}"
