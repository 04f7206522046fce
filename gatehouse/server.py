"""`gatehouse serve`: database, telemetry writer, broker and HTTP on one loop, and a clean stop."""

from __future__ import annotations

import asyncio
import gc
import logging
import secrets
import signal
import ssl
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from broker.server import Broker, Limits, Listener
from broker.transport import tls_context
from gatehouse import certs
from gatehouse.certs import write_private
from gatehouse.settings import ConfigError, Settings
from handlers import iotlock_commands
from handlers.context import Context, GatewayLitePolicy, IotLockPolicy, Links, UserPolicy
from handlers.gateway_lite_import import cancel_jobs, recover_imports
from handlers.mail import SmtpTransport
from handlers.outbox import Backoff, Outbox, Transport
from handlers.ratelimit import Budget, RateLimiter
from handlers.sms import SmsTransport, load_provider
from handlers.telemetry_writer import TelemetryWriter
from http_api.app import build_app
from http_api.state import Door
from models.db import close_db, init_db, ping

log = logging.getLogger("gatehouse")

LINGERING_SECONDS = 2.0


def jwt_secret(settings: Settings) -> str:
    if settings.auth.jwt_secret:
        return settings.auth.jwt_secret
    path = settings.data_dir / "jwt.secret"
    if not path.exists():
        write_private(path, secrets.token_urlsafe(48).encode())
    return path.read_text().strip()


def broker_config(settings: Settings, tls: certs.TlsFiles) -> list[Listener]:
    b = settings.broker
    listeners = []
    if b.mqtt_port:
        listeners.append(Listener("tcp", b.host, b.mqtt_port))
    if b.mqtts_port:
        listeners.append(Listener("tcp", b.host, b.mqtts_port, tls_context(str(tls.certfile), str(tls.keyfile))))
    if b.ws_port:
        listeners.append(Listener("ws", b.host, b.ws_port))
    return listeners


def outbox(settings: Settings) -> Outbox:
    """Mail over SMTP and SMS through a provider where configured; otherwise the outbox and the log."""
    m = settings.mail
    transports: dict[str, Transport] = {}
    if m.smtp_host:
        transports["mail"] = SmtpTransport(
            m.smtp_host, m.smtp_port, m.smtp_username, m.smtp_password, m.starttls, m.tls, m.from_, m.timeout_seconds
        )
    if settings.sms.provider:
        try:
            transports["sms"] = SmsTransport(load_provider(settings.sms.provider, settings.sms.options))
        except (ValueError, TypeError) as exc:
            raise ConfigError(str(exc)) from exc
    backoff = Backoff(m.retry_initial_seconds, m.retry_factor, m.retry_max_seconds)
    return Outbox(transports, backoff, m.poll_seconds)


def limiter(settings: Settings) -> RateLimiter:
    lim = settings.limits
    flows = {"login": lim.login, "two_factor": lim.two_factor, "password_reset": lim.password_reset,
             "activation": lim.activation, "registration": lim.registration,
             "two_factor_send": lim.two_factor_send, "accessory_login": lim.accessory_login,
             "gateway_lite_registration": lim.gateway_lite_registration,
             "gateway_lite_activation": lim.gateway_lite_activation,
             "iotlock_registration": lim.iotlock_registration}  # fmt: skip
    budgets = {name: Budget(flow.per_address, flow.per_account) for name, flow in flows.items()}
    return RateLimiter(budgets, lim.lockout_seconds)


class Gatehouse:
    """The running process: start() brings every part up, stop() takes them down in order."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db: Any = None
        self.writer: TelemetryWriter | None = None
        self.broker: Broker | None = None
        self.runner: web.AppRunner | None = None
        self.tls: certs.TlsFiles | None = None
        self.outbox: Outbox | None = None
        self.ctx: Context | None = None

    async def start(self) -> None:
        s = self.settings
        s.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.tls = certs.ensure(s.certs_dir, s.tls.hostnames, s.tls.certfile, s.tls.keyfile, s.tls.cafile)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        self.db = await init_db(s.database_url)
        self.writer = TelemetryWriter(s.telemetry.batch_max, s.telemetry.batch_delay_ms / 1000)
        self.writer.start()
        self.outbox = outbox(s)
        ctx = Context(
            jwt_secret=jwt_secret(s),
            writer=self.writer,
            links=Links(
                s.public_url,
                s.broker.public_host,
                s.broker.mqtt_port,
                s.broker.mqtts_port,
                s.broker.ws_port,
            ),
            access_token_minutes=s.auth.access_token_minutes,
            refresh_token_days=s.auth.refresh_token_days,
            history_page_max=s.telemetry.history_page_max,
            outbox=self.outbox,
            limiter=limiter(s),
            users=UserPolicy(
                (s.users.portal_url or s.public_url).rstrip("/"),
                s.users.activation_days,
                s.users.email_change_days,
                s.users.password_reset_hours,
                s.users.two_factor_code_minutes,
                s.users.totp_issuer,
            ),
            iotlock=IotLockPolicy(s.iotlock.command_expiry_seconds, s.iotlock.sweep_seconds),
            gateway_lite=GatewayLitePolicy(
                s.gateway_lite.access_domain,
                s.gateway_lite.activation_hours,
                int(s.gateway_lite.import_max_mb * 1024 * 1024),
                s.gateway_lite.import_batch_rows or (500 if s.database_url.startswith("sqlite") else 2000),
            ),
        )
        self.ctx = ctx
        await recover_imports()
        if s.broker.allow_anonymous:
            log.warning(
                "!!! broker.allow_anonymous is ON: anyone can connect without credentials. "
                "Use it for development and conformance tests only. !!!"
            )
        limits = Limits(
            max_packet_size=s.broker.max_packet_size,
            max_queued=s.broker.max_queued_messages,
            max_inflight=s.broker.max_inflight_messages,
            max_inbound=s.broker.max_inbound_messages,
            connect_timeout=s.broker.connect_timeout_seconds,
            keepalive_grace=s.broker.keepalive_grace_seconds,
            session_expiry=s.broker.session_expiry_seconds,
            max_queued_bytes=s.broker.max_queued_bytes,
            max_connections_per_identity=s.broker.max_connections_per_identity,
            max_retained_per_device=s.broker.max_retained_per_device,
            max_retained_bytes_per_device=s.broker.max_retained_bytes_per_device,
        )
        self.broker = Broker(ctx, broker_config(s, self.tls), limits, allow_anonymous=s.broker.allow_anonymous)
        ctx.effector = self.broker
        await self.broker.start(listen=False)
        # IoTLock commands that expired while the server was down leave the session queues before any
        # gateway can connect; then the sweep runs in the background.
        await iotlock_commands.sweep(ctx)
        sweeper = asyncio.get_running_loop().create_task(iotlock_commands.sweep_forever(ctx), name="gatehouse.iotlock")
        ctx.jobs.add(sweeper)
        await self.broker.listen()
        # Pending mail from before a restart goes out now.
        self.outbox.start()
        door = Door(
            s.http.header_timeout_seconds, s.http.body_timeout_seconds, s.http.trusted_proxy_hops, s.http.tls_only
        )
        # aiohttp's keepalive timer runs from the connection's start and from each response, and
        # closes a connection still waiting for a complete request: it bounds header read time.
        # After an answer given before the body was read (401, 408, 413) aiohttp reads and drops the
        # rest for lingering_time (its default 10 s) so the client sees the answer: 2 s is plenty.
        self.runner = web.AppRunner(
            build_app(ctx, self.health, door),
            access_log=None,
            handle_signals=False,
            keepalive_timeout=door.header_timeout,
            lingering_time=LINGERING_SECONDS,
        )
        await self.runner.setup()
        if s.http.port:
            await web.TCPSite(self.runner, s.http.host, s.http.port).start()
        if s.http.https_port:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.tls.certfile, self.tls.keyfile)
            await web.TCPSite(self.runner, s.http.host, s.http.https_port, ssl_context=context).start()

    async def health(self) -> dict[str, Any]:
        broker_ok = self.broker is not None and self.broker.running
        try:
            db_ok = await ping()
        except Exception as exc:
            log.warning("health: database check failed: %s", exc)
            db_ok = False
        return {
            "broker": {
                "status": "ok" if broker_ok else "down",
                "connections": self.broker.connection_count if self.broker else 0,
                "sessions": len(self.broker.sessions) if self.broker else 0,
            },
            "database": {
                "status": "ok" if db_ok else "down",
                **(self.writer.stats() if self.writer else {}),
            },
        }

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()
        if self.ctx is not None:
            await cancel_jobs(self.ctx)
        if self.outbox:
            await self.outbox.stop()
        if self.broker:
            await self.broker.shutdown()
        if self.writer:
            await self.writer.stop()
        if self.db is not None:
            await close_db(self.db)

    def banner(self) -> str:
        s = self.settings
        ports = [
            f"http={s.http.port}",
            f"https={s.http.https_port}",
            f"mqtt={s.broker.mqtt_port}",
            f"mqtts={s.broker.mqtts_port}",
            f"ws={s.broker.ws_port}",
        ]
        ca = self.tls.cafile.resolve() if self.tls and self.tls.cafile else "(configured certificate)"
        return f"gatehouse ready {' '.join(ports)} data_dir={Path(s.data_dir).resolve()} ca={ca}"


async def serve(settings: Settings) -> None:
    app = Gatehouse(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await app.start()
        # Everything built at start-up lives for the whole process: keep it out of the cyclic
        # GC's scans, and collect less often (a broker allocates per packet; most of it is freed
        # by reference counting, so frequent young-generation scans are mostly wasted).
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        # The database runs in aiosqlite's thread, which gives up the GIL for each statement
        # step and then waits for the busy event loop to hand it back: at the default 5 ms
        # switch interval a batch commit takes several times longer than on an idle loop.
        sys.setswitchinterval(0.0005)
        print(app.banner(), flush=True)
        if app.tls and app.tls.cafile:
            print(f"Devices verify the broker with the CA at {app.tls.cafile.resolve()}", flush=True)
        await stop.wait()
        log.info("shutting down")
    finally:
        await app.stop()
        log.info("stopped")
