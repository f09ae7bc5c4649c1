# oxloop: build, demo, test, lint. Each interpreter gets .venv/3.X and target/py3.X.
VERSIONS ?= 3.10 3.11 3.12 3.13
PY ?= 3.11
ENV := scripts/env.sh

.PHONY: demo test test-one conformance lint build clean

build:
	$(ENV) build $(PY) >/dev/null

# The demonstration: the micro benchmark table, then echo servers (Protocol, BufferedProtocol,
# streams, sock_*, over TCP and Unix) driven by one Rust client: oxloop beside asyncio, uvloop,
# rloop and a pure-Rust floor. `benches/net.py` alone runs the fuller network table.
DEMO_NET_ROWS := protocol-1k-10c-tcp,buffered-1k-10c-tcp,streams-1k-10c-tcp,sock-1k-10c-tcp,protocol-1k-10c-unix
demo:
	py=$$($(ENV) build $(PY)) && $$py benches/micro.py \
	  && $$py benches/net.py --rows $(DEMO_NET_ROWS) --rounds 1

# Every test on every interpreter in VERSIONS: pytest, then the conformance runner.
test:
	@set -e; for v in $(VERSIONS); do $(MAKE) --no-print-directory test-one PY=$$v; done

test-one:
	py=$$($(ENV) build $(PY)) && $$py -m pytest -q tests && $$py conformance/run.py

conformance:
	py=$$($(ENV) build $(PY)) && $$py conformance/run.py $(ARGS)

lint:
	cargo fmt --check
	CARGO_TARGET_DIR=target/lint PYO3_PYTHON=$$($(ENV) venv $(PY)) cargo clippy --all-targets -- -D warnings
	py=$$($(ENV) build $(PY)) && $$py -m ruff check python tests conformance benches \
	  && $$py -m ruff format --check python tests conformance benches \
	  && $$py -m mypy.stubtest oxloop._oxloop --allowlist python/oxloop/stubtest-allowlist.txt

clean:
	rm -rf target .venv dist
