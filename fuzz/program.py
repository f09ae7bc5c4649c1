"""What the fuzzer calls, and with what: the method tables and the Hypothesis strategies.

A program is a list of steps ``(mode, target, method, kind, args, kwargs)``:
- ``mode``: ``direct`` (the loop idle), ``running`` (from a coroutine on the loop), ``thread``
  (from another thread, the loop idle) or ``thread_running`` (another thread, the loop running);
- ``target``: ``("loop", "self")`` or ``("pool", category, index)``, a transport, server, handle,
  future, socket or protocol an earlier step returned (a step naming an empty pool is skipped);
- ``kind``: ``call``, or ``attr`` for a property (``Server.sockets``);
- ``args`` and ``kwargs`` (a tuple of ``(name, value)``): symbolic values that the worker
  resolves in its own process (``fuzz/worker.py``, ``Env.resolve``): ``("c", constant)``,
  ``("sock", "closed")``, ``("fd", "pipe_r")``, ``("fn", "raise")``...

The method tables come from introspection of asyncio's abstract classes, so a method added to
``AbstractEventLoop`` by a new Python is fuzzed without a change here; arguments are drawn per
parameter name (an ``fd`` gets fds, a ``delay`` numbers), and any parameter may instead get any
value at all. Programs are plain data, so ``repr(program)`` is their reproducer
(``python -m fuzz --replay``).
"""

from __future__ import annotations

import asyncio
import inspect
import math
import signal
from asyncio import base_events, events, transports

from hypothesis import strategies as st

MODES = ("direct",) * 6 + ("running",) * 3 + ("thread",) + ("thread_running",)


def _public(cls) -> dict[str, tuple[str, inspect.Signature | None]]:
    """name -> (kind, signature) of the public methods and properties of cls."""
    out = {}
    for name in dir(cls):
        if name.startswith("_"):
            continue
        attr = inspect.getattr_static(cls, name)
        if isinstance(attr, property):
            out[name] = ("attr", None)
            continue
        if not callable(getattr(cls, name)):
            continue
        try:
            sig = inspect.signature(getattr(cls, name))
        except (TypeError, ValueError):
            sig = None
        out[name] = ("call", sig)
    return out


LOOP_METHODS = _public(asyncio.AbstractEventLoop)
TRANSPORT_METHODS: dict = {}
for _cls in (
    transports.BaseTransport,
    transports.ReadTransport,
    transports.WriteTransport,
    transports.Transport,
    transports.DatagramTransport,
    transports.SubprocessTransport,
):
    TRANSPORT_METHODS.update(_public(_cls))
SERVER_METHODS = _public(base_events.Server)
HANDLE_METHODS = _public(events.TimerHandle)
FUTURE_METHODS = _public(asyncio.Future)

TARGETS = {
    "loop": LOOP_METHODS,
    "transport": TRANSPORT_METHODS,
    "server": SERVER_METHODS,
    "handle": HANDLE_METHODS,
    "future": FUTURE_METHODS,
}

# -- values ------------------------------------------------------------------------------------
NAN = math.nan
INTERESTING_INTS = [
    0,
    1,
    -1,
    2,
    7,
    255,
    1024,
    65535,
    65536,
    2**31 - 1,
    2**31,
    2**32,
    2**63 - 1,
    2**63,
    -(2**63),
    -(2**63) - 1,
    2**64,
    10**30,
    -(10**30),
    10**400,
]
INTERESTING_FLOATS = [0.0, -0.0, NAN, math.inf, -math.inf, 1e-9, 0.001, 0.01, -1.5, 1e300, 1e308]
INTERESTING_STRS = [
    "",
    "x",
    "\x00",
    "127.0.0.1",
    "::1",
    "localhost",
    "0.0.0.0",
    "/nonexistent",
    "é",
]
INTERESTING_BYTES = [b"", b"x", b"\x00" * 10, b"hello\n", b"x" * 70000]


def const(strategy):
    return strategy.map(lambda v: ("c", v))


def tagged(tag, names):
    return st.sampled_from([(tag, n) for n in names])


ints = const(st.one_of(st.sampled_from(INTERESTING_INTS), st.integers(-(2**70), 2**70)))
floats = const(st.one_of(st.sampled_from(INTERESTING_FLOATS), st.floats()))
numbers = st.one_of(ints, floats)
small_ints = const(
    st.one_of(st.sampled_from([0, 1, -1, 2, 16, 1024, 65536, 2**63]), st.integers(-5, 100))
)
texts = const(st.one_of(st.sampled_from(INTERESTING_STRS), st.text(max_size=6)))
blobs = const(st.one_of(st.sampled_from(INTERESTING_BYTES), st.binary(max_size=12)))
bools = const(st.sampled_from([True, False, None, 0, 1]))
socks = tagged(
    "sock",
    [
        "pair_a",
        "pair_b",
        "blocking",
        "listener",
        "tcp",
        "connected",
        "accepted",
        "udp",
        "unix_listener",
        "closed",
        "subclass",
    ],
)
fds = st.one_of(
    tagged("fd", ["pipe_r", "pipe_w", "closed", "file", "pair_a", "listener", "udp"]),
    const(st.sampled_from([-1, -2, 0, 10**6, 2**31, 2**63, 2**64, 10**30])),
    socks,
)
fns = tagged("fn", ["noop", "raise", "stop", "close", "returns", "coro_fn", "print"])
protos = tagged(
    "proto",
    ["proto", "buffered", "datagram", "subprocess", "raising", "factory_raises", "returns_none"],
)
proto_insts = tagged("protoinst", ["proto", "buffered", "datagram", "subprocess"])
coros = tagged("coro", ["value", "raise", "sleep0", "forever", "sock_recv", "sock_accept"])
futs = tagged("fut", ["pending", "done", "cancelled", "exc", "foreign"])
loops = tagged("loop", ["self", "foreign", "closed"])
fileobjs = tagged("fileobj", ["pipe_r", "pipe_w", "file_rb", "file_text", "closed_file"])
buffers = st.one_of(
    st.builds(lambda n: ("buf", n), st.sampled_from([0, 1, 16, 70000])),
    st.builds(lambda n: ("memview", n), st.sampled_from([0, 16])),
    st.builds(lambda n: ("robuf", n), st.sampled_from([0, 16])),
    tagged(
        "weirdbuf", ["strided", "2d", "ints", "released", "bytes_sub", "bytearray_sub", "array"]
    ),
)
pools = st.builds(
    lambda cat, i: ("pool", cat, i),
    st.sampled_from(["transport", "server", "handle", "future", "socket", "protocol"]),
    st.integers(0, 3),
)
misc = st.one_of(
    st.just(("obj",)),
    st.just(("exc",)),
    st.just(("ctx",)),
    tagged("executor", ["live", "shutdown"]),
    tagged("sslctx", ["client", "server"]),
)
hosts = st.one_of(
    const(
        st.sampled_from(["127.0.0.1", "localhost", "::1", None, "", "0.0.0.0", "nohost.invalid"])
    ),
    texts,
)
ports = st.one_of(
    tagged("port", ["listener", "nowhere", "udp"]),
    const(st.sampled_from([0, -1, 65536, None, "80", 2**63])),
)
addrs = st.one_of(
    tagged("addr", ["listener", "udp", "unix", "unix_fresh", "nowhere"]),
    st.builds(lambda h, p: ("tuple", (h, p)), hosts, ports),
    const(
        st.sampled_from(
            [("127.0.0.1",), (), ("127.0.0.1", 0, 0, 0, 0), "/nonexistent/x.sock", None]
        )
    ),
)
sigs = const(
    st.sampled_from(
        [
            signal.SIGUSR1,
            signal.SIGUSR2,
            signal.SIGINT,
            signal.SIGKILL,
            signal.SIGCHLD,
            0,
            -1,
            65,
            2**63,
        ]
    )
)
context_dicts = st.one_of(
    st.just(("dict", (("message", ("c", "m")),))),
    st.just(("dict", (("message", ("c", "m")), ("exception", ("exc",))))),
    st.just(("dict", ())),
)
exes = tagged("exe", ["true", "cat", "python", "missing"])
std_streams = st.one_of(
    tagged("pipeconst", ["PIPE", "DEVNULL", "STDOUT"]),
    const(st.sampled_from([None, -5, 10**6])),
    fds,
)

leaf = st.one_of(
    ints,
    floats,
    texts,
    blobs,
    bools,
    socks,
    fds,
    fns,
    protos,
    coros,
    futs,
    loops,
    fileobjs,
    buffers,
    pools,
    misc,
    addrs,
)
anything = st.one_of(leaf, st.lists(leaf, max_size=3).map(lambda xs: ("list", tuple(xs))))

# Parameter name -> the values that name calls for.
BY_NAME = {
    "fd": fds,
    "sock": socks,
    "callback": fns,
    "func": fns,
    "handler": st.one_of(fns, const(st.just(None))),
    "factory": st.one_of(fns, const(st.just(None))),
    "delay": numbers,
    "when": numbers,
    "timeout": numbers,
    "ssl_handshake_timeout": numbers,
    "ssl_shutdown_timeout": numbers,
    "happy_eyeballs_delay": numbers,
    "protocol_factory": protos,
    "protocol": proto_insts,
    "host": hosts,
    "port": ports,
    "address": addrs,
    "remote_addr": addrs,
    "local_addr": addrs,
    "sockaddr": addrs,
    "path": st.one_of(tagged("addr", ["unix", "unix_fresh"]), texts),
    "nbytes": small_ints,
    "bufsize": small_ints,
    "offset": small_ints,
    "count": st.one_of(small_ints, const(st.just(None))),
    "backlog": small_ints,
    "buf": buffers,
    "data": st.one_of(blobs, buffers),
    "list_of_data": st.lists(blobs, max_size=3).map(lambda xs: ("list", tuple(xs))),
    "future": st.one_of(coros, futs),
    "coro": coros,
    "executor": st.one_of(const(st.just(None)), tagged("executor", ["live", "shutdown"])),
    "enabled": bools,
    "sig": sigs,
    "signal": sigs,
    "pipe": fileobjs,
    "file": fileobjs,
    "transport": st.just(("pool", "transport", 0)),
    "sslcontext": st.one_of(
        tagged("sslctx", ["client", "server"]), const(st.sampled_from([None, True]))
    ),
    "ssl": st.one_of(const(st.sampled_from([None, False, True])), tagged("sslctx", ["client"])),
    "name": st.one_of(
        texts,
        const(st.sampled_from(["peername", "sockname", "socket", "pipe", "subprocess", None])),
    ),
    "context": st.one_of(st.just(("ctx",)), const(st.just(None))),
    "cmd": const(st.sampled_from(["true", "exit 3", "cat", b"true", ""])),
    "stdin": std_streams,
    "stdout": std_streams,
    "stderr": std_streams,
    "high": small_ints,
    "low": small_ints,
    "n": small_ints,
    "msg": texts,
    "result": ints,
    "exception": st.one_of(st.just(("exc",)), const(st.just(None))),
}
BY_METHOD = {
    ("call_exception_handler", "context"): context_dicts,
    ("default_exception_handler", "context"): context_dicts,
    ("subprocess_exec", "args"): st.lists(st.one_of(exes, texts), min_size=1, max_size=2),
}


def param_values(method: str, p: inspect.Parameter):
    named = BY_METHOD.get((method, p.name))
    if named is None:
        named = BY_NAME.get(p.name)
    if named is None:
        return anything
    # Mostly what the name calls for; now and then anything at all (wrong types).
    return st.one_of(named, named, named, anything)


@st.composite
def arguments(draw, method: str, sig: inspect.Signature | None):
    """Positional args and keyword args for one call, following sig where there is one."""
    if sig is None:
        return tuple(draw(st.lists(anything, max_size=2))), ()
    args: list = []
    kwargs: list = []
    positional_open = True
    for p in list(sig.parameters.values())[1:]:  # skip self
        if p.kind is p.VAR_POSITIONAL:
            if positional_open:
                if (method, p.name) in BY_METHOD:
                    args.extend(draw(BY_METHOD[(method, p.name)]))
                else:
                    args.extend(draw(st.lists(anything, max_size=2)))
            continue
        if p.kind is p.VAR_KEYWORD:
            continue
        optional = p.default is not p.empty
        # An optional parameter is passed one time in three; a required one almost always.
        if draw(st.integers(0, 29)) >= (10 if optional else 29):
            if p.kind is not p.KEYWORD_ONLY:
                positional_open = False
            continue
        value = draw(param_values(method, p))
        if p.kind is p.KEYWORD_ONLY or not positional_open:
            kwargs.append((p.name, value))
        else:
            args.append(value)
    return tuple(args), tuple(kwargs)


@st.composite
def generic_step(draw, category: str):
    methods = TARGETS[category]
    method = draw(st.sampled_from(sorted(methods)))
    kind, sig = methods[method]
    args, kwargs = draw(arguments(method, sig)) if kind == "call" else ((), ())
    target = ("loop", "self") if category == "loop" else ("pool", category, draw(st.integers(0, 3)))
    return (draw(st.sampled_from(MODES)), target, method, kind, args, kwargs)


def _loop_call(method, *args, mode="direct", **kwargs):
    return (mode, ("loop", "self"), method, "call", tuple(args), tuple(kwargs.items()))


# Well-formed calls that make the objects later steps call methods of: transports, servers,
# handles. Their arguments are fixed but for a few drawn ones.
PRODUCERS = st.one_of(
    st.builds(
        lambda p, port: _loop_call("create_connection", ("proto", p), ("c", "127.0.0.1"), port),
        st.sampled_from(["proto", "buffered"]),
        st.one_of(st.just(("port", "listener")), ports),
    ),
    st.builds(
        lambda p: _loop_call("create_server", ("proto", p), ("c", "127.0.0.1"), ("c", 0)),
        st.sampled_from(["proto", "buffered", "raising"]),
    ),
    st.builds(
        lambda p: _loop_call("create_unix_server", ("proto", p), ("addr", "unix_fresh")),
        st.sampled_from(["proto", "buffered"]),
    ),
    st.just(_loop_call("create_unix_connection", ("proto", "proto"), ("addr", "unix"))),
    st.builds(
        lambda remote: _loop_call(
            "create_datagram_endpoint",
            ("proto", "datagram"),
            local_addr=("tuple", (("c", "127.0.0.1"), ("c", 0))),
            remote_addr=remote,
        ),
        st.one_of(st.just(("c", None)), st.just(("addr", "udp"))),
    ),
    st.just(_loop_call("connect_read_pipe", ("proto", "proto"), ("fileobj", "pipe_r"))),
    st.just(_loop_call("connect_write_pipe", ("proto", "proto"), ("fileobj", "pipe_w"))),
    st.builds(
        lambda p, s: _loop_call("connect_accepted_socket", ("proto", p), ("sock", s)),
        st.sampled_from(["proto", "buffered"]),
        st.sampled_from(["pair_a", "accepted", "subclass"]),
    ),
    st.builds(
        lambda exe: _loop_call(
            "subprocess_exec",
            ("proto", "subprocess"),
            ("exe", exe),
            stdin=("pipeconst", "PIPE"),
            stdout=("pipeconst", "PIPE"),
            stderr=("pipeconst", "DEVNULL"),
        ),
        st.sampled_from(["true", "cat"]),
    ),
    st.builds(lambda fn: _loop_call("call_soon", ("fn", fn)), st.sampled_from(["noop", "raise"])),
    st.builds(
        lambda d: _loop_call("call_later", ("c", d), ("fn", "noop")),
        st.sampled_from([0, 0.001, 1000]),
    ),
    st.builds(
        lambda c: _loop_call("create_task", ("coro", c)),
        st.sampled_from(["value", "forever", "raise"]),
    ),
    st.just(_loop_call("create_future")),
    st.builds(lambda s: _loop_call("sock_accept", ("sock", s)), st.sampled_from(["listener"])),
    # Registrations and pending operations for later steps to close sockets under.
    st.builds(
        lambda m, s: _loop_call(m, ("sock", s), ("fn", "noop")),
        st.sampled_from(["add_reader", "add_writer"]),
        st.sampled_from(["pair_a", "listener", "udp", "subclass"]),
    ),
    st.builds(
        lambda c: _loop_call("create_task", ("coro", c)),
        st.sampled_from(["sock_recv", "sock_accept", "sock_sendall_big"]),
    ),
)


# What happens to the program's own sockets between calls: a peer sends, shuts down, a socket
# the loop watches is closed or detached under it.
SOCKET_ACTIONS = st.builds(
    lambda name, action: ("direct", ("sock", name)) + action,
    st.sampled_from(["pair_a", "pair_b", "listener", "connected", "accepted", "udp", "subclass"]),
    st.sampled_from(
        [
            ("close", "call", (), ()),
            ("detach", "call", (), ()),
            ("shutdown", "call", (("c", 1),), ()),  # SHUT_WR
            ("send", "call", (("c", b"data"),), ()),
        ]
    ),
)


@st.composite
def step(draw):
    which = draw(st.sampled_from(["loop"] * 4 + ["pool"] * 4 + ["producer"] * 2 + ["socket"]))
    if which == "producer":
        return draw(PRODUCERS)
    if which == "socket":
        return draw(SOCKET_ACTIONS)
    if which == "loop":
        return draw(generic_step("loop"))
    return draw(generic_step(draw(st.sampled_from(["transport", "server", "handle", "future"]))))


@st.composite
def closed_under(draw):
    """A socket closed (or detached) under the loop: while registered, while a sock_* call on it
    waits, or after that call was cancelled; then calls that find the registration."""
    name = draw(st.sampled_from(["pair_a", "listener", "udp", "subclass"]))
    sock = ("sock", name)
    run = _loop_call("run_until_complete", ("coro", "sleep0"))
    how = draw(st.sampled_from(["registered", "pending", "cancelled"]))
    if how == "registered" or name not in ("pair_a", "listener"):
        steps = [
            _loop_call(draw(st.sampled_from(["add_reader", "add_writer"])), sock, ("fn", "noop"))
        ]
    else:
        coro = "sock_recv" if name == "pair_a" else "sock_accept"
        steps = [_loop_call("create_task", ("coro", coro)), run]
        if how == "cancelled":
            steps += [("direct", ("pool", "future", -1), "cancel", "call", (), ()), run]
    steps.append(("direct", sock, draw(st.sampled_from(["close", "detach"])), "call", (), ()))
    after = st.sampled_from(
        [
            _loop_call("remove_reader", sock),
            _loop_call("remove_writer", sock),
            _loop_call("add_reader", sock, ("fn", "noop")),
            _loop_call("add_writer", sock, ("fn", "noop")),
            run,
        ]
    )
    return steps + draw(st.lists(after, min_size=1, max_size=3))


@st.composite
def programs(draw):
    # Objects first (the pools' transports, servers, handles), then calls on them and the loop.
    steps = draw(st.lists(PRODUCERS, min_size=0, max_size=2))
    if draw(st.sampled_from([False] * 4 + [True])):
        steps += draw(closed_under())
    steps += draw(st.lists(step(), min_size=1, max_size=6))
    start = draw(st.sampled_from(["as is"] * 13 + ["closed", "debug"]))
    if start == "closed":
        steps.insert(0, _loop_call("close"))
    elif start == "debug":
        steps.insert(0, _loop_call("set_debug", ("c", True)))  # debug mode's checks
    return tuple(steps)


def render_value(v) -> str:
    tag = v[0]
    if tag == "c":
        r = repr(v[1])
        return r if len(r) <= 40 else r[:37] + "..."
    if tag in ("list", "tuple"):
        inner = ", ".join(render_value(x) for x in v[1])
        return f"[{inner}]" if tag == "list" else f"({inner}{',' if len(v[1]) == 1 else ''})"
    if tag == "dict":
        return "{" + ", ".join(f"{k!r}: {render_value(x)}" for k, x in v[1]) + "}"
    return "<" + " ".join(str(x) for x in v) + ">"


def render_step(s) -> str:
    mode, target, method, kind, args, kwargs = s
    if target[0] == "sock":
        obj = f"<sock {target[1]}>"
    else:
        obj = "loop" if target == ("loop", "self") else f"{target[1]}[{target[2]}]"
    if kind == "attr":
        return f"[{mode}] {obj}.{method}"
    parts = [render_value(a) for a in args] + [f"{k}={render_value(x)}" for k, x in kwargs]
    return f"[{mode}] {obj}.{method}({', '.join(parts)})"


def step_label(s) -> str:
    """The method a step calls, as the report counts it: ``loop.call_at``, ``transport.write``."""
    target = s[1]
    if target[0] == "sock":
        return f"socket({target[1]}).{s[2]}"
    return ("loop" if target[0] == "loop" else target[1]) + "." + s[2]
