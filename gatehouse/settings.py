"""Configuration: config.yaml, overridden by GATEHOUSE_* environment variables, then CLI flags."""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Any

import yaml
from limits import parse as parse_limit
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
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
    # An idle connection, or one whose request line and headers are not complete this long after
    # it opened (or after its previous response), is closed (aiohttp's keepalive_timeout).
    header_timeout_seconds: float = Field(20, gt=0)
    # A request body not received in full within this many seconds is answered 408.
    body_timeout_seconds: float = Field(30, gt=0)
    # Reverse proxies in front of Gatehouse that append to X-Forwarded-For (0: none; the client
    # address is the socket's peer). Rate limits are per client address, so set this behind a proxy.
    trusted_proxy_hops: int = Field(0, ge=0, le=10)
    # The Hardware API (/v1/) over HTTPS only: the plain port answers its routes 403 `https_required`.
    # Behind trusted proxies, X-Forwarded-Proto of the outermost one says whether the client used TLS.
    tls_only: bool = False

    def base_url(self, public_host: str) -> str:
        """`public_url`, or one made from the HTTP listener (host, else `public_host`, and port)."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = public_host if self.host in ("", "0.0.0.0", "::") else self.host
        if ":" in host:
            host = f"[{host}]"
        if self.port:
            return f"http://{host}" + ("" if self.port == 80 else f":{self.port}")
        return f"https://{host}" + ("" if self.https_port == 443 else f":{self.https_port}")


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


class MailSettings(_Section):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    # Empty: no mail server; each message is kept in the outbox table and written to the log.
    smtp_host: str = ""
    smtp_port: int = Field(587, ge=1, le=65535)
    smtp_username: str = ""
    smtp_password: str = ""
    # None: STARTTLS when the server offers it; true: required; false: never.
    starttls: bool | None = None
    # Implicit TLS from the first byte (port 465) instead of STARTTLS.
    tls: bool = False
    from_: str = Field("Gatehouse <gatehouse@localhost>", alias="from")
    timeout_seconds: float = Field(30, gt=0)
    # A delivery that fails for a reason that may pass (server down, 4xx) is tried again after
    # retry_initial_seconds, then each wait multiplied by retry_factor, at most retry_max_seconds.
    retry_initial_seconds: float = Field(10, gt=0)
    retry_factor: float = Field(2, ge=1)
    retry_max_seconds: float = Field(3600, gt=0)
    # The sender also looks for due messages this often (rows written by other processes).
    poll_seconds: float = Field(30, gt=0)


class SmsSettings(_Section):
    # Empty: each SMS is kept in the outbox table and written to the log. Otherwise
    # "package.module:factory", called with `options`, returning an SmsProvider (handlers/sms.py).
    provider: str = ""
    options: dict[str, Any] = {}


class FlowLimit(_Section):
    """Budgets of one flow, in the `limits` library's notation ("5 per 15 minutes"); "" is none."""

    per_address: str = ""
    per_account: str = ""

    @field_validator("per_address", "per_account")
    @classmethod
    def _parses(cls, value: str) -> str:
        if value:
            try:
                parse_limit(value)
            except ValueError as exc:
                raise ValueError(f"{value!r} is not a rate such as '5 per 15 minutes'") from exc
        return value


class LimitsSettings(_Section):
    # login and two_factor count failed attempts; the other flows count every request.
    login: FlowLimit = FlowLimit(per_address="30 per 10 minutes", per_account="5 per 15 minutes")
    two_factor: FlowLimit = FlowLimit(per_address="30 per 10 minutes", per_account="5 per 15 minutes")
    password_reset: FlowLimit = FlowLimit(per_address="10 per hour", per_account="3 per hour")
    activation: FlowLimit = FlowLimit(per_address="20 per hour", per_account="10 per hour")
    registration: FlowLimit = FlowLimit(per_address="20 per hour", per_account="10 per hour")
    # Accessories' logins (POST /v1/accessory/{mac}/login, and MQTT CONNECTs with a password): failures count.
    accessory_login: FlowLimit = FlowLimit(per_address="30 per 10 minutes", per_account="5 per 15 minutes")
    # Gateway Lite self-registration (per email) and its 6-digit activation tokens: failed activations
    # are counted per address and all together ("account" is the whole flow: see docs/security.md).
    gateway_lite_registration: FlowLimit = FlowLimit(per_address="20 per hour", per_account="3 per hour")
    gateway_lite_activation: FlowLimit = FlowLimit(per_address="20 per hour", per_account="200 per hour")
    # IoTLock self-registration (POST /iotlock/register), per email.
    iotlock_registration: FlowLimit = FlowLimit(per_address="20 per hour", per_account="3 per hour")
    # 2FA codes sent by mail or SMS (setup, login, disable), per account: bounds what one account can send.
    two_factor_send: FlowLimit = FlowLimit(per_account="10 per hour")
    # An account whose per_account budget of failures is spent is refused for this long.
    lockout_seconds: float = Field(900, ge=0)


class UsersSettings(_Section):
    # Where links in mail point (registration, password reset, email change): the web portal.
    # Empty: http.public_url.
    portal_url: str = ""
    activation_days: float = Field(7, gt=0)
    email_change_days: float = Field(7, gt=0)
    password_reset_hours: float = Field(24, gt=0)
    two_factor_code_minutes: float = Field(10, gt=0)
    totp_issuer: str = "Gatehouse"


class GatewayLiteSettings(_Section):
    # access_url of an acquired gateway: "<euid>-<random>.<access_domain>".
    access_domain: str = "p2p.gatehouse.local"
    activation_hours: float = Field(24, gt=0)  # the self-registered user's 6-digit token
    import_max_mb: float = Field(64, gt=0)  # the largest CSV file an import accepts
    # Rows written per transaction (processed_rows moves by it); 0: 500 on SQLite (its one writer is
    # shared with telemetry), 2,000 on PostgreSQL (bench/gateway_lite_import.py measured both).
    import_batch_rows: int = Field(0, ge=0)


class IotLockSettings(_Section):
    command_expiry_seconds: float = Field(86400, gt=0)  # a command's default time to be answered
    sweep_seconds: float = Field(1.0, gt=0)  # how often expired commands are marked and withdrawn


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
    mail: MailSettings = MailSettings()
    sms: SmsSettings = SmsSettings()
    limits: LimitsSettings = LimitsSettings()
    users: UsersSettings = UsersSettings()
    gateway_lite: GatewayLiteSettings = GatewayLiteSettings()
    iotlock: IotLockSettings = IotLockSettings()

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
    def public_url(self) -> str:
        """The base of every URL handed out (claim's ingest_url, links in mail)."""
        return self.http.base_url(self.broker.public_host)

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
