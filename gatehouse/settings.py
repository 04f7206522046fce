"""Configuration: config.yaml, overridden by GATEHOUSE_* environment variables, then CLI flags."""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HttpSettings(_Section):
    host: str = "0.0.0.0"
    port: int = Field(8080, ge=0, le=65535)
    https_port: int = Field(8443, ge=0, le=65535)
    public_url: str = ""


class BrokerSettings(_Section):
    host: str = "0.0.0.0"
    mqtt_port: int = Field(1883, ge=0, le=65535)
    mqtts_port: int = Field(8883, ge=0, le=65535)
    ws_port: int = Field(8083, ge=0, le=65535)
    public_host: str = "localhost"
    allow_anonymous: bool = False
    keepalive_grace_seconds: float = Field(0, ge=0)
    max_packet_size: int = Field(256 * 1024, ge=64, le=256 * 1024 * 1024)
    max_queued_messages: int = Field(1000, ge=1)
    max_inflight_messages: int = Field(20, ge=1, le=65535)
    max_inbound_messages: int = Field(100, ge=1)
    session_expiry_seconds: int = Field(7 * 86400, ge=1)
    connect_timeout_seconds: float = Field(10, gt=0)
    max_queued_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    max_connections_per_identity: int = Field(10, ge=1)
    max_retained_per_device: int = Field(100, ge=0)
    max_retained_bytes_per_device: int = Field(1024 * 1024, ge=0)


class DatabaseSettings(_Section):
    url: str = ""


class TlsSettings(_Section):
    certfile: str = ""
    keyfile: str = ""
    cafile: str = ""
    hostnames: list[str] = ["localhost", "127.0.0.1"]


class AuthSettings(_Section):
    jwt_secret: str = ""
    access_token_minutes: float = Field(15, gt=0)
    refresh_token_days: float = Field(30, gt=0)


class TelemetrySettings(_Section):
    batch_max: int = Field(1000, ge=1)
    batch_delay_ms: float = Field(2, ge=0)
    history_page_max: int = Field(1000, ge=1)


_config_path: ContextVar[Path] = ContextVar("gatehouse_config_path", default=DEFAULT_CONFIG)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEHOUSE_", env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    data_dir: Path = Path("./data")
    http: HttpSettings = HttpSettings()
    broker: BrokerSettings = BrokerSettings()
    database: DatabaseSettings = DatabaseSettings()
    tls: TlsSettings = TlsSettings()
    auth: AuthSettings = AuthSettings()
    telemetry: TelemetrySettings = TelemetrySettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Highest first: command-line flags, then GATEHOUSE_* variables, then the YAML file.
        yaml_source = YamlConfigSettingsSource(settings_cls, yaml_file=_config_path.get())
        return (init_settings, env_settings, yaml_source)

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        path = (self.data_dir / "gatehouse.db").resolve()
        return f"sqlite://{path}?synchronous=NORMAL&busy_timeout=5000"

    @property
    def certs_dir(self) -> Path:
        return self.data_dir / "certs"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key."""


def load_settings(config: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Load config.yaml (or `config`), apply GATEHOUSE_* variables, then `overrides` (dotted keys)."""
    path = Path(config) if config else DEFAULT_CONFIG
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    init: dict[str, Any] = {}
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        *parents, leaf = dotted.split(".")
        node = init
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    token = _config_path.set(path)
    try:
        return Settings(**init)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"bad configuration (from {path}, GATEHOUSE_* variables or flags): {problems}") from exc
    finally:
        _config_path.reset(token)
