"""The FastAPI application the uvicorn integration tests serve (tests/integration/test_uvicorn.py).

Each endpoint reports the event loop it ran on, so a test can tell that uvicorn really used
oxloop: ``loop`` is the top-level package of the running loop's class ('oxloop' or 'asyncio').
"""

from __future__ import annotations

import asyncio
import hashlib
import threading

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import PlainTextResponse, StreamingResponse

app = FastAPI()

CHUNK = b"0123456789abcdef" * 640  # 10 KiB
CHUNKS = 50


def loop_package(loop: asyncio.AbstractEventLoop) -> str:
    return type(loop).__module__.split(".")[0]


@app.get("/async")
async def async_endpoint() -> dict:
    await asyncio.sleep(0)
    return {"kind": "async", "loop": loop_package(asyncio.get_running_loop())}


# A plain def endpoint: Starlette runs it in a worker thread (anyio.to_thread), so no loop
# runs in that thread; the thread differs from the loop's.
@app.get("/sync")
def sync_endpoint() -> dict:
    return {"kind": "sync", "main_thread": threading.current_thread() is threading.main_thread()}


@app.get("/stream")
async def stream_endpoint() -> StreamingResponse:
    async def chunks():
        for _ in range(CHUNKS):
            await asyncio.sleep(0)
            yield CHUNK

    return StreamingResponse(chunks(), media_type="application/octet-stream")


@app.post("/digest")
async def digest_endpoint(request: Request) -> PlainTextResponse:
    return PlainTextResponse(hashlib.sha256(await request.body()).hexdigest())


@app.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(loop_package(asyncio.get_running_loop()))
    try:
        while True:
            message = await websocket.receive_text()
            await websocket.send_text(message.upper())
    except WebSocketDisconnect:
        pass
