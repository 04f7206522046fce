"""Configuration: config.yaml defaults, GATEHOUSE_* variables over them, CLI flags over both."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gatehouse.settings import DEFAULT_CONFIG, ConfigError, load_settings
from tests.support import gatehouse


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The test run itself must not leak GATEHOUSE_* settings into these tests.
    for name in list(os.environ):
        if name.upper().startswith("GATEHOUSE_"):
            monkeypatch.delenv(name)


def test_defaults_from_config_yaml() -> None:
    s = load_settings()
    assert s.http.port == 8080
    assert s.http.https_port == 8443
    assert s.broker.mqtt_port == 1883
    assert s.broker.allow_anonymous is False
    assert s.auth.access_token_minutes == 15
    assert s.tls.hostnames == ["localhost", "127.0.0.1"]
    assert s.data_dir == Path("./data")
    assert s.database_url.startswith("sqlite://") and "gatehouse.db" in s.database_url


def test_config_file_is_read(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("http:\n  port: 9000\nbroker:\n  public_host: mqtt.example\n")
    s = load_settings(cfg)
    assert s.http.port == 9000
    assert s.broker.public_host == "mqtt.example"
    assert s.http.https_port == 8443  # a key the file leaves out keeps its default
    assert load_settings(DEFAULT_CONFIG).http.port == 8080


def test_env_overrides_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEHOUSE_BROKER__ALLOW_ANONYMOUS", "true")
    monkeypatch.setenv("GATEHOUSE_HTTP__PORT", "9001")
    monkeypatch.setenv("GATEHOUSE_DATABASE__URL", "postgres://u:p@db/gh")
    s = load_settings()
    assert s.broker.allow_anonymous is True
    assert s.http.port == 9001
    assert s.broker.mqtt_port == 1883
    assert s.database_url == "postgres://u:p@db/gh"


def test_env_overrides_given_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("http:\n  port: 9000\n")
    monkeypatch.setenv("GATEHOUSE_HTTP__PORT", "9001")
    assert load_settings(cfg).http.port == 9001


def test_cli_overrides_win_over_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEHOUSE_HTTP__PORT", "9001")
    monkeypatch.setenv("GATEHOUSE_BROKER__MQTT_PORT", "9002")
    s = load_settings(overrides={"http.port": 9100, "data_dir": tmp_path, "broker.mqtts_port": None})
    assert s.http.port == 9100
    assert s.broker.mqtt_port == 9002  # env still applies where no flag was given
    assert s.broker.mqtts_port == 8883  # None means "flag not given"
    assert s.data_dir == tmp_path


def _config_error(**kwargs: object) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(**kwargs)  # type: ignore[arg-type]
    return str(caught.value)


def test_bad_env_value_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEHOUSE_HTTP__PORT", "abc")
    assert "http.port" in _config_error()


def test_out_of_range_value_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEHOUSE_BROKER__MQTT_PORT", "70000")
    assert "broker.mqtt_port" in _config_error()


def test_unknown_key_in_file_names_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("http:\n  prot: 9000\n")
    assert "http.prot" in _config_error(config=cfg)
    cfg.write_text("htp:\n  port: 9000\n")
    assert "htp" in _config_error(config=cfg)


def test_unknown_nested_env_key_names_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEHOUSE_HTTP__PROT", "9000")
    assert "http.prot" in _config_error()


def test_unknown_override_names_the_key() -> None:
    assert "http.prot" in _config_error(overrides={"http.prot": 1})


def test_missing_or_malformed_file(tmp_path: Path) -> None:
    assert "no such config file" in _config_error(config=tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("http: [unclosed\n")
    assert "not valid YAML" in _config_error(config=bad)
    bad.write_text("- a\n- b\n")
    assert "mapping" in _config_error(config=bad)


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    cfg = tmp_path / "empty.yaml"
    cfg.write_text("")
    assert load_settings(cfg).http.port == 8080


def test_serve_with_bad_config_exits_2(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text('http: {port: "x"}\n')
    done = gatehouse("serve", "--config", str(cfg), data_dir=tmp_path / "data", timeout=30)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "http.port" in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_serve_with_bad_env_exits_2(tmp_path: Path) -> None:
    done = gatehouse("serve", data_dir=tmp_path / "data", env={"GATEHOUSE_BROKER__WS_PORT": "nope"}, timeout=30)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "broker.ws_port" in done.stderr


def test_mail_and_limits_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    s = load_settings()
    assert s.mail.smtp_host == "" and s.mail.starttls is None and s.mail.from_.startswith("Gatehouse")
    assert s.limits.login.per_account == "5 per 15 minutes" and s.limits.lockout_seconds == 900
    monkeypatch.setenv("GATEHOUSE_MAIL__SMTP_HOST", "smtp.example.com")
    monkeypatch.setenv("GATEHOUSE_MAIL__FROM", "Ops <ops@example.com>")
    monkeypatch.setenv("GATEHOUSE_MAIL__STARTTLS", "true")
    monkeypatch.setenv("GATEHOUSE_LIMITS__LOGIN__PER_ADDRESS", "")
    s = load_settings()
    assert (s.mail.smtp_host, s.mail.from_, s.mail.starttls) == ("smtp.example.com", "Ops <ops@example.com>", True)
    assert s.limits.login.per_address == "" and s.limits.login.per_account == "5 per 15 minutes"
    monkeypatch.setenv("GATEHOUSE_LIMITS__LOGIN__PER_ACCOUNT", "five a minute")
    with pytest.raises(ConfigError, match=r"limits\.login\.per_account"):
        load_settings()


def test_public_url_is_configured_or_derived_from_the_listener(tmp_path: Path) -> None:
    assert load_settings().public_url == "http://localhost:8080"
    cfg = tmp_path / "c.yaml"
    cfg.write_text("http:\n  host: 10.1.2.3\n  port: 80\n")
    assert load_settings(cfg).public_url == "http://10.1.2.3"
    cfg.write_text("http:\n  port: 0\n  https_port: 443\nbroker:\n  public_host: iot.example\n")
    assert load_settings(cfg).public_url == "https://iot.example"
    cfg.write_text("http:\n  public_url: https://gh.example/base/\n")
    assert load_settings(cfg).public_url == "https://gh.example/base"
