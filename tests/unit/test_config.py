"""Settings: file lookup order, environment overrides, one-line errors that never show secrets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from bot.config import ConfigError, Settings, load_settings

GOOD = """
timezone = "Asia/Shanghai"
[telegram]
token = "111:FILE-TOKEN"
[database]
url = "sqlite+aiosqlite:///file.db"
"""


def test_defaults_without_file() -> None:
    settings = load_settings()
    assert settings.database.url == "sqlite+aiosqlite:///waystation.db"
    assert settings.telegram.mode == "polling"
    assert settings.i18n.default_language == "en"


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    explicit = tmp_path / "explicit.toml"
    explicit.write_text(GOOD.replace("file.db", "explicit.db"))
    from_env = tmp_path / "env.toml"
    from_env.write_text(GOOD.replace("file.db", "env.db"))
    (tmp_path / "config.toml").write_text(GOOD)
    assert load_settings().database.url.endswith("/file.db")
    monkeypatch.setenv("WAYSTATION_CONFIG", str(from_env))
    assert load_settings().database.url.endswith("/env.db")
    assert load_settings(explicit).database.url.endswith("/explicit.db")


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.toml"
    path.write_text(GOOD)
    monkeypatch.setenv("WAYSTATION_TELEGRAM__TOKEN", "222:ENV-TOKEN")
    monkeypatch.setenv("WAYSTATION_TELEGRAM__WEBHOOK__PORT", "9000")
    settings = load_settings(path)
    assert settings.require_token() == "222:ENV-TOKEN"
    assert settings.telegram.webhook.port == 9000


def test_postgres_url_gets_async_driver() -> None:
    settings = load_settings(None, database={"url": "postgresql://postgres@localhost/test"})
    assert settings.database.url == "postgresql+asyncpg://postgres@localhost/test"


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('[telegram]\nmode = "carrier-pigeon"', "telegram.mode: expected 'polling' or 'webhook'"),
        ('timezone = "Mars/Olympus"', "timezone: expected an IANA time zone name"),
        ("[telegram.webhook]\nport = 70000", "telegram.webhook.port: expected less than or equal to 65535"),
        ('[databse]\nurl = "x"', "databse: unknown key"),
        (
            '[database]\nurl = "mysql://x"',
            "database.url: expected a sqlite+aiosqlite:/// or postgresql+asyncpg://",
        ),
        ('[telegram.webhook]\nsecret_token = "has spaces!"', "telegram.webhook.secret_token: expected 1-256"),
        ("[telegram\n", "not valid TOML"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, toml: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_missing_token_is_one_line_without_the_secret() -> None:
    with pytest.raises(ConfigError, match=r"^telegram\.token: missing"):
        load_settings().require_token()


def test_secret_values_are_not_echoed(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[telegram.webhook]\nsecret_token = "SUPER SECRET VALUE"')
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert "SUPER" not in str(caught.value)


def _cli(*args: str, cwd: Path, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_run_without_token_exits_2_with_one_line(tmp_path: Path) -> None:
    result = _cli("run", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "waystation: telegram.token: missing — put the token from @BotFather in config.toml "
        "or set WAYSTATION_TELEGRAM__TOKEN"
    ]
    assert "Traceback" not in result.stderr


def test_bad_config_file_exits_2(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('[telegram]\ntoken = "1:SECRET"\nmode = "fax"\n')
    result = _cli("run", cwd=tmp_path)
    assert result.returncode == 2
    assert "telegram.mode" in result.stderr and "SECRET" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_db_upgrade_command(tmp_path: Path) -> None:
    result = _cli("db", "upgrade", cwd=tmp_path, env_extra={"WAYSTATION_DATABASE__URL": "sqlite:///cli.db"})
    assert result.returncode == 0, result.stderr
    assert "database schema at revision" in result.stdout
    assert (tmp_path / "cli.db").exists()


def _leaf_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys: list[str] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            keys += _leaf_keys(annotation, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_example_config_is_valid_and_documents_every_key() -> None:
    example = Path(__file__).resolve().parents[2] / "config.example.toml"
    load_settings(example)
    text = example.read_text()
    for key in _leaf_keys(Settings):
        leaf = key.rsplit(".", 1)[-1]
        assert f"\n{leaf} = " in text or f"\n# {leaf} = " in text, f"{key} is not documented in config.example.toml"
