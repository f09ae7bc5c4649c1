"""aiohttp's server and client together on oxloop (and on stock asyncio, for the same answers),
in plain HTTP and over TLS with a certificate the test makes (trustme, see _net.tls_contexts).

The server is an aiohttp.web application behind AppRunner / SockSite on a socket the test
bound (so the port is known without racing); the client is an aiohttp.ClientSession. Covers a
small response, a multi-megabyte upload and download checked by hash, a streamed response,
concurrent requests on a keep-alive pool, and a websocket.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket

import pytest
from _net import payload, tls_contexts

aiohttp = pytest.importorskip("aiohttp", reason="see requirements-integration.txt")
pytest.importorskip("trustme", reason="see requirements-integration.txt")
from aiohttp import web  # noqa: E402

pytestmark = pytest.mark.timeout(120)
DOWN = payload(4 * 1024 * 1024, seed=50)


def make_app() -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        tls = request.transport.get_extra_info("ssl_object") is not None
        return web.json_response({"loop": type(loop).__module__.split(".")[0], "tls": tls})

    async def digest(request: web.Request) -> web.Response:
        h = hashlib.sha256()
        async for chunk in request.content.iter_chunked(65536):
            h.update(chunk)
        return web.Response(text=h.hexdigest())

    async def download(request: web.Request) -> web.Response:
        return web.Response(body=DOWN)

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for i in range(100):
            await resp.write(b"line %d\n" % i)
        await resp.write_eof()
        return resp

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await sock.send_str(msg.data[::-1])
            elif msg.type == aiohttp.WSMsgType.BINARY:
                await sock.send_bytes(hashlib.sha256(msg.data).digest())
        return sock

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.add_routes(
        [
            web.get("/hello", hello),
            web.post("/digest", digest),
            web.get("/download", download),
            web.get("/stream", stream),
            web.get("/ws", ws),
        ]
    )
    return app


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_aiohttp_server_and_client(loop, loop_kind, run, tls):
    async def main():
        server_ctx, client_ctx = tls_contexts()
        runner = web.AppRunner(make_app())
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        site = web.SockSite(runner, sock, ssl_context=server_ctx if tls else None)
        await site.start()
        scheme = "https" if tls else "http"
        base = f"{scheme}://127.0.0.1:{port}"
        ssl_arg = client_ctx if tls else None
        try:
            connector = aiohttp.TCPConnector(ssl=ssl_arg if tls else False, limit=4)
            async with aiohttp.ClientSession(base, connector=connector) as session:
                async with session.get("/hello") as r:
                    assert r.status == 200
                    assert await r.json() == {"loop": loop_kind, "tls": tls}

                up = payload(5 * 1024 * 1024, seed=51)
                async with session.post("/digest", data=up) as r:
                    assert await r.text() == hashlib.sha256(up).hexdigest()

                async with session.get("/download") as r:
                    body = await r.read()
                assert hashlib.sha256(body).digest() == hashlib.sha256(DOWN).digest()

                async with session.get("/stream") as r:
                    lines = [line async for line in r.content]
                assert lines == [b"line %d\n" % i for i in range(100)]

                async def one(i):
                    async with session.get("/hello") as r:
                        return (await r.json())["loop"]

                # More requests than pooled connections: keep-alive reuse under load.
                assert await asyncio.gather(*(one(i) for i in range(40))) == [loop_kind] * 40

                async with session.ws_connect("/ws") as ws:
                    await ws.send_str("stressed")
                    assert await asyncio.wait_for(ws.receive_str(), 10) == "desserts"
                    blob = payload(1024 * 1024, seed=52)
                    await ws.send_bytes(blob)
                    got = await asyncio.wait_for(ws.receive_bytes(), 10)
                    assert got == hashlib.sha256(blob).digest()
        finally:
            await runner.cleanup()

    run(main())


def test_aiohttp_rejects_an_untrusted_certificate(loop, run):
    async def main():
        server_ctx, _ = tls_contexts()
        runner = web.AppRunner(make_app())
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        site = web.SockSite(runner, sock, ssl_context=server_ctx)
        await site.start()
        try:
            async with aiohttp.ClientSession() as session:
                with pytest.raises(aiohttp.ClientConnectorCertificateError):
                    await session.get(f"https://127.0.0.1:{sock.getsockname()[1]}/hello")
        finally:
            await runner.cleanup()

    run(main())
