# oxloop: build, demo, test, lint. Each interpreter gets .venv/3.X and target/py3.X.
# 3.14 and 3.15 come from the machine, or from the Debian sid chroot `make provision` sets up.
VERSIONS ?= 3.10 3.11 3.12 3.13 3.14 3.15
PY ?= 3.11
# CPython's debug build (Debian's python3.14-dbg: assertions and refcount checks), for test-debug.
DEBUG_PY ?= 3.14d
ENV := scripts/env.sh

.PHONY: wheels wheels-test wheels-ci pgo wheel-pgo demo bench-charts tls-bio test test-one test-debug test-rust sanitize provision conformance lint build clean stress stress-ci fuzz fuzz-ci memcheck memcheck-ci

build:
	$(ENV) build $(PY) >/dev/null

# The demonstration: the micro benchmark table, then echo servers (Protocol, BufferedProtocol,
# streams, sock_*, over TCP and Unix; connection churn) driven by one Rust client: oxloop beside
# asyncio, uvloop, rloop (rsloop when installed) and a pure-Rust floor, then the TLS echo table
# (issue 18; benches/tls_echo.py's client; its floor: Rust over the same OpenSSL), then 256 MiB
# each way through streams between two processes (benches/streams_bulk.py; table only).
# `benches/net.py` alone runs the fuller network table.
# Each table's results (JSON) and chart (PNG, SVG) go to benches/results/ (git-ignored), and
# both tables into one chart there, demo.png: the README's picture (benches/chart.py).
DEMO_NET_ROWS := protocol-1k-10c-tcp,buffered-1k-10c-tcp,streams-1k-10c-tcp,sock-1k-10c-tcp,protocol-1k-10c-unix,churn-protocol-tcp
demo:
	py=$$($(ENV) build $(PY)) && $$py benches/micro.py --json benches/results/micro.json \
	  && $$py benches/net.py --rows $(DEMO_NET_ROWS) --rounds 1 --tls --json benches/results/net.json \
	  && $$py benches/streams_bulk.py --two-process --rounds 1 --total-mib 256 \
	  && $$py benches/chart.py benches/results/micro.json benches/results/net.json \
	    -o benches/results/demo

# The committed charts (README.md, docs/benchmarks.md), refreshed deliberately, never by CI:
# one interleaved round of micro.py, net.py (default rows, then its TLS table: tls.json) and
# children.py on PY, saved with their printed tables in docs/bench/, and the README's picture
# (make demo's rows) drawn from them. About 9 minutes; commit docs/bench/ and update the dates in
# the docs after looking at it.
BENCH_DOCS := docs/bench
bench-charts:
	py=$$($(ENV) build $(PY)) && d=$(BENCH_DOCS) \
	  && $$py benches/micro.py --rounds 1 --json $$d/micro.json >$$d/micro.txt \
	  && $$py benches/net.py --rounds 1 --tls --json $$d/net.json >$$d/net.txt \
	  && $$py benches/children.py --rounds 1 --json $$d/subprocess.json >$$d/subprocess.txt \
	  && cat $$d/micro.txt $$d/net.txt $$d/subprocess.txt \
	  && $$py benches/chart.py $$d/micro.json $$d/net.json --rows $(DEMO_NET_ROWS) -o $$d/demo

# OpenSSL's cost per TLS echo message through memory BIOs (CPython's SSLObject, oxloop's data
# path) against a BIO over caller-owned buffers (issue 18's approach B): benches/tls_bio/, a C
# program (cc, libssl-dev, valgrind), CPU time then instructions; not in CI (~2 min).
tls-bio:
	$(MAKE) -C benches/tls_bio run callgrind

# Binary wheels (scripts/wheels.sh): one per interpreter of VERSIONS (3.14/3.15 built in the sid
# chroot where the machine lacks them) and the sdist, into dist/ (git-ignored). Release profile,
# stripped, linked by zig against glibc 2.17: tagged manylinux_2_17_x86_64, checked by maturin's
# and auditwheel's own checks, and the extension needs only glibc (no OpenSSL, linked or bundled).
# The build tools (maturin, ziglang, auditwheel: requirements-wheels.txt) go in .venv/wheels-tools.
# wheels-test installs each wheel in a fresh venv without cargo/rustc on PATH and runs
# tests/packaging/smoke.py there, then builds the sdist with pip and smokes that; wheels-ci is
# CI's share: the 3.11 wheel and the sdist, built, checked and smoked (~1-3 min).
wheels:
	scripts/wheels.sh all $(VERSIONS)

wheels-test:
	scripts/wheels.sh test

wheels-ci:
	scripts/wheels.sh ci

# Profile-guided builds (scripts/pgo.sh; opt-in, not in CI): oxloop built instrumented, trained on
# benches/micro.py --quick and a streams bulk run, then rebuilt with the profile; `pgo` into
# .venv/$(PY) (as `build` does), `wheel-pgo` as $(PY)'s wheel in dist/ (scripts/wheels.sh's flags
# and checks). 3.11: call_soon ~6 % less CPU than the default wheel, 8 % fewer instructions
# (scripts/pgo.sh has the figures). Native interpreters only; adds rustup's llvm-tools component
# when missing; about 1 min more than a wheel.
pgo:
	scripts/pgo.sh build $(PY) >/dev/null

wheel-pgo:
	scripts/pgo.sh wheel $(PY)

# Every test: the engine's own (test-rust, then under the sanitizers), then on every interpreter
# of VERSIONS found here (natively or in the sid chroot; the others are named and skipped):
# pytest, then the conformance runner; and pytest on the debug build, where there is one.
# The interpreters' runs go TEST_JOBS at a time (scripts/matrix.sh: one log each, printed whole
# when it ends, then a summary; logs in target/test-logs/); TEST_JOBS=1 runs them one by one.
# TEST_EXTRA: more make targets to run as jobs of the same matrix, after the interpreters' (CI
# gives memcheck-ci and wheels-ci, which would otherwise run alone on one of two cores).
TEST_JOBS ?= 2
TEST_EXTRA ?=
test: test-rust sanitize
	@set -e; vs=$$($(ENV) available $(VERSIONS)); d=$$($(ENV) available $(DEBUG_PY)); \
	echo "make test: interpreters: $$vs$${d:+ and $$d}"; \
	MAKE="$(MAKE)" scripts/matrix.sh $(TEST_JOBS) $${d:+test-debug} $$(for v in $$vs; do echo test-one:$$v; done) $(TEST_EXTRA)

# pytest on CPython's debug build: a refcount or assertion error in the extension aborts there.
# Only the oxloop side of the loop fixture's tests (tests/conftest.py `OXLOOP_TEST_LOOPS`): their
# stock asyncio side runs none of the extension's code (oxloop's tools that take a stock loop,
# such as dump_tasks, are Python) and runs on every release build (CI time).
test-debug:
	py=$$($(ENV) build $(DEBUG_PY)) && OXLOOP_TEST_LOOPS=oxloop $$py -m pytest -q tests

# The engine crate (engine/: ready queue, timer heap, fd table, poller, clock, counters) on its
# own: unit, model (property) and multi-thread stress tests; links no libpython (~20 s).
test-rust:
	CARGO_TARGET_DIR=target/engine cargo test -p oxloop-engine

# The engine's tests under AddressSanitizer (all, with LeakSanitizer) and its threaded tests
# under ThreadSanitizer (engine/tests/threads.rs). The stable toolchain ships both runtimes;
# RUSTC_BOOTSTRAP=1 unlocks -Z on it. std is not rebuilt (no rust-src, so no -Zbuild-std):
# TSan needs -Cunsafe-allow-abi-mismatch for the uninstrumented std, and engine/tsan.supp
# silences the false positives that leaves (std's thread packet, libtest's own threads; one
# test thread at a time keeps libtest's threads out of the way).
# Each gets its own target dir; ~1 min the first time, seconds after.
SAN_TARGET ?= x86_64-unknown-linux-gnu
sanitize:
	RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Zsanitizer=address" CARGO_TARGET_DIR=target/asan \
	  cargo test -p oxloop-engine --target $(SAN_TARGET)
	RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Zsanitizer=thread -Cunsafe-allow-abi-mismatch=sanitizer" \
	  TSAN_OPTIONS="halt_on_error=1 suppressions=$(CURDIR)/engine/tsan.supp" CARGO_TARGET_DIR=target/tsan \
	  cargo test -p oxloop-engine --target $(SAN_TARGET) --test threads -- --test-threads=1

# Python 3.14 and 3.15 (with their debug builds and test suites) where the machine lacks them:
# a Debian sid chroot in /opt/oxloop-sid (root; ~2 min the first time, ~1 s after).
provision:
	$(ENV) provision 3.14 3.15

test-one:
	py=$$($(ENV) build $(PY)) && $$py -m pytest -q tests && $$py conformance/run.py

# Load and fault tests (tests/stress/README.md), on oxloop and stock asyncio: the reduced size CI
# runs (40-90 s on 2 cores), and the full size the issue names (about 10 minutes).
# Figures (time, CPU, RSS) are printed at the end; ARGS go to pytest (e.g. ARGS="-k churn").
stress-ci:
	py=$$($(ENV) build $(PY)) && OXLOOP_STRESS=ci $$py -m pytest -q tests/stress $(ARGS)

stress:
	py=$$($(ENV) build $(PY)) && OXLOOP_STRESS=full $$py -m pytest -q tests/stress $(ARGS)

# The differential fuzzer (fuzz/): generated calls on oxloop and stock asyncio, compared.
# `make fuzz` runs FUZZ_SECONDS with a random seed (printed; FUZZ_ARGS="--seed N" repeats it);
# `make fuzz-ci` runs the same fixed-seed programs every time, on FUZZ_CI_VERSIONS (~1 min each).
FUZZ_SECONDS ?= 600
FUZZ_ARGS ?=
FUZZ_CI_VERSIONS ?= 3.11 3.14
fuzz:
	py=$$($(ENV) build $(PY)) && $$py -m fuzz --seconds $(FUZZ_SECONDS) $(FUZZ_ARGS)

fuzz-ci:
	@rc=0; for v in $(FUZZ_CI_VERSIONS); do \
	  py=$$($(ENV) build $$v) && $$py -m fuzz --seed 0 --max-programs 800 --seconds 100 \
	    --out target/fuzz/py$$v || rc=1; done; exit $$rc

conformance:
	py=$$($(ENV) build $(PY)) && $$py conformance/run.py $(ARGS)

lint:
	cargo fmt --all --check
	CARGO_TARGET_DIR=target/lint PYO3_PYTHON=$$($(ENV) venv $(PY)) cargo clippy --workspace --all-targets -- -D warnings
	py=$$($(ENV) build $(PY)) && $$py -m ruff check python tests conformance benches fuzz \
	  && $$py -m ruff format --check python tests conformance benches fuzz \
	  && $$py -m mypy.stubtest oxloop._oxloop --allowlist python/oxloop/stubtest-allowlist.txt

# Memory checks of the native code: the timers, fd watching, transports, sock_*, streams,
# subprocess, pipes, UDP, cross-thread, task, server, TLS, signal and GC tests on oxloop under
# valgrind memcheck (a build with line tables, beside the release one; scripts/memcheck.py). Fails
# on any invalid read or write or use of an uninitialised value, or any definite leak through
# _oxloop. memcheck-ci: CI's subset. ARGS: e.g. --track-origins, or `-- tests/test_tcp.py -k eof`.
MEMCHECK_PY ?= 3.13
memcheck:
	scripts/memcheck.py --python $(MEMCHECK_PY) $(ARGS)

memcheck-ci:
	scripts/memcheck.py --python $(MEMCHECK_PY) --ci $(ARGS)

clean:
	rm -rf target .venv dist
