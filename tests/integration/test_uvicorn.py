"""uvicorn serving a FastAPI application on oxloop, driven by httpx and websockets.

Two ways in: ``uvicorn --loop oxloop:new_event_loop`` as a subprocess (the recipe of
docs/usage.md), and ``uvicorn.Server`` started inside ``oxloop.run`` (the in-process variant
also runs on stock asyncio, so both loops are held to the same answers). The application
(_fastapi_app.py) has an ``async def`` endpoint, a plain ``def`` endpoint (run in a worker
thread), a streaming response, a request body checked by hash and a websocket; every endpoint
that can says which loop served it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx", reason="see requirements-integration.txt")
uvicorn = pytest.importorskip("uvicorn", reason="see requirements-integration.txt")
pytest.importorskip("fastapi", reason="see requirements-integration.txt")
pytest.importorskip("websockets", reason="see requirements-integration.txt")

import oxloop  # noqa: E402

pytestmark = pytest.mark.timeout(120)
HERE = Path(__file__).parent
BODY = os.urandom(3 * 1024 * 1024)


def check_http(base: str, loop_name: str) -> None:
    """The HTTP endpoints, with a synchronous httpx client (any thread)."""
    import _fastapi_app as appmod

    with httpx.Client(base_url=base, timeout=30) as client:
        assert client.get("/async").json() == {"kind": "async", "loop": loop_name}
        assert client.get("/sync").json() == {"kind": "sync", "main_thread": False}
        with client.stream("GET", "/stream") as r:
            assert r.status_code == 200
            got = b"".join(r.iter_bytes())
        assert got == appmod.CHUNK * appmod.CHUNKS
        r = client.post("/digest", content=BODY)
        assert r.text == hashlib.sha256(BODY).hexdigest()


async def check_http_async(base: str, loop_name: str) -> None:
    import _fastapi_app as appmod

    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        results = await asyncio.gather(*(client.get("/async") for _ in range(10)))
        assert all(r.json() == {"kind": "async", "loop": loop_name} for r in results)
        assert (await client.get("/sync")).json() == {"kind": "sync", "main_thread": False}
        async with client.stream("GET", "/stream") as r:
            got = b"".join([chunk async for chunk in r.aiter_bytes()])
        assert got == appmod.CHUNK * appmod.CHUNKS
        r = await client.post("/digest", content=BODY)
        assert r.text == hashlib.sha256(BODY).hexdigest()


async def check_websocket(url: str, loop_name: str) -> None:
    from websockets.asyncio.client import connect

    async with connect(url) as ws:
        assert await asyncio.wait_for(ws.recv(), 10) == loop_name
        for word in ("hello", "websocket", "x" * 100_000):
            await ws.send(word)
            assert await asyncio.wait_for(ws.recv(), 10) == word.upper()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_uvicorn_command_line_with_oxloop(tmp_path):
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--loop",
            "oxloop:new_event_loop",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--app-dir",
            str(HERE),
            "--no-access-log",
            "--ws",
            "websockets-sansio",
            "_fastapi_app:app",
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    log: list[str] = []
    try:
        # uvicorn logs this line once the socket listens.
        for line in proc.stderr:
            log.append(line)
            if "Uvicorn running on" in line:
                break
        else:
            raise AssertionError("uvicorn exited early:\n" + "".join(log))
        base = f"http://127.0.0.1:{port}"
        check_http(base, "oxloop")
        # The websocket client runs on oxloop too.
        oxloop.run(check_websocket(f"ws://127.0.0.1:{port}/ws", "oxloop"))
    finally:
        proc.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
        try:
            _, rest = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, rest = proc.communicate()
        log.append(rest or "")
    text = "".join(log)
    assert proc.returncode == 0, text
    assert "Finished server process" in text, text
    assert "Traceback" not in text, text


@pytest.mark.parametrize("kind", ["asyncio", "oxloop"])
def test_uvicorn_server_in_process(kind):
    import _fastapi_app as appmod

    async def main():
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            appmod.app, log_level="warning", lifespan="on", ws="websockets-sansio", access_log=False
        )
        server = uvicorn.Server(config)
        task = asyncio.ensure_future(server.serve(sockets=[sock]))
        # uvicorn offers no event for "started"; poll its flag with short sleeps, bounded.
        for _ in range(1000):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        assert server.started, task
        try:
            await check_http_async(f"http://127.0.0.1:{port}", kind)
            # The blocking client from a thread, against the same server.
            await asyncio.to_thread(check_http, f"http://127.0.0.1:{port}", kind)
            await check_websocket(f"ws://127.0.0.1:{port}/ws", kind)
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 30)
        sock.close()

    if kind == "oxloop":
        oxloop.run(main())
    else:
        loop = asyncio.SelectorEventLoop()
        try:
            loop.run_until_complete(main())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()
