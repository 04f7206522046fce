"""Fixtures: a real `gatehouse serve` process on free ports, clients logged in to it, a database per test.

GATEHOUSE_TEST_DB=postgres runs everything on a throw-away PostgreSQL cluster (one per session,
one database per server and per database unit test); the default is SQLite.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator

import aiohttp
import pytest

from tests import support
from tests.mqtt import Client
from tests.raw import RawSession
from tests.smtp import SmtpSink
from tests.support import Api, Server, mail_env, make_server


def pytest_report_header() -> str:
    return f"database backend: {support.BACKEND}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    support.stop_cluster()


@pytest.fixture
def db_url() -> Iterator[str]:
    """A fresh empty database for one unit test: in-memory SQLite, or a new PostgreSQL database."""
    url = support.new_database_url()
    if url is None:
        yield "sqlite://:memory:"
        return
    yield url
    support.cluster().drop_database(url)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("gatehouse"))
    yield srv
    srv.stop()
    # Every handler bug is logged with a traceback; a run that logged one has a bug somewhere.
    assert "Traceback" not in srv.log(), srv.log()[-5000:]


@pytest.fixture(scope="session")
def anon_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = make_server(tmp_path_factory.mktemp("gatehouse-anon"), GATEHOUSE_BROKER__ALLOW_ANONYMOUS="true")
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-5000:]


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    """A real SMTP server (aiosmtpd) of this test's own, on a free port; `.messages` is what it got."""
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture(scope="session")
def smtpd() -> Iterator[SmtpSink]:
    """The SMTP server `mail_server` delivers to; tests tell their messages apart by recipient."""
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture(scope="session")
def mail_server(tmp_path_factory: pytest.TempPathFactory, smtpd: SmtpSink) -> Iterator[Server]:
    """A server whose mail goes over SMTP to `smtpd` (read activation keys, reset links, codes there)."""
    srv = make_server(tmp_path_factory.mktemp("gatehouse-mail"), **mail_env(smtpd.port))
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()[-5000:]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def alice(server: Server, http: aiohttp.ClientSession) -> Api:
    api = Api(http, server.url)
    await api.login("alice@example.com")
    return api


@pytest.fixture
async def bob(server: Server, http: aiohttp.ClientSession) -> Api:
    api = Api(http, server.url)
    await api.login("bob@example.com")
    return api


@pytest.fixture
async def admin(server: Server, http: aiohttp.ClientSession) -> Api:
    api = Api(http, server.url)
    await api.login("admin@example.com")
    return api


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., Client]]:
    """Make paho clients that are closed at the end of the test, whatever happened."""
    made: list[Client] = []

    def make(client_id: str | None = None, *, clean_session: bool = True, transport: str = "tcp") -> Client:
        made.append(Client(client_id, clean_session=clean_session, transport=transport))
        return made[-1]

    yield make
    for client in made:
        with contextlib.suppress(Exception):
            client.close()


@pytest.fixture
async def raws() -> AsyncIterator[Callable[[], RawSession]]:
    made: list[RawSession] = []

    def make() -> RawSession:
        made.append(RawSession())
        return made[-1]

    yield make
    for raw in made:
        raw.close()
