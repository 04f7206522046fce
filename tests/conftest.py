"""Fixtures: a real `gatehouse serve` process on free ports, and clients logged in to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from tests.support import Api, Server, make_server


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
