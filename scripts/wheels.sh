#!/usr/bin/env bash
# Binary wheels and the sdist: build into dist/, check them, and install each into a fresh venv
# that has no Rust toolchain. The Makefile's wheels targets call this.
#
#   scripts/wheels.sh all 3.10 ... 3.15   build a wheel per version and the sdist, check each
#   scripts/wheels.sh test                smoke every wheel in dist/ and a build of the sdist
#   scripts/wheels.sh ci                  CI's share: the 3.11 wheel and the sdist, built,
#                                         checked and smoked
#   scripts/wheels.sh check WHEEL...      the tag and link checks alone
#   scripts/wheels.sh smoke WHEEL         the smoke check of one wheel
#   scripts/wheels.sh sdist-smoke 3.X     the sdist built and installed with pip, then smoked
#
# Environment: WHEELS_DIST (default dist) is where wheels go; WHEELS_TARGET_DIR (default
# target/wheels) is the native builds' cargo target dir. scripts/pgo.sh sets both for its builds.
#
# Invariants:
# - Wheels are built with Cargo.toml's release profile (maturin --release, as scripts/env.sh
#   builds for the tests and benchmarks), stripped of symbols, linked by zig against glibc 2.17
#   (maturin --zig --compatibility manylinux2014), so they carry manylinux_2_17_x86_64. maturin's
#   own auditwheel check runs in the build (--auditwheel check: fails, never repairs); then
#   auditwheel show must name that tag, and auditwheel repair --only-plat must graft nothing.
#   No skip flag anywhere.
# - The extension needs only glibc's own libraries: it never links or bundles OpenSSL. TLS goes
#   through CPython's `_ssl` module (src/tls/), whose OpenSSL CPython itself loaded. Checked on
#   each wheel: the .so's NEEDED entries, its undefined symbols, the wheel's file list.
# - 3.10-3.13 are built on this machine (pyenv); 3.14/3.15, where the machine lacks them, inside
#   the Debian sid chroot (scripts/sid.sh) with the same maturin and zig (the work tree and /tmp
#   are mounted at the same paths there). A version that cannot be found is an error.
# - The smoke venvs are fresh, under /tmp, with PATH=venv/bin:/usr/bin:/bin and no CARGO_HOME or
#   RUSTUP_HOME: pip installs the wheel --no-index --only-binary, so nothing is compiled, and
#   tests/packaging/smoke.py checks that cargo and rustc are out of reach.
# - The build tools live in .venv/wheels-tools (requirements-wheels.txt), made on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
TOP=$PWD
TOOLS=.venv/wheels-tools
DIST=${WHEELS_DIST:-dist}
PLAT=manylinux_2_17_x86_64
# glibc's own libraries (the manylinux policies' system libraries): all the .so may need.
ALLOWED_NEEDED="libc.so.6 libm.so.6 libpthread.so.0 libdl.so.2 librt.so.1 libgcc_s.so.1 ld-linux-x86-64.so.2"
CLEAN_PATH=/usr/bin:/bin

log() { echo "wheels: $*" >&2; }
# A wheel's file names (no folder entries), through Python's zipfile (unzip may be missing).
zlist() {
  "$TOOLS/bin/python" -c 'import sys, zipfile
print("\n".join(n for n in zipfile.ZipFile(sys.argv[1]).namelist() if not n.endswith("/")))' "$1"
}
die() { log "$*"; exit 1; }

tools() {
  if [ ! -f "$TOOLS/.ok" ] || [ requirements-wheels.txt -nt "$TOOLS/.ok" ]; then
    local py
    py=$(scripts/env.sh find_native 3.11) || die "python3.11 not found (the build tools' venv)"
    [ -x "$TOOLS/bin/python" ] || "$py" -m venv "$TOOLS"
    "$TOOLS/bin/python" -m pip install -q --disable-pip-version-check -r requirements-wheels.txt
    touch "$TOOLS/.ok"
  fi
  # The zig binary the ziglang package ships: maturin finds it through this variable, in the
  # chroot too (the path is the same there).
  ZIG=$("$TOOLS/bin/python" -c 'import os, ziglang; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))')
  [ -x "$ZIG" ] || die "no zig binary at $ZIG"
}

MATURIN_FLAGS=(build --release --strip --zig --compatibility manylinux2014 --auditwheel check)

# build 3.X ...: one wheel per version into dist/ (an older wheel of that version removed first).
build() {
  tools
  local v py native=() sid=()
  mkdir -p "$DIST"
  for v in "$@"; do
    py=$(scripts/env.sh find_python "$v") || die "python$v not found (make provision for 3.14/3.15)"
    rm -f "$DIST"/oxloop-*-cp"${v/./}"-*.whl
    case $py in
      sid:*) sid+=(-i "${py#sid:}") ;;
      *) native+=(-i "$py") ;;
    esac
  done
  if [ ${#native[@]} -gt 0 ]; then
    CARGO_TARGET_DIR=${WHEELS_TARGET_DIR:-target/wheels} CARGO_ZIGBUILD_ZIG_PATH="$ZIG" \
      "$TOOLS/bin/maturin" "${MATURIN_FLAGS[@]}" "${native[@]}" -o "$DIST"
  fi
  if [ ${#sid[@]} -gt 0 ]; then
    scripts/sid.sh run /usr/bin/env CARGO_TARGET_DIR=target/wheels-sid CARGO_ZIGBUILD_ZIG_PATH="$ZIG" \
      "$TOOLS/bin/maturin" "${MATURIN_FLAGS[@]}" "${sid[@]}" -o "$DIST"
  fi
}

sdist() {
  tools
  mkdir -p "$DIST"
  rm -f "$DIST"/oxloop-*.tar.gz
  "$TOOLS/bin/maturin" sdist -o "$DIST"
  # What was built into the work tree (maturin develop's python/oxloop/_oxloop*.so) stays out.
  if tar -tzf "$DIST"/oxloop-*.tar.gz | grep -E '\.so$'; then die "the sdist holds a binary"; fi
}

# check WHEEL ...: the manylinux tag (auditwheel show, auditwheel repair --only-plat), and that
# the extension needs nothing beyond glibc: no OpenSSL, linked or bundled.
check() {
  tools
  local whl tmp so lib shown size
  for whl in "$@"; do
    case $whl in *"$PLAT"*) ;; *) die "$whl: not tagged $PLAT" ;; esac
    shown=$("$TOOLS/bin/auditwheel" show "$whl" | tr -s '\n ' '  ')
    case $shown in
      *"consistent with the following platform tag: \"$PLAT\""*) ;;
      *) die "$whl: auditwheel show: $shown" ;;
    esac
    tmp=$(mktemp -d)
    # repair grafts any library outside the policy into the wheel: there must be none.
    PATH="$TOP/$TOOLS/bin:$PATH" "$TOOLS/bin/auditwheel" repair --only-plat --plat "$PLAT" \
      -w "$tmp/repaired" "$whl" 2>"$tmp/repair.log" || { cat "$tmp/repair.log" >&2; die "$whl: auditwheel repair failed"; }
    diff <(zlist "$whl" | sort) <(zlist "$tmp"/repaired/*.whl | sort) \
      || die "$whl: auditwheel repair grafted the files above"
    if zlist "$whl" | grep -i -E 'ssl|crypto|\.libs/'; then die "$whl: bundles the files above"; fi
    "$TOOLS/bin/python" -m zipfile -e "$whl" "$tmp/x"
    so=$(find "$tmp/x" -name '_oxloop*.so')
    [ "$(find "$tmp/x" -name '*.so*' | wc -l)" = 1 ] || die "$whl: more than one shared object"
    for lib in $(readelf -d "$so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
      case " $ALLOWED_NEEDED " in *" $lib "*) ;; *) die "$whl: the extension needs $lib" ;; esac
    done
    if nm -D --undefined-only "$so" | grep -E ' (SSL|EVP|OPENSSL|CRYPTO|BIO|X509)_'; then
      die "$whl: the extension calls OpenSSL directly (above)"
    fi
    size=$(stat -c %s "$whl")
    printf 'wheels: ok %s  %d KiB (.so %d KiB; needs %s)\n' "$(basename "$whl")" $((size / 1024)) \
      $(($(stat -c %s "$so") / 1024)) "$(readelf -d "$so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')"
    rm -rf "$tmp"
  done
}

# in_venv_of 3.X DIR CMD...: run CMD in DIR with the clean PATH (DIR/venv/bin first), on this
# machine or in the chroot, as the version's interpreter lives.
in_env() {
  local v=$1 dir=$2
  shift 2
  local py
  py=$(scripts/env.sh find_python "$v") || die "python$v not found"
  case $py in
    sid:*) (cd "$dir" && "$TOP/scripts/sid.sh" run /usr/bin/env -u CARGO_HOME -u RUSTUP_HOME \
      -u VIRTUAL_ENV -u PYTHONPATH PATH="$dir/venv/bin:$CLEAN_PATH" "$@") ;;
    *) (cd "$dir" && env -u CARGO_HOME -u RUSTUP_HOME -u VIRTUAL_ENV -u PYTHONPATH \
      PATH="$dir/venv/bin:$CLEAN_PATH" "$@") ;;
  esac
}

# fresh_venv 3.X: a new venv under /tmp for that version; prints its folder.
fresh_venv() {
  local v=$1 py dir
  py=$(scripts/env.sh find_python "$v") || die "python$v not found"
  dir=$(mktemp -d /tmp/oxloop-smoke.XXXXXX)
  cp tests/packaging/smoke.py "$dir/"
  in_env "$v" "$dir" "${py#sid:}" -m venv "$dir/venv" >&2
  echo "$dir"
}

smoke() {
  local whl=$1 tag v dir
  whl=$(realpath "$whl")
  tag=$(basename "$whl" | cut -d- -f3)       # cp311
  v="3.${tag#cp3}"
  log "smoke: $(basename "$whl") on python$v"
  dir=$(fresh_venv "$v")
  in_env "$v" "$dir" python -m pip install -q --disable-pip-version-check --no-index \
    --only-binary :all: "$whl"
  in_env "$v" "$dir" python smoke.py
  # The extras, and trustme for the TLS echo's certificate, from PyPI as wheels only.
  in_env "$v" "$dir" python -m pip install -q --disable-pip-version-check --only-binary :all: \
    "$whl[prometheus,otel]" trustme
  in_env "$v" "$dir" python smoke.py --extras
  rm -rf "$dir"
}

# sdist-smoke 3.X: pip builds the sdist (with the machine's Rust toolchain, maturin fetched by
# pip's build isolation), then the smoke check runs without the toolchain.
sdist_smoke() {
  local v=$1 py dir sd
  sd=$(realpath "$DIST"/oxloop-*.tar.gz)
  py=$(scripts/env.sh find_python "$v") || die "python$v not found"
  case $py in sid:*) die "sdist-smoke: a native interpreter, please" ;; esac
  log "sdist-smoke: $(basename "$sd") on python$v"
  dir=$(fresh_venv "$v")
  (cd "$dir" && env -u VIRTUAL_ENV -u CARGO_TARGET_DIR venv/bin/python -m pip install -q --no-cache-dir \
    --disable-pip-version-check "$sd")
  in_env "$v" "$dir" python smoke.py
  rm -rf "$dir"
}

timed() { # timed LABEL CMD...: run, then say how long it took
  local label=$1 t0
  shift
  t0=$(date +%s)
  "$@"
  log "$label took $(($(date +%s) - t0)) s"
}

all() {
  local t0
  t0=$(date +%s)
  timed "building $# wheels" build "$@"
  timed "the sdist" sdist
  local v whls=()
  for v in "$@"; do whls+=("$DIST"/oxloop-*-cp"${v/./}"-*.whl); done
  check "${whls[@]}"
  ls -l "$DIST"/oxloop-*.tar.gz >&2
  log "make wheels took $(($(date +%s) - t0)) s"
}

test_all() {
  local whl n=0
  for whl in "$DIST"/oxloop-*.whl; do
    [ -e "$whl" ] || die "no wheel in $DIST: make wheels first"
    timed "smoke $(basename "$whl")" smoke "$whl"
    n=$((n + 1))
  done
  timed "sdist-smoke" sdist_smoke 3.11
  log "$n wheels and the sdist passed"
}

ci() {
  local t0
  t0=$(date +%s)
  timed "tools" tools
  timed "the 3.11 wheel" build 3.11
  timed "the sdist" sdist
  check "$DIST"/oxloop-*-cp311-*.whl
  timed "smoke" smoke "$DIST"/oxloop-*-cp311-*.whl
  timed "sdist-smoke" sdist_smoke 3.11
  log "ci took $(($(date +%s) - t0)) s"
}

cmd=$1
shift
case $cmd in
  sdist-smoke) sdist_smoke "$@" ;;
  test) test_all ;;
  all | build | sdist | check | smoke | ci | tools) "$cmd" "$@" ;;
  *) die "unknown command $cmd" ;;
esac
