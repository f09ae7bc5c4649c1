"""Seed 002's trio echo server and client, written with asyncio streams (echo/*.py), print the
same on oxloop as on stock asyncio.

Each pair runs twice: ``python echo_server.py`` with ``python echo_client.py``, then both
under ``python -m oxloop``; the server inherits a listening socket the test bound, so no fixed
port is needed and the client can connect at once. Both programs' stdout and exit status
must be identical between the two runs, and equal to the transcript the tutorial implies.
The mixed pairs (an oxloop server with a stock client and the reverse) must print it too.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from _cli import child_env, normalize_stderr

pytestmark = pytest.mark.timeout(120)
HERE = Path(__file__).parent / "echo"
MESSAGE = b"async can sometimes be confusing, but I believe in you!"


def expected(port: int, messages: int) -> tuple[str, str]:
    client = [
        f"parent: connecting to 127.0.0.1:{port}",
        "parent: spawning sender...",
        "parent: spawning receiver...",
        "sender: started!",
        "receiver: started!",
    ]
    server = ["echo_server 0: started"]
    for i in range(messages):
        if i == 0:
            client.insert(4, f"sender: sending {MESSAGE!r}")
        else:
            client.append(f"sender: sending {MESSAGE!r}")
        client.append(f"receiver: got data {MESSAGE!r}")
        server += [
            f"echo_server 0: received data {MESSAGE!r}",
            f"echo_server 0: sending data {MESSAGE!r}",
        ]
    client += ["receiver: got data b''", "receiver: connection closed"]
    server += ["echo_server 0: received data b''", "echo_server 0: connection closed"]
    return "\n".join(server) + "\n", "\n".join(client) + "\n"


def run_pair(server_oxloop: bool, client_oxloop: bool, messages: int = 3):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    env = child_env()
    server_cmd = [sys.executable, *(["-m", "oxloop"] if server_oxloop else [])]
    client_cmd = [sys.executable, *(["-m", "oxloop"] if client_oxloop else [])]
    server = subprocess.Popen(
        [*server_cmd, "echo_server.py", str(listener.fileno()), "1"],
        cwd=HERE,
        env=env,
        pass_fds=[listener.fileno()],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    listener.close()
    try:
        client = subprocess.run(
            [*client_cmd, "echo_client.py", str(port), str(messages)],
            cwd=HERE,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        out, err = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    return port, (server.returncode, out, normalize_stderr(err)), client


def test_echo_programs_same_output_on_both_loops():
    port, plain_server, plain_client = run_pair(False, False)
    want_server, want_client = expected(port, 3)
    assert plain_server == (0, want_server, ""), plain_server
    assert (plain_client.returncode, plain_client.stdout) == (0, want_client), plain_client.stderr

    port, ox_server, ox_client = run_pair(True, True)
    want_server, want_client = expected(port, 3)
    assert ox_server == (0, want_server, ""), ox_server
    assert (ox_client.returncode, ox_client.stdout, ox_client.stderr) == (0, want_client, "")


@pytest.mark.parametrize("server_oxloop", [True, False], ids=["oxloop-server", "oxloop-client"])
def test_echo_programs_mixed_loops(server_oxloop):
    port, server, client = run_pair(server_oxloop, not server_oxloop, messages=5)
    want_server, want_client = expected(port, 5)
    assert server == (0, want_server, ""), server
    assert (client.returncode, client.stdout, client.stderr) == (0, want_client, "")
