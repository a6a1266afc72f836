"""Configuration: defaults, the example file, and one-line errors that name the key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bridge.config import ConfigError, Settings, load_config, parse_config

REPO = Path(__file__).resolve().parent.parent


def test_example_file_shows_every_default() -> None:
    example = load_config(REPO / "config.example.toml")
    defaults = Settings()
    for f in dataclasses.fields(Settings):
        if f.name != "base_dir":
            assert getattr(example, f.name) == getattr(defaults, f.name), f.name
    assert not (example.sms.enabled or example.telegram.enabled or example.email.enabled)


def test_every_key_is_in_the_example() -> None:
    text = (REPO / "config.example.toml").read_text()
    for f in dataclasses.fields(Settings):
        sub = getattr(Settings(), f.name)
        if dataclasses.is_dataclass(sub):
            for key in dataclasses.fields(sub):
                assert f"\n{key.name} =" in text, f"{f.name}.{key.name}"


@pytest.mark.parametrize(
    ("toml", "named"),
    [
        ('[sms]\nform_number = "+4759440000"\n', "sms.form_number"),
        ("[nonsense]\n", "nonsense"),
        ('[http]\nport = "8080"\n', "http.port"),
        ("[sms]\nenabled = 1\n", "sms.enabled"),
        ('[bridge]\ntimezone = "Europe/Atlantis"\n', "bridge.timezone"),
        ('[bridge]\ndatabase_url = "not a url"\n', "bridge.database_url"),
        ('[bridge]\ndatabase_url = "mysql://x@y/z"\n', "bridge.database_url"),
        ('[email]\nsmtp_tls = "ssl"\n', "email.smtp_tls"),
        ('[delivery]\nquiet_hours = "21-07"\n', "delivery.quiet_hours"),
        ('[digests]\nabsence_time = "8:15"\n', "digests.absence_time"),
        ('[privacy]\nsensitive_action = "drop"\n', "privacy.sensitive_action"),
        ("[email]\ntrusted_authserv_ids = [1]\n", "email.trusted_authserv_ids"),
        ('[[webhooks]]\nunit_id = "u"\nurl = "https://x"\n', "webhooks[0].secret_env"),
        ("[[webhooks]]\nbogus = 1\n", "webhooks[0].bogus"),
    ],
)
def test_errors_name_the_key(toml: str, named: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config(toml)
    assert named in str(e.value)
    assert "\n" not in str(e.value)


def test_secrets_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = parse_config('[sms]\nenabled = true\nauth_token_env = "MY_TOKEN"\n')
    monkeypatch.delenv("MY_TOKEN", raising=False)
    with pytest.raises(ConfigError, match=r"sms\.auth_token_env.*MY_TOKEN"):
        settings.require_channel_secrets("sms")
    settings.require_channel_secrets("telegram")  # disabled channels need nothing
    monkeypatch.setenv("MY_TOKEN", "s3cret")
    settings.require_channel_secrets("sms")
    assert settings.secret("sms", "auth_token_env") == "s3cret"


def test_relative_sqlite_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "skolebro.toml"
    path.parent.mkdir()
    path.write_text('[bridge]\ndatabase_url = "sqlite+aiosqlite:///data/bro.db"\n')
    settings = load_config(path)
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path}/conf/data/bro.db"


def test_missing_default_file_means_defaults(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SKOLEBRO_CONFIG", raising=False)
    assert load_config() == Settings()
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
