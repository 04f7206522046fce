"""`gatehouse sim esp32` against the real server: MQTT, MQTT over TLS and HTTP ingest."""

from __future__ import annotations

import asyncio
import os
import re
import sys

import pytest

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
