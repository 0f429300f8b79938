"""Typed settings: config.toml, overridden by WAYSTATION_* environment variables.

Lookup order for the file: ``--config PATH``, then ``$WAYSTATION_CONFIG``, then ``./config.toml``
(a missing default file is fine: defaults and the environment may be enough).
Nested keys in the environment use a double underscore: ``WAYSTATION_TELEGRAM__TOKEN``.
"""

from __future__ import annotations

import itertools
import os
import re
import tomllib
import zoneinfo
from datetime import date
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
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

    @model_validator(mode="after")
    def _webhook_secret(self) -> TelegramSettings:
        # Without the secret anyone who finds the URL could post forged updates (fake users, fake staff taps).
        if self.mode == "webhook" and self.webhook.secret_token is None:
            raise ValueError("webhook.secret_token in webhook mode (requests without it are refused)")
        return self


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


class ReportsSettings(_Section):
    # Anti-abuse: one person may send at most this many reports of someone in the cold per hour.
    max_per_hour: int = Field(3, ge=1, le=100)


EscalationTarget = Literal["group", "on_call", "coordinators", "team", "default_team"]


class EscalationStep(_Section):
    # Minutes after the case came in (with out_of_hours = "wait", time off duty does not count).
    after_minutes: int = Field(gt=0, le=10_080)
    # Who is told: "group" (a reminder in the team's group), "on_call" (the on-call person, directly),
    # "coordinators", "team" (every responder of the team, directly), "default_team" (the card goes there too).
    notify: list[EscalationTarget] = Field(min_length=1)


def _default_chain() -> list[EscalationStep]:
    return [
        EscalationStep(after_minutes=10, notify=["group", "on_call"]),
        EscalationStep(after_minutes=20, notify=["coordinators"]),
        EscalationStep(after_minutes=40, notify=["default_team"]),
    ]


class EscalationSettings(_Section):
    enabled: bool = True
    # The chain of every team that has none of its own (`waystation teams add NAME --escalation JSON`).
    chain: list[EscalationStep] = Field(default_factory=_default_chain)
    # After the last step, repeat it every N minutes until someone claims the case (0: do not repeat).
    repeat_every_minutes: int = Field(30, ge=0, le=10_080)
    # Out of the team's duty hours: "wait" (the chain pauses until duty starts) or "continue".
    out_of_hours: Literal["wait", "continue"] = "wait"
    # A claim with no update for this long: the claimer is reminded; later the case goes back to the queue.
    remind_claimer_after_hours: float = Field(4.0, gt=0)
    release_claim_after_hours: float = Field(8.0, gt=0)
    # How often due escalations are looked for (they are kept in the database, so a restart loses none).
    check_every_seconds: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> EscalationSettings:
        times = [step.after_minutes for step in self.chain]
        if any(later <= earlier for earlier, later in itertools.pairwise(times)):
            raise ValueError("chain steps in increasing after_minutes")
        if self.release_claim_after_hours <= self.remind_claimer_after_hours:
            raise ValueError("release_claim_after_hours later than remind_claimer_after_hours")
        return self


class TeamsSettings(_Section):
    # The team that gets cases with no location or that no team's area covers (its name in `waystation teams list`).
    # Empty (or no such team): those cases go to staff.alert_chat_ids.
    default_team: str = ""
    # One-time invite links (t.me/<bot>?start=invite_…) and group link codes (/linkteam CODE) expire after:
    invite_valid_hours: float = Field(72.0, gt=0, le=720)
    link_code_valid_hours: float = Field(168.0, gt=0, le=720)
    # Local time of the daily check that tells coordinators about a team with nobody on call, or members the bot
    # cannot write to.
    daily_check_at: str = Field("08:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")


def _month_day_or_date(value: str) -> str:
    """ "11-15" (every year) or "2026-11-15" (that date only): checked to be a real day."""
    parts = value.split("-")
    try:
        if len(parts) == 2 and all(len(p) == 2 for p in parts):
            date(2000, int(parts[0]), int(parts[1]))  # a leap year, so "02-29" is accepted
        elif len(parts) == 3:
            date.fromisoformat(value)
        else:
            raise ValueError
    except ValueError:
        raise ValueError('a month-day such as "11-15" or a date such as "2026-11-15"') from None
    return value


class SeasonSettings(_Section):
    # "This season" in /stats and `waystation stats --period season`: from start to end, both included.
    # Month-day ("11-15") repeats every year (the season that started last); a full date ("2026-11-15") is fixed.
    start: str = "11-15"
    end: str = "03-15"
    # Items handed out, counted on resolve and on patrols (stable keys: lower-case letters and "_").
    item_kinds: list[str] = Field(
        default_factory=lambda: ["blanket", "coat", "gloves", "food_box", "hot_drink", "hygiene_kit"],
        min_length=1,
        max_length=12,
    )
    # ISO 4217 code of the money paid as emergency aid (shown in the user's language: ¥200, CN¥200 …).
    currency: str = Field("CNY", pattern=r"^[A-Z]{3}$")

    @field_validator("start", "end")
    @classmethod
    def _day(cls, value: str) -> str:
        return _month_day_or_date(value)

    @field_validator("item_kinds")
    @classmethod
    def _item_keys(cls, value: list[str]) -> list[str]:
        if any(re.fullmatch(r"[a-z_]{1,20}", key) is None for key in value):
            raise ValueError('keys of 1-20 lower-case letters or "_"')
        if len(set(value)) != len(value):
            raise ValueError("distinct item kinds")
        return value

    @model_validator(mode="after")
    def _same_shape(self) -> SeasonSettings:
        if (len(self.start) == 5) != (len(self.end) == 5):
            raise ValueError("start and end both as month-day, or both as full dates")
        if len(self.start) == 10 and self.end < self.start:
            raise ValueError("an end date on or after the start date")
        return self


class PrivacySettings(_Section):
    # Personal data of closed cases (resolved or cancelled) is anonymised this many days after they closed; forms
    # left unfinished and people not seen for this long are deleted too (see models/privacy.py).
    retention_days: int = Field(90, ge=1, le=3650)
    # Local time of the daily retention run.
    purge_at: str = Field("03:30", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class WeatherTriggerSettings(_Section):
    # A cold spell: at least `min_hours` consecutive forecast hours in which any of the set conditions holds
    # (leave a condition out, or set it to nothing, to ignore it).
    min_temperature_c: float | None = Field(-15.0, ge=-80, le=40)
    apparent_temperature_c: float | None = Field(-20.0, ge=-90, le=40)
    snowfall_cm: float | None = Field(None, gt=0, le=100)  # per hour
    min_hours: int = Field(3, ge=1, le=48)
    # Hysteresis: once open, the spell lasts while an hour is within this many degrees of a threshold ...
    hysteresis_c: float = Field(2.0, ge=0, le=20)
    # ... and ends (stand-down) only when this many hours in a row ahead are clear of it.
    clear_hours: int = Field(6, ge=1, le=48)

    @model_validator(mode="after")
    def _something_to_check(self) -> WeatherTriggerSettings:
        if self.min_temperature_c is None and self.apparent_temperature_c is None and self.snowfall_cm is None:
            raise ValueError("at least one of min_temperature_c, apparent_temperature_c or snowfall_cm")
        return self


class WeatherAreaSettings(_Section):
    # A stable short id (used in the database and in buttons): lower-case letters, digits, "-" and "_".
    key: str = Field(pattern=r"^[a-z0-9_-]{1,32}$")
    name: str = Field(min_length=1, max_length=64)
    # The name in other languages, by catalog code: { zh_Hans = "武进区" }.
    names: dict[str, str] = {}
    # The centre (the forecast is fetched there) and/or a polygon of [lat, lon] corners (who lives in the area).
    lat: float | None = Field(None, ge=-90, le=90)
    lon: float | None = Field(None, ge=-180, le=180)
    polygon: list[tuple[float, float]] = []
    # Local time of the area (periods in alerts, quiet hours); empty: the global `timezone`.
    timezone: str | None = None
    # This area's own trigger (else [weather.trigger]).
    trigger: WeatherTriggerSettings | None = None

    @model_validator(mode="after")
    def _where(self) -> WeatherAreaSettings:
        if (self.lat is None) != (self.lon is None):
            raise ValueError("both lat and lon, or neither (then the polygon's centre is used)")
        if self.lat is None and not self.polygon:
            raise ValueError("a centre (lat, lon) or a polygon")
        if self.polygon and len(self.polygon) < 3:
            raise ValueError("a polygon of at least 3 [lat, lon] corners")
        if any(not (-90 <= lat <= 90 and -180 <= lon <= 180) for lat, lon in self.polygon):
            raise ValueError("polygon corners as [lat, lon] in degrees")
        if self.timezone is not None:
            try:
                zoneinfo.ZoneInfo(self.timezone)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
                raise ValueError("an IANA time zone name such as Asia/Shanghai") from exc
        return self


class WeatherSettings(_Section):
    # Forecast provider: "open-meteo" (no key needed) or any server speaking Open-Meteo's /v1/forecast API.
    provider: Literal["open-meteo"] = "open-meteo"
    forecast_url: str = "https://api.open-meteo.com/v1/forecast"
    check_interval_hours: float = Field(3.0, gt=0, le=24)
    forecast_hours: int = Field(48, ge=6, le=168)
    timeout_seconds: float = Field(10.0, gt=0)
    # A failed fetch is retried this many times (waiting retry_backoff_seconds, doubling) before the check gives up.
    retries: int = Field(3, ge=0, le=10)
    retry_backoff_seconds: float = Field(2.0, ge=0, le=300)
    # Coordinators are told when an area's forecast is older than this (the provider keeps failing).
    stale_after_hours: float = Field(12.0, gt=0)
    # "approval": a coordinator approves each alert (Approve / Edit / Dismiss); "auto": sent at once.
    mode: Literal["approval", "auto"] = "approval"
    # Send a stand-down message when the cold spell ends.
    stand_down: bool = True
    trigger: WeatherTriggerSettings = WeatherTriggerSettings()
    areas: list[WeatherAreaSettings] = []
    # A shared location farther than this from every area (and inside none of their polygons) is not covered.
    area_radius_km: float = Field(30.0, gt=0)
    # Chats that get approval cards, delivery reports and stale-forecast notices; empty: every coordinator privately.
    coordinator_chat_ids: list[int] = []
    # Warm stations listed in each subscriber's alert, within this distance of them.
    stations_in_alert: int = Field(3, ge=1, le=5)
    station_radius_km: float = Field(15.0, gt=0)
    # Broadcast messages per second (empty: telegram.overall_max_rate, Telegram's ~30/s for free messages).
    broadcast_rate: float | None = Field(None, gt=0, le=1000)
    # Paid broadcasts (allow_paid_broadcast, 0.1 Telegram Star per message): up to paid_max_rate messages per second.
    paid_broadcast: bool = False
    paid_max_rate: float = Field(1000.0, gt=0, le=1000)
    # How often running broadcasts are checked: their delivery report edited, blocked subscribers deactivated.
    report_interval_seconds: float = Field(5.0, ge=0.05, le=300)

    @model_validator(mode="after")
    def _unique_keys(self) -> WeatherSettings:
        keys = [area.key for area in self.areas]
        if len(keys) != len(set(keys)):
            raise ValueError("areas with distinct keys")
        return self


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
    reports: ReportsSettings = ReportsSettings()
    teams: TeamsSettings = TeamsSettings()
    escalation: EscalationSettings = EscalationSettings()
    weather: WeatherSettings = WeatherSettings()
    season: SeasonSettings = SeasonSettings()
    privacy: PrivacySettings = PrivacySettings()
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
