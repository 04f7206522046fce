"""A throw-away PostgreSQL cluster: an ordinary process on a free port, in a temp directory.

Used by the tests (GATEHOUSE_TEST_DB=postgres) and by `bench.ingest --db postgres`.
PostgreSQL refuses to run as root: as root, every server binary runs as the `postgres` OS user.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

# Settings for a disposable test cluster: durability across an OS crash is not what the tests
# check (they kill gatehouse, not PostgreSQL), so skip the fsyncs.
FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def bin_dir() -> Path | None:
    """Where initdb, pg_ctl and psql live, or None when PostgreSQL is not installed."""
    installed = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for candidate in (os.environ.get("PG_BINDIR"), _pg_config_bindir(), *installed):
        if candidate and (Path(candidate) / "initdb").exists() and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    return None


def _pg_config_bindir() -> str | None:
    try:
        return subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """initdb + pg_ctl start in a temp directory; `stop()` stops it and deletes the directory."""

    def __init__(self, settings: dict[str, str] | None = None) -> None:
        found = bin_dir()
        if found is None:
            raise RuntimeError("PostgreSQL is not installed (no initdb); apt-get install postgresql")
        self.bin = found
        self.settings = {"max_connections": "300", "shared_buffers": "64MB", **(settings or {})}
        self.root = Path(tempfile.mkdtemp(prefix="gatehouse-pg-"))
        self.data = self.root / "data"
        self.port = 0
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root, stdin=subprocess.DEVNULL
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        return done

    def start(self) -> Cluster:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "-N")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("listen_addresses = '127.0.0.1'\n")
            conf.write(f"unix_socket_directories = '{self.root}'\n")
            for key, value in self.settings.items():
                conf.write(f"{key} = '{value}'\n")
        # Only TCP from 127.0.0.1 (and the socket in our own directory), no password.
        (self.data / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
        for _ in range(3):  # the free port may be taken between the probe and the bind
            self.port = _free_port()
            try:
                self._run(
                    "pg_ctl",
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.root / "server.log"),
                    "-w",
                    "-t",
                    "60",
                    "-o",
                    f"-p {self.port}",
                    "start",
                )
                return self
            except RuntimeError:
                if "could not bind" not in self.log():
                    raise
        raise RuntimeError(f"PostgreSQL did not start:\n{self.log()[-3000:]}")

    def log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def url(self, database: str = "postgres") -> str:
        """The Tortoise/asyncpg URL of one database."""
        return f"postgres://postgres@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        done = subprocess.run(
            [str(self.bin / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
             "-p", str(self.port), "-U", "postgres", "-d", database, "-c", sql],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"psql {sql!r} failed: {done.stderr}")
        return done.stdout

    def create_database(self, prefix: str = "gatehouse") -> str:
        """A new empty database with a unique name; returns its URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
