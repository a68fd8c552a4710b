"""Internal HTTP: a keep-alive connection the upstream closed under a request is not a 503.

The upstream here is a real HTTP server on loopback that answers one request per connection and
drops the connection when a second request arrives on it (what a server closing an idle
keep-alive connection does at the wrong moment): with a reset (``ReadError`` for the client) or a
plain close (``RemoteProtocolError``). A request safe to send twice is sent again on a new
connection; a sign-in (a POST that is not) is not, and is a 503.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from services.gateway.app import create_app
from services.gateway.sessions.service import SessionTokens
from shared.http import RETRY_SAFE, create_client
from shared.settings import DEV_SESSION_SECRET
from tests.integration.gateway_fixtures import gateway_settings

pytestmark = pytest.mark.integration

MP = "wx0000000000000002"


@dataclass
class OneShotServer:
    """Answers the first request of each connection; drops the connection at the second."""

    reset: bool
    requests: list[str] = field(default_factory=list)
    dropped: int = 0
    url: str = ""
    _server: asyncio.Server | None = None

    async def start(self) -> OneShotServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _read_request(self, reader: asyncio.StreamReader) -> str | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return None
        lines = head.decode("latin-1").split("\r\n")
        length = next(
            (int(v) for k, _, v in (h.partition(": ") for h in lines[1:]) if k.lower() == "content-length"), 0
        )
        if length:
            await reader.readexactly(length)
        return lines[0]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = await self._read_request(reader)
        if first is None:
            writer.close()
            return
        self.requests.append(first)
        member_id = first.split()[1].rsplit("/", 1)[-1]
        body = json.dumps({"member_id": member_id, "unionid_known": True, "identities": [], "follows": []}).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        second = await self._read_request(reader)
        if second is not None:
            self.requests.append(second)
            self.dropped += 1
        sock = writer.get_extra_info("socket")
        if self.reset and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()


@pytest.fixture(params=["reset", "close"])
async def upstream(request: pytest.FixtureRequest) -> AsyncIterator[OneShotServer]:
    server = await OneShotServer(reset=request.param == "reset").start()
    yield server
    await server.stop()


async def test_a_safe_request_on_a_connection_the_server_dropped_is_sent_again(upstream: OneShotServer) -> None:
    async with create_client(upstream.url) as client:
        for i in range(3):
            r = await client.get(f"/internal/members/{i}")
            assert r.status_code == 200
        # POSTs marked safe (a read sent as POST, or de-duplicated upstream) are re-sent too.
        r = await client.post("/internal/replies", json={}, extensions=RETRY_SAFE)
        assert r.status_code == 200
    assert upstream.dropped >= 3, "the pooled connection was reused and dropped each time"


async def test_a_post_that_is_not_safe_to_repeat_is_not_sent_again(upstream: OneShotServer) -> None:
    async with create_client(upstream.url) as client:
        await client.get("/internal/members/1")
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            await client.post("/internal/logins", json={"code": "once"})
    assert [r for r in upstream.requests if r.startswith("POST")] == ["POST /internal/logins HTTP/1.1"]


async def test_me_through_the_gateway_survives_dropped_keep_alive_connections(
    upstream: OneShotServer, clean_databases: dict[str, str], amqp: object, apps_file: Path
) -> None:
    app = create_app(gateway_settings(apps_file, GATEWAY_IDENTITY_URL=upstream.url))
    member_id = uuid.uuid4()
    token = SessionTokens(DEV_SESSION_SECRET, ttl=600).issue(member_id, MP).token
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
            answers = [await client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}) for _ in range(4)]
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    assert upstream.dropped >= 3
