"""Gateway Lites from an import CSV: connect each over MQTT and print the fingerprint lists it is sent.

gatehouse sim gateway-lite --csv gateways.csv --duration 30 [--tls]

The CSV is the one the server imports (`;`-delimited, header `"Product Serial Number";"FW Code";
"Nabto DeviceId";"InstallCode"`). Each row is one gateway: its serial number (euid) is its MQTT
username and its installation code its password. Each subscribes to `devices/<euid>/fingerprints`
(QoS 1), where the server keeps the owner's fingerprints as one retained JSON list. A network client
only, like the other simulators (whose argument helpers and MQTT/TLS endpoints it shares).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import signal
import ssl
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware_sim.esp32 import ACK_TIMEOUT_S, CONNECT_BATCH, KEEPALIVE_S, add_common_arguments, endpoints
from firmware_sim.mqtt import ConnectRefused, MqttClient, MqttError
from firmware_sim.stats import Progress

HEADER = ["Product Serial Number", "FW Code", "Nabto DeviceId", "InstallCode"]
NOT_USED = {"count", "interval", "user", "password", "url"}  # common simulator options this one has no use for


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    for action in parser._actions:  # the gateways come from the CSV and log in with its codes
        if action.dest in NOT_USED:
            action.help = argparse.SUPPRESS
    parser.add_argument("--csv", type=Path, required=True, metavar="FILE", help="Gateway Lite import CSV")


class CsvError(Exception):
    """The CSV is not a Gateway Lite import file."""


@dataclass(frozen=True)
class Gateway:
    euid: str
    install_code: str

    @property
    def topic(self) -> str:
        return f"devices/{self.euid}/fingerprints"


def read_gateways(path: Path) -> list[Gateway]:
    """The gateways in an import CSV, in file order; raises CsvError for anything else."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CsvError(f"cannot read {path}: {exc}") from None
    rows = csv.reader(text.splitlines(), delimiter=";")
    header = next(rows, None)
    if header is None:
        raise CsvError(f"{path} is empty; expected the header {';'.join(map(repr, HEADER))}")
    if [h.strip() for h in header] != HEADER:
        raise CsvError(
            f"{path}: header is {';'.join(header)!r}; expected the ';'-delimited columns "
            + "; ".join(f'"{h}"' for h in HEADER)
        )
    gateways: dict[str, Gateway] = {}
    for line, row in enumerate(rows, start=2):
        if not any(field.strip() for field in row):
            continue
        if len(row) != len(HEADER):
            raise CsvError(f"{path}:{line}: {len(row)} column(s), expected {len(HEADER)}")
        euid, install_code = row[0].strip(), row[3].strip()
        if not euid or not install_code:
            raise CsvError(f"{path}:{line}: empty Product Serial Number or InstallCode")
        if euid in gateways:
            raise CsvError(f"{path}:{line}: Product Serial Number {euid} appears twice")
        gateways[euid] = Gateway(euid, install_code)
    if not gateways:
        raise CsvError(f"{path}: no gateways (only the header)")
    return list(gateways.values())


def describe(euid: str, payload: bytes) -> str:
    """`<euid> holds N fingerprint(s): fp, ...` for a fingerprint-list payload; ValueError if it is not one."""
    entries = json.loads(payload)
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "fingerprint" in e for e in entries):
        raise ValueError("not a JSON list of {id, fingerprint, description}")
    prints = ", ".join(str(e["fingerprint"]) for e in entries)
    return f"{euid} holds {len(entries)} fingerprint(s)" + (f": {prints}" if prints else "")


@dataclass
class Tally:
    connected: int = 0
    refused: int = 0
    failed: int = 0  # network errors, TLS errors, timeouts, a refused subscription
    dropped: int = 0  # connected, then the broker closed the link before the end
    lists: int = 0
    malformed: int = 0


class Station:
    """One gateway's MQTT session: connect, subscribe, print every list until stopped."""

    def __init__(self, gateway: Gateway, args: argparse.Namespace, ssl_ctx: ssl.SSLContext | None, tally: Tally,
                 progress: Progress) -> None:  # fmt: skip
        self.gateway, self.args, self.ssl_ctx, self.tally, self.progress = gateway, args, ssl_ctx, tally, progress
        self.client = MqttClient()
        self.listener: asyncio.Task[None] | None = None
        self.subscribed = False

    def _note(self, text: str, *, stderr: bool = True) -> None:
        if stderr:
            print(f"\n{text}", file=sys.stderr, flush=True)  # off the progress line, like the other simulators
            return
        if self.progress.stream.isatty():
            self.progress.stream.write("\n")  # keep the progress line whole on a terminal
        print(text, flush=True)

    async def connect(self) -> None:
        euid = self.gateway.euid
        try:
            await self.client.connect(
                self.args.mqtt_host, self.args.mqtt_port, client_id=f"{euid}-gwlite", username=euid,
                password=self.gateway.install_code, keepalive=KEEPALIVE_S, ssl=self.ssl_ctx, timeout=ACK_TIMEOUT_S,
            )  # fmt: skip
        except ConnectRefused as exc:
            self.tally.refused += 1
            self._note(f"{euid}: refused at CONNECT (rc={exc.rc})")
            return
        except (OSError, MqttError, TimeoutError) as exc:
            self.tally.failed += 1
            self._note(f"{euid}: cannot connect: {exc!r}")
            return
        self.listener = asyncio.create_task(self._listen())
        try:
            async with asyncio.timeout(ACK_TIMEOUT_S):
                granted = await self.client.subscribe(self.gateway.topic, qos=1)
        except (OSError, MqttError, TimeoutError) as exc:
            granted, problem = None, repr(exc)
        else:
            problem = f"SUBACK {granted:#04x}"
        if granted not in (0, 1):
            self.tally.failed += 1
            self._note(f"{euid}: cannot subscribe to {self.gateway.topic}: {problem}")
            await self.close()
            return
        self.subscribed = True
        self.tally.connected += 1

    async def _listen(self) -> None:
        while True:
            topic, payload = await self.client.messages.get()
            if topic != self.gateway.topic:
                continue
            try:
                line = describe(self.gateway.euid, payload)
            except ValueError as exc:  # json.JSONDecodeError is one
                self.tally.malformed += 1
                self._note(f"{self.gateway.euid}: unreadable fingerprint list ({exc}): {payload[:200]!r}")
                continue
            self.tally.lists += 1
            self._note(line, stderr=False)

    @property
    def live(self) -> bool:
        return self.subscribed and self.client.connected

    async def close(self) -> None:
        if self.listener is not None:
            self.listener.cancel()
        with contextlib.suppress(OSError, MqttError):
            await self.client.disconnect()


async def _report(stations: list[Station], tally: Tally, started: float, progress: Progress) -> None:
    while True:
        progress.update(
            f"gateways {len(stations)} connected {tally.connected} refused {tally.refused} failed {tally.failed} "
            f"online {sum(s.live for s in stations)} lists {tally.lists} ({time.monotonic() - started:,.0f}s)"
        )
        await asyncio.sleep(0.25)


async def _until(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def run(args: argparse.Namespace, settings: Any) -> int:
    if args.duration <= 0:
        print("gatehouse sim: --duration must be positive", file=sys.stderr)
        return 2
    try:
        gateways = read_gateways(args.csv)
    except CsvError as exc:
        print(f"gatehouse sim: bad --csv: {exc}", file=sys.stderr)
        return 2
    _, ssl_ctx = endpoints(args, settings)
    print(f"{len(gateways)} gateway(s) in {args.csv}; connecting over mqtt{' (tls)' if ssl_ctx else ''}",
          file=sys.stderr)  # fmt: skip

    tally = Tally()
    progress = Progress("gateway-lite")
    stations = [Station(g, args, ssl_ctx, tally, progress) for g in gateways]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):  # Ctrl-C ends the run early, with its summary
        loop.add_signal_handler(signal.SIGINT, stop.set)
    started = time.monotonic()
    reporter = asyncio.create_task(_report(stations, tally, started, progress))
    try:
        for lo in range(0, len(stations), CONNECT_BATCH):  # ramp the connect storm
            await asyncio.gather(*(s.connect() for s in stations[lo : lo + CONNECT_BATCH]))
            if stop.is_set():
                break
        await _until(stop, args.duration - (time.monotonic() - started))
        tally.dropped = sum(s.subscribed and not s.client.connected for s in stations)
    finally:
        reporter.cancel()
        progress.close()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(signal.SIGINT)
        await asyncio.gather(*(s.close() for s in stations))

    print(
        f"summary: gateways={len(gateways)} transport=mqtt{'+tls' if ssl_ctx else ''} connected={tally.connected} "
        f"refused={tally.refused} failed={tally.failed} dropped={tally.dropped} lists={tally.lists} "
        f"malformed={tally.malformed} interrupted={'yes' if stop.is_set() else 'no'}"
    )
    return 0 if tally.connected == len(gateways) and not tally.dropped else 1
