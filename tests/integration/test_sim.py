"""`gatehouse sim esp32` against the real server: MQTT, MQTT over TLS and HTTP ingest."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import sys
from pathlib import Path

import pytest

from tests.gateway_lite import csv_bytes, finished, gateway_rows, product, upload
from tests.support import PASSWORD, ROOT, Api, Server


def _summary(stdout: str) -> dict[str, str]:
    line = next(ln for ln in stdout.splitlines() if ln.startswith("summary:"))
    return dict(re.findall(r"(\w+)=(\S+)", line))


@pytest.mark.parametrize("mode", ["mqtt", "tls", "http"])
async def test_sim_esp32(server: Server, alice: Api, mode: str) -> None:
    prefix = f"sim-{mode}"
    flags = {"mqtt": ["--mqtt"], "tls": ["--tls"], "http": ["--http"]}[mode]
    port = server.mqtts_port if mode == "tls" else server.mqtt_port
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gatehouse.cli",
        "sim",
        "esp32",
        "--count",
        "3",
        "--interval",
        "0.2",
        "--duration",
        "1.5",
        "--data-dir",
        str(server.data_dir),
        "--url",
        server.url,
        "--mqtt-port",
        str(port),
        "--prefix",
        prefix,
        *flags,
        env={**os.environ, "GATEHOUSE_SIM_USER": "alice@example.com", "GATEHOUSE_SIM_PASSWORD": PASSWORD},
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    stdout, stderr = out.decode(), err.decode()
    assert proc.returncode == 0, stdout + stderr

    summary = _summary(stdout)
    assert summary["devices"] == "3"
    assert summary["transport"] == {"mqtt": "mqtt", "tls": "mqtt+tls", "http": "http"}[mode]
    sent = int(summary["sent"])
    assert sent > 0
    assert int(summary["acknowledged"]) == sent
    assert summary["rejected"] == "0"
    assert summary["lost"] == "0"

    status, listing = await alice.call("GET", "/gateway/devices")
    assert status == 200
    mine = {d["name"]: d for d in listing["results"] if d["name"].startswith(prefix + "-")}
    assert sorted(mine) == [f"{prefix}-{i}" for i in range(3)]
    total = 0
    for device in mine.values():
        status, hist = await alice.call("GET", f"/gateway/devices/{device['id']}/telemetry?limit=1000")
        assert status == 200, hist
        assert hist["results"], f"no telemetry for {device['name']}"
        assert 200 < hist["results"][0]["payload"]["voltage"] < 260
        assert hist["results"][0]["source"] == ("http" if mode == "http" else "mqtt")
        total += len(hist["results"])
    assert total == sent


async def test_sim_reuses_devices(server: Server, alice: Api) -> None:
    """A second run finds its boards by name and claims them again with fresh keys."""
    env = {**os.environ, "GATEHOUSE_SIM_USER": "alice@example.com", "GATEHOUSE_SIM_PASSWORD": PASSWORD}
    args = ["sim", "esp32", "--count", "2", "--interval", "0.2", "--duration", "0.5", "--prefix", "sim-again"]
    args += ["--data-dir", str(server.data_dir), "--url", server.url, "--mqtt-port", str(server.mqtt_port)]
    for _ in range(2):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gatehouse.cli", *args, env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, out.decode()
    _, listing = await alice.call("GET", "/gateway/devices")
    assert sorted(d["name"] for d in listing["results"] if d["name"].startswith("sim-again-")) == [
        "sim-again-0",
        "sim-again-1",
    ]


async def test_sim_requires_credentials(server: Server) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEHOUSE_SIM_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gatehouse.cli",
        "sim",
        "esp32",
        "--data-dir",
        str(server.data_dir),
        "--url",
        server.url,
        env=env,
        cwd=ROOT,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert b"GATEHOUSE_SIM_USER" in err


@pytest.mark.parametrize("tls", [False, True])
async def test_sim_accessory(server: Server, alice: Api, tls: bool) -> None:
    """Registers by MAC through /v1/, logs each accessory in, publishes with its token as MQTT password."""
    prefix = "02:5e:01" if tls else "02:5e:00"
    port = server.mqtts_port if tls else server.mqtt_port
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gatehouse.cli", "sim", "accessory", "--count", "3", "--interval", "0.2",
        "--duration", "1.5", "--data-dir", str(server.data_dir), "--url", server.url, "--mqtt-port", str(port),
        "--mac-prefix", prefix, *(["--tls"] if tls else []),
        env={**os.environ, "GATEHOUSE_SIM_USER": "alice@example.com", "GATEHOUSE_SIM_PASSWORD": PASSWORD},
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    stdout, stderr = out.decode(), err.decode()
    assert proc.returncode == 0, stdout + stderr
    assert "registered 3/3" in stderr, stderr
    summary = _summary(stdout)
    assert summary["accessories"] == "3" and summary["transport"] == ("mqtt+tls" if tls else "mqtt"), summary
    sent = int(summary["sent"])
    assert sent > 0 and int(summary["acknowledged"]) == sent and summary["lost"] == "0", summary

    status, listing = await alice.call("GET", "/gateway/devices")
    assert status == 200
    mine = [d for d in listing["results"] if d["kind"] == "accessory" and d["username"].startswith(prefix)]
    assert len(mine) == 3, mine
    total = 0
    for device in mine:
        status, record = await alice.call(
            "GET", f"/v1/accessory/{device['username']}", headers={"Accept": "application/json"}
        )
        assert status == 200 and record["hardware_model"] == "Sim Sensor", record
        status, hist = await alice.call("GET", f"/gateway/devices/{device['id']}/telemetry?limit=1000")
        assert status == 200 and hist["results"], hist
        assert 0 <= hist["results"][0]["payload"]["battery_pct"] <= 100
        total += len(hist["results"])
    assert total == sent


@pytest.mark.parametrize("tls", [False, True])
async def test_sim_gateway_lite(server: Server, admin: Api, alice: Api, tmp_path: Path, tls: bool) -> None:
    """Connects every gateway of an import CSV with its installation code and prints the lists it holds."""
    product_id = await product(admin, f"Sim Gateway Lite {'tls' if tls else 'tcp'}")
    rows = gateway_rows(2)
    data = csv_bytes(rows)
    status, rec = await upload(admin, data, product_id)
    assert status == 201, rec
    done = await finished(admin, rec["id"])
    assert done["status"] == "completed", done
    status, held = await alice.call("GET", "/integrations/gateway_lite/fingerprints")
    assert status == 200, held
    for old in held:  # the session server is shared: start alice with none, so the gateway holds exactly ours
        status, body = await alice.call("DELETE", f"/integrations/gateway_lite/fingerprints/{old['id']}")
        assert status == 204, body
    euid = rows[0][0]
    status, acquired = await alice.call("POST", "/integrations/gateway_lite/acquire", {"euid": euid})
    assert status == 200, acquired
    fp = secrets.token_hex(16)
    status, made = await alice.call("POST", "/integrations/gateway_lite/fingerprints", {"fingerprint": fp,
                                                                                     "description": "sim"})  # fmt: skip
    assert status == 201, made
    (tmp_path / "gateways.csv").write_bytes(data)
    try:
        await _run_gateway_lite(server, tmp_path, rows, euid, fp, tls)
    finally:
        await alice.call("DELETE", f"/integrations/gateway_lite/fingerprints/{made['id']}")
        await alice.call("PUT", f"/devices/{acquired['uuid']}/release/")


async def _run_gateway_lite(
    server: Server, tmp_path: Path, rows: list[tuple[str, str, str, str]], euid: str, fp: str, tls: bool
) -> None:

    port = server.mqtts_port if tls else server.mqtt_port
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gatehouse.cli", "sim", "gateway-lite", "--csv", str(tmp_path / "gateways.csv"),
        "--duration", "3", "--data-dir", str(server.data_dir), "--mqtt-port", str(port), *(["--tls"] if tls else []),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    stdout, stderr = out.decode(), err.decode()
    assert proc.returncode == 0, stdout + stderr
    assert f"{euid} holds 1 fingerprint(s): {fp}" in stdout.splitlines(), stdout + stderr
    assert not any(line.startswith(rows[1][0]) for line in stdout.splitlines()), stdout  # not acquired: no list
    summary = _summary(stdout)
    assert summary["gateways"] == summary["connected"] == "2", summary
    assert summary["refused"] == summary["failed"] == summary["dropped"] == "0", summary
    assert summary["transport"] == ("mqtt+tls" if tls else "mqtt") and int(summary["lists"]) >= 1, summary

    bad = tmp_path / "bad.csv"
    bad.write_bytes(csv_bytes(rows, header='"Serial";"FW Code";"Nabto DeviceId";"InstallCode"'))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gatehouse.cli", "sim", "gateway-lite", "--csv", str(bad), "--duration", "1",
        "--data-dir", str(server.data_dir), "--mqtt-port", str(port), *(["--tls"] if tls else []),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2, out.decode() + err.decode()
    assert b"expected the ';'-delimited columns" in err and b"Traceback" not in err, err
