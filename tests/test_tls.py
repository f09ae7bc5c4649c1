"""TLS on both loops: asyncio.sslproto over the loop's stream transports.

A CA and a certificate for localhost / 127.0.0.1 / ::1 come from ``trustme`` (made once per
process, see ``_net.tls_contexts``). Covers create_connection / create_server with ssl=,
get_extra_info's TLS keys, certificate and hostname failures, the handshake timeout,
start_tls on a plain connection (loop.start_tls and StreamWriter.start_tls), TLS over Unix
sockets, graceful close, loop.sendfile's fallback through a TLS transport, bad arguments, and
multi-megabyte transfers in both directions compared by hash.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys
import tempfile

import pytest
from _net import (
    Echo,
    Recorder,
    Server,
    aoutcome,
    close_all,
    digest,
    payload,
    same_as_stock,
    tls_contexts,
    wait,
)

pytest.importorskip("trustme", reason="trustme is in requirements-dev / integration")
pytestmark = pytest.mark.timeout(60)


async def tls_pair(loop, server_proto=Recorder, **client_kw):
    server_ctx, client_ctx = tls_contexts()
    srv = Server(loop, server_proto)
    srv.server = await loop.create_server(srv.factory, "127.0.0.1", 0, ssl=server_ctx)
    addr = srv.server.sockets[0].getsockname()
    client_kw.setdefault("server_hostname", "localhost")
    _, client = await loop.create_connection(
        lambda: Recorder(loop), *addr, ssl=client_ctx, **client_kw
    )
    peer = await srv.accepted(0)
    return srv, client, peer


def test_echo_and_tls_extra_info(loop, run):
    async def main():
        srv, client, peer = await tls_pair(loop, Echo)
        t = client.transport
        _, client_ctx = tls_contexts()
        assert isinstance(t, asyncio.Transport)
        assert t.get_extra_info("sslcontext") is client_ctx
        sslobj = t.get_extra_info("ssl_object")
        assert isinstance(sslobj, ssl.SSLObject)
        assert sslobj.server_hostname == "localhost"
        cert = t.get_extra_info("peercert")
        assert ("DNS", "localhost") in cert["subjectAltName"]
        cipher = t.get_extra_info("cipher")
        assert isinstance(cipher, tuple) and len(cipher) == 3
        assert cipher == sslobj.cipher()
        assert t.get_extra_info("compression") == sslobj.compression()
        assert isinstance(t.get_extra_info("socket"), asyncio.trsock.TransportSocket)
        assert t.get_extra_info("peername") == srv.server.sockets[0].getsockname()
        assert peer.transport.get_extra_info("peercert") is None  # no client certificate
        assert peer.transport.get_extra_info("sslcontext") is tls_contexts()[0]
        t.write(b"secret")
        assert await client.until(6) == b"secret"
        await close_all(srv, client)
        assert client.events[0] == "made" and client.events[-1] == ("lost", None)

    run(main())


def test_transfers_both_directions(loop, run):
    async def main():
        srv, client, peer = await tls_pair(loop)
        up, down = payload(3 * 1024 * 1024, seed=40), payload(3 * 1024 * 1024, seed=41)
        client.transport.write(up)
        peer.transport.write(down)
        assert digest((await peer.until(len(up)))[: len(up)]) == digest(up)
        assert digest((await client.until(len(down)))[: len(down)]) == digest(down)
        await close_all(srv, client)

    run(main())


def test_close_is_graceful(loop, loop_kind):
    """close() flushes and shuts TLS down: the peer gets every byte, then connection_lost; the
    callbacks the peer sees on the way (eof_received or not) are the running version's."""

    async def scenario(lp):
        srv, client, peer = await tls_pair(lp)
        data = payload(1024 * 1024, seed=42)
        client.transport.write(data)
        client.transport.close()
        assert client.transport.is_closing()
        await wait(peer.lost)
        await wait(client.lost)
        await close_all(srv)
        return digest(peer.data) == digest(data), peer.events, client.events

    intact, peer_events, client_events = same_as_stock(loop, loop_kind, scenario)
    assert intact
    assert peer_events[-1] == client_events[-1] == ("lost", None)


def test_untrusted_certificate_and_wrong_hostname(loop, run):
    async def main():
        server_ctx, client_ctx = tls_contexts()
        errors = []
        loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0, ssl=server_ctx)
        addr = server.sockets[0].getsockname()
        stranger = ssl.create_default_context()
        stranger.load_verify_locations(cadata=_other_ca_pem())
        with pytest.raises(ssl.SSLCertVerificationError):
            await loop.create_connection(
                asyncio.Protocol, *addr, ssl=stranger, server_hostname="localhost"
            )
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            await loop.create_connection(
                asyncio.Protocol, *addr, ssl=client_ctx, server_hostname="example.org"
            )
        assert "Hostname mismatch" in str(info.value) or "hostname" in str(info.value).lower()
        server.close()
        await server.wait_closed()
        # Handshake failures are OSErrors: asyncio logs them at debug level only.
        assert [e for e in errors if not isinstance(e.get("exception"), OSError)] == []

    run(main())


def _other_ca_pem() -> str:
    import trustme

    return trustme.CA().cert_pem.bytes().decode()


def test_handshake_timeout(loop, loop_kind):
    """A server that never answers the handshake: create_connection fails after
    ssl_handshake_timeout with asyncio's exception."""

    async def scenario(lp):
        _, client_ctx = tls_contexts()
        silent = Server(lp, Recorder)
        silent.server = await lp.create_server(silent.factory, "127.0.0.1", 0)
        addr = silent.server.sockets[0].getsockname()
        try:
            await lp.create_connection(
                asyncio.Protocol,
                *addr,
                ssl=client_ctx,
                server_hostname="localhost",
                ssl_handshake_timeout=0.05,
            )
        except Exception as exc:  # noqa: BLE001 - compared with stock below
            result = (type(exc).__name__, "taking longer than" in str(exc))
        else:
            result = ("no error", False)
        await close_all(silent)
        return result

    got = same_as_stock(loop, loop_kind, scenario)
    assert got == ("ConnectionAbortedError", True) or got[0] == "TimeoutError"


def test_start_tls_upgrades_a_plain_connection(loop, run):
    async def main():
        server_ctx, client_ctx = tls_contexts()
        upgraded: asyncio.Future = loop.create_future()

        class StartTLSServer(Recorder):
            def data_received(self, data):
                super().data_received(data)
                if bytes(self.data) == b"STARTTLS\n":
                    self.transport.write(b"GO\n")

                    async def upgrade():
                        tr = await loop.start_tls(
                            self.transport, self, server_ctx, server_side=True
                        )
                        self.transport = tr
                        self.data.clear()
                        upgraded.set_result(tr)

                    asyncio.ensure_future(upgrade())

        srv = Server(loop, StartTLSServer)
        srv.server = await loop.create_server(srv.factory, "127.0.0.1", 0)
        addr = srv.server.sockets[0].getsockname()
        _, client = await loop.create_connection(lambda: Recorder(loop), *addr)
        client.transport.write(b"STARTTLS\n")
        assert await client.until(3) == b"GO\n"
        client.data.clear()
        plain = client.transport
        tls = await wait(loop.start_tls(plain, client, client_ctx, server_hostname="localhost"))
        client.transport = tls
        server_tls = await wait(upgraded)
        assert isinstance(tls.get_extra_info("ssl_object"), ssl.SSLObject)
        assert tls.get_extra_info("peercert") is not None
        assert isinstance(server_tls.get_extra_info("ssl_object"), ssl.SSLObject)
        tls.write(b"encrypted now")
        peer = srv.protocols[0]
        assert await peer.until(13) == b"encrypted now"
        server_tls.write(b"and back")
        assert await client.until(8) == b"and back"
        tls.close()
        await wait(client.lost)
        await wait(peer.lost)
        await close_all(srv)

    run(main())


@pytest.mark.skipif(sys.version_info < (3, 11), reason="StreamWriter.start_tls is new in 3.11")
def test_stream_writer_start_tls(loop, run):
    async def main():
        server_ctx, client_ctx = tls_contexts()

        async def handler(reader, writer):
            assert await reader.readline() == b"STARTTLS\n"
            writer.write(b"GO\n")
            await writer.drain()
            await writer.start_tls(server_ctx)
            line = await reader.readline()
            writer.write(line.upper())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        r, w = await asyncio.open_connection(*server.sockets[0].getsockname())
        w.write(b"STARTTLS\n")
        assert await wait(r.readline()) == b"GO\n"
        await wait(w.start_tls(client_ctx, server_hostname="localhost"))
        assert w.get_extra_info("ssl_object") is not None
        w.write(b"quiet\n")
        assert await wait(r.readline()) == b"QUIET\n"
        w.close()
        await w.wait_closed()
        server.close()
        await server.wait_closed()

    run(main())


def test_tls_over_unix_socket(loop, run):
    async def main():
        import os
        import uuid

        server_ctx, client_ctx = tls_contexts()
        path = f"/tmp/oxl-tls-{uuid.uuid4().hex[:12]}"
        srv = Server(loop, Echo)
        srv.server = await loop.create_unix_server(srv.factory, path, ssl=server_ctx)
        try:
            _, client = await loop.create_unix_connection(
                lambda: Recorder(loop), path, ssl=client_ctx, server_hostname="localhost"
            )
            client.transport.write(b"tls over unix")
            assert await client.until(13) == b"tls over unix"
            await close_all(srv, client)
        finally:
            if os.path.exists(path):
                os.unlink(path)

    run(main())


def test_sendfile_falls_back_through_tls(loop, run):
    async def main():
        srv, client, peer = await tls_pair(loop)
        data = payload(700_000, seed=43)
        with tempfile.TemporaryFile() as f:
            f.write(data)
            f.seek(0)
            assert await wait(loop.sendfile(client.transport, f)) == len(data)
            assert f.tell() == len(data)
            with pytest.raises(RuntimeError, match="fallback is disabled"):
                await loop.sendfile(client.transport, f, 0, fallback=False)
        assert digest(await peer.until(len(data))) == digest(data)
        await close_all(srv, client)

    run(main())


def test_streams_over_tls(loop, run):
    async def main():
        server_ctx, client_ctx = tls_contexts()

        async def handler(reader, writer):
            size = int.from_bytes(await reader.readexactly(8), "big")
            data = await reader.readexactly(size)
            writer.write(digest(data).encode())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=server_ctx)
        r, w = await asyncio.open_connection(
            *server.sockets[0].getsockname(), ssl=client_ctx, server_hostname="localhost"
        )
        # sslproto's transport cannot half-close: a length prefix ends the request instead.
        assert not w.can_write_eof()
        data = payload(2 * 1024 * 1024, seed=44)
        w.write(len(data).to_bytes(8, "big") + data)
        await wait(w.drain())
        assert await wait(r.read()) == digest(data).encode()
        w.close()
        await wait(w.wait_closed())
        server.close()
        await server.wait_closed()

    run(main())


def test_invalid_tls_arguments(loop, loop_kind):
    async def scenario(lp):
        P = asyncio.Protocol
        server_ctx, client_ctx = tls_contexts()
        cases = [
            lp.create_server(P, "127.0.0.1", 0, ssl=True),
            lp.create_server(P, "127.0.0.1", 0, ssl_handshake_timeout=1),
            lp.create_connection(P, "127.0.0.1", 1, server_hostname="localhost"),
            lp.create_unix_connection(P, "/nonexistent", ssl=client_ctx),  # needs a hostname
            lp.start_tls(object(), P(), client_ctx, server_hostname="x"),
        ]
        if sys.version_info >= (3, 11):
            cases.append(lp.create_connection(P, "127.0.0.1", 1, ssl_shutdown_timeout=1))
        return [await aoutcome(c) for c in cases]

    got = same_as_stock(loop, loop_kind, scenario)
    assert got[0] == (TypeError, None)
    assert got[1] == (ValueError, None)
    assert got[2] == (ValueError, None)
    assert got[3] == (ValueError, None)
    assert got[4] == (TypeError, None)
    assert got[5:] in ([], [(ValueError, None)])


@pytest.mark.skipif(sys.version_info < (3, 11), reason="ssl_shutdown_timeout is new in 3.11")
def test_shutdown_timeout_with_a_peer_that_never_answers_close_notify(loop, loop_kind):
    """The peer completes the handshake in a thread and then never reads: close() sends
    close_notify, waits ssl_shutdown_timeout for the answer, then drops the connection."""
    import threading

    async def scenario(lp):
        server_ctx, client_ctx = tls_contexts()
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        release = threading.Event()

        def serve():
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                release.wait(30)  # never reads: close_notify stays unanswered
                del tls

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            _, client = await lp.create_connection(
                lambda: Recorder(lp),
                *listener.getsockname(),
                ssl=client_ctx,
                server_hostname="localhost",
                ssl_shutdown_timeout=0.1,
            )
            client.transport.close()
            exc = await wait(client.lost)
        finally:
            release.set()
            thread.join(10)
            listener.close()
        return type(exc).__name__ if exc is not None else None, client.events[0]

    # sslproto._check_shutdown_timeout force-closes the transport with a TimeoutError.
    assert same_as_stock(loop, loop_kind, scenario) == ("TimeoutError", "made")
