"""Smoke check of an installed oxloop: run by scripts/wheels.sh inside a fresh venv that holds
only a wheel from dist/ (or a build of the sdist), never from the work tree.

    python smoke.py                 the package: import, oxloop.run, a TCP echo, python -m oxloop
    python smoke.py --extras        also oxloop.prometheus and oxloop.otel (oxloop[prometheus,otel])
                                    and a TLS echo (trustme makes its certificate)

Role: show that what a user gets from ``pip install oxloop`` works on a machine without a Rust
toolchain. Each check raises (non-zero exit) on failure and prints one line when it passes.

Invariants:
- Neither ``cargo`` nor ``rustc`` is on PATH (the driver strips them; checked here), so the
  install that made this venv could not have compiled anything.
- The oxloop imported is the venv's (site-packages under ``sys.prefix``), not the work tree's.
- Without ``--extras`` the optional dependencies are absent: the core needs none of them.
- TLS runs through CPython's own ``ssl`` module (the wheel bundles no OpenSSL; scripts/wheels.sh
  checks the .so), natively on 3.11+ (oxloop._tls.NATIVE) as in a build from source.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys


def check_environment() -> None:
    for tool in ("cargo", "rustc"):
        found = shutil.which(tool)
        assert found is None, f"{tool} is on PATH ({found}): the check needs a PATH without it"
    print("smoke: no cargo or rustc on PATH")


def check_import() -> None:
    import oxloop

    where = os.path.realpath(oxloop.__file__)
    prefix = os.path.realpath(sys.prefix)
    assert where.startswith(prefix + os.sep), f"oxloop imported from {where}, not from {prefix}"
    native = os.path.realpath(oxloop._oxloop.__file__)
    assert native.startswith(prefix + os.sep), f"oxloop._oxloop from {native}"
    print(f"smoke: import oxloop {oxloop.__version__} from {os.path.dirname(where)}")


def check_run() -> None:
    import oxloop

    async def main() -> str:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, oxloop.Loop), type(loop)
        fut = loop.create_future()
        loop.call_soon(fut.set_result, "done")
        return await asyncio.wait_for(fut, 10)

    assert oxloop.run(main()) == "done"
    print("smoke: oxloop.run")


async def _echo_round_trip() -> bytes:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping oxloop\n")
        line = await reader.readline()
        tail = await reader.read()  # EOF once the server closes its side
        writer.close()
        await writer.wait_closed()
    assert tail == b"", tail
    return line


def check_tcp_echo() -> None:
    import oxloop

    line = oxloop.run(asyncio.wait_for(_echo_round_trip(), 30))
    assert line == b"ping oxloop\n", line
    print("smoke: TCP echo")


# What `python -m oxloop -c` runs: the program's own asyncio.run() must get an oxloop loop.
CLI_PROGRAM = """\
import asyncio, sys
async def main():
    return type(asyncio.get_running_loop()).__module__
print(asyncio.run(main()), sys.argv[1:])
"""


def check_cli() -> None:
    import oxloop

    out = subprocess.run(
        [sys.executable, "-m", "oxloop", "--version"], capture_output=True, text=True, check=True
    ).stdout
    assert out.startswith(f"oxloop {oxloop.__version__} "), out
    out = subprocess.run(
        [sys.executable, "-m", "oxloop", "-c", CLI_PROGRAM, "a", "b"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.split()[0].startswith("oxloop"), out
    assert out.rstrip().endswith("['a', 'b']"), out
    print("smoke: python -m oxloop --version, python -m oxloop -c (asyncio.run on oxloop)")


def check_without_extras() -> None:
    for module in ("prometheus_client", "opentelemetry"):
        try:
            __import__(module)
        except ImportError:
            continue
        raise AssertionError(f"{module} is installed without an extra asking for it")
    print("smoke: no optional dependency installed by the bare wheel")


def check_exporters() -> None:
    import oxloop
    import oxloop.otel
    import oxloop.prometheus
    import prometheus_client

    loop = oxloop.new_event_loop()
    try:
        loop.run_until_complete(asyncio.sleep(0))
        registry = prometheus_client.CollectorRegistry()
        oxloop.prometheus.register(loop, name="smoke", registry=registry)
        text = prometheus_client.generate_latest(registry).decode()
        assert 'oxloop_iterations_total{loop="smoke"}' in text, text[:500]
        oxloop.otel.instrument(loop, name="smoke")
        oxloop.otel.uninstrument(loop)
    finally:
        loop.close()
    print("smoke: oxloop.prometheus (a scrape) and oxloop.otel (instrument) with their extras")


async def _tls_round_trip() -> bytes:
    import ssl

    import trustme

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.readline())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    async with server:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
        )
        writer.write(b"ping tls\n")
        line = await reader.readline()
        writer.close()
        await writer.wait_closed()
    return line


def check_tls_echo() -> None:
    import oxloop
    import oxloop._tls

    line = oxloop.run(asyncio.wait_for(_tls_round_trip(), 30))
    assert line == b"ping tls\n", line
    assert oxloop._tls.NATIVE == (sys.version_info >= (3, 11)), oxloop._tls.NATIVE
    print(f"smoke: TLS echo (native TLS path: {oxloop._tls.NATIVE})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extras", action="store_true", help="the exporters and TLS too")
    args = parser.parse_args()
    check_environment()
    check_import()
    check_run()
    check_tcp_echo()
    check_cli()
    if args.extras:
        check_exporters()
        check_tls_echo()
    else:
        check_without_extras()
    print(f"smoke: all passed on Python {sys.version.split()[0]}")


if __name__ == "__main__":
    main()
