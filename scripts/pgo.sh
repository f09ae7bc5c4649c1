#!/usr/bin/env bash
# Profile-guided (PGO) builds of oxloop: an opt-in build, not the default one (issue 18, item 3).
#
#   scripts/pgo.sh profile 3.X   build oxloop instrumented (-Cprofile-generate), run the training
#                                workload on it, merge: target/pgo/py3.X/oxloop.profdata
#   scripts/pgo.sh wheel 3.X     the profile, then the version's wheel built with it by
#                                scripts/wheels.sh (same flags, tag and checks) into dist/
#   scripts/pgo.sh build 3.X     that wheel's extension installed where .venv/3.X imports it
#                                (python/oxloop/), for the benchmarks; prints the python
#
# Why: on the micro rows where a peer was ahead with oxloop running fewer instructions, the cause
# is code layout (I1 misses, mispredicts; benches/callgrind.py --cache). A PGO build lays the
# hot paths out together. 3.11, the PGO wheel against the default wheel (scripts/wheels.sh),
# cachegrind per operation: call_soon instructions 2,438 -> 2,248; tasks_sleep0 79,540 ->
# 77,448 and I1 misses 1,442 -> 815; gather I1 misses 781 -> 650; sleep_100k 1,389 -> 1,046.
# CPU, two runs of 7 interleaved rounds: call_soon -6.2 % and -5.3 % (14 of 14 rounds faster),
# the other rows 0-6 % faster, none slower. Function alignment (-align-all-functions=5 or 6)
# was measured as well and stayed within noise, so the default build keeps its flags.
#
# Invariants:
# - The training workload is fixed (benches/micro.py --quick on every row, oxloop only, and a
#   small one-process streams bulk run), so two runs give the same profile up to timing.
# - Both builds go through scripts/wheels.sh's own maturin command (zig, manylinux2014, strip):
#   the profile names functions by symbols that carry cargo's hash of the build, and that hash
#   follows the linker and flags cargo is given. A profile taken from a plain `maturin build`
#   matched the wheel's functions only in part (call_soon 2,408 instructions against 2,245 with
#   the matching profile; the default build: 2,436). zig cannot link the profiler runtime
#   (it rejects rustc's `-u __llvm_profile_runtime`), so the instrumented build alone is linked
#   by the system's cc: cargo's hash stays the same, maturin's manylinux check then refuses the
#   result (it needs the host's newer glibc), and the extension is taken from cargo's output.
# - The instrumented build, its profile and the PGO build live in target/pgo/py3.X/ (their own
#   cargo target dirs): the ordinary builds' caches are untouched, and no RUSTFLAGS leak into them.
# - llvm-profdata must match rustc's LLVM: it is the rustup component llvm-tools' copy, never the
#   system's; the script adds the component when it is missing.
# - Native interpreters only (3.10-3.13 here); the sid chroot's versions are refused.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "pgo: $*" >&2; exit 1; }

HOST=$(rustc -vV | sed -n 's/^host: //p')

profdata_tool() {
  local tool
  tool="$(rustc --print sysroot)/lib/rustlib/$HOST/bin/llvm-profdata"
  # A new machine lacks the component: add it (a few MB from rustup's server) rather than fail.
  [ -x "$tool" ] || rustup component add llvm-tools >&2 || die "cannot add rustup's llvm-tools"
  [ -x "$tool" ] || die "no $tool after adding llvm-tools"
  echo "$tool"
}

# profile 3.X: prints the .profdata path.
profile() {
  local v=$1 dir py tool so ext
  dir="$PWD/target/pgo/py$v"
  py=$(scripts/env.sh venv "$v")
  [ -f ".venv/$v/.in-sid" ] && die "python$v runs in the sid chroot; PGO builds are native only"
  tool=$(profdata_tool)
  so="$dir/gen/$HOST/release/deps/lib_oxloop.so"
  rm -rf "$dir/raw" "$dir/gen-dist" "$dir/gen-site" "$dir/oxloop.profdata" "$so"
  # Expected to fail at maturin's manylinux check (see above); the extension is what counts.
  RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$dir/raw -Clinker=cc" \
    WHEELS_TARGET_DIR="$dir/gen" WHEELS_DIST="$dir/gen-dist" scripts/wheels.sh build "$v" >&2 \
    || echo "pgo: (the instrumented build is not a manylinux wheel: expected)" >&2
  [ -f "$so" ] || die "the instrumented build made no $so"
  ext=$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
  mkdir -p "$dir/gen-site/oxloop"
  cp python/oxloop/*.py "$dir/gen-site/oxloop/"
  cp "$so" "$dir/gen-site/oxloop/_oxloop$ext"
  # The training workload, with the instrumented build first on the path (the children of
  # micro.py inherit PYTHONPATH).
  PYTHONPATH="$dir/gen-site" "$py" -c 'import oxloop._oxloop as m, sys; sys.exit(not m.__file__.startswith(sys.argv[1]))' "$dir/gen-site" \
    || die "the training would not run the instrumented build"
  PYTHONPATH="$dir/gen-site" "$py" benches/micro.py --quick --loops oxloop --no-save \
    --rows call_soon,call_later,call_soon_threadsafe,tasks_sleep0,gather,futures,future,sleep_10k,sleep_100k,sock_ready,sock_pingpong >&2
  PYTHONPATH="$dir/gen-site" "$py" benches/streams_bulk.py --loops oxloop --rounds 1 \
    --total-mib 64 --chunk-mib 0.0625 >&2
  compgen -G "$dir/raw/*.profraw" >/dev/null || die "the training wrote no profile"
  "$tool" merge -o "$dir/oxloop.profdata" "$dir/raw"
  echo "$dir/oxloop.profdata"
}

# wheel 3.X: the version's PGO wheel into dist/, with scripts/wheels.sh's checks.
wheel() {
  local v=$1 prof
  prof=$(profile "$v")
  RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$prof" WHEELS_TARGET_DIR="target/pgo/py$v/wheel" \
    scripts/wheels.sh build "$v"
  scripts/wheels.sh check dist/oxloop-*-cp"${v/./}"-*.whl
}

# build 3.X: the PGO wheel's extension put where `maturin develop` puts it (python/oxloop/, which
# .venv/3.X imports), for the benchmarks; the next `scripts/env.sh build` replaces it.
build() {
  local v=$1 py whl
  wheel "$v"
  py=$(scripts/env.sh venv "$v")
  whl=$(ls dist/oxloop-*-cp"${v/./}"-*.whl)
  "$py" - "$whl" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in z.namelist():
        if name.startswith("oxloop/_oxloop") and name.endswith(".so"):
            with open("python/" + name, "wb") as f:
                f.write(z.read(name))
PY
  echo "$py"
}

[ $# -eq 2 ] || die "usage: scripts/pgo.sh profile|build|wheel 3.X"
case $1 in
  profile | build | wheel) "$1" "$2" ;;
  *) die "unknown command $1" ;;
esac
