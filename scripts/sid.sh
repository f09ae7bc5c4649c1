#!/usr/bin/env bash
# Python 3.14 and 3.15 for a machine that lacks them: a Debian sid chroot carrying Debian's
# python3.14 / python3.15 (with -dev, -venv, -dbg and the libpython3.X-testsuite that holds
# test.test_asyncio), used by scripts/env.sh when no native interpreter of that version exists.
#
#   scripts/sid.sh setup 3.14 3.15   create the chroot (once, ~2 min) and install those versions;
#                                    idempotent: a second run with nothing to do takes ~1 s
#   scripts/sid.sh has 3.14          exit 0 if the chroot holds python3.14
#   scripts/sid.sh run CMD [ARG...]  run CMD inside the chroot, in the current directory, with the
#                                    environment kept (the work tree is bind-mounted at its path)
#
# Invariants:
# - The chroot lives outside the work tree (OXLOOP_SID_ROOT, default /opt/oxloop-sid), so every
#   clone (a developer's, CI's) shares it; each clone's top folder is bind-mounted at its own path,
#   so paths printed or stored inside the chroot are valid outside it too.
# - It is only ever used as root (apt-get, mount, chroot); the Rust toolchains are the machine's
#   own, bind-mounted (CARGO_HOME, RUSTUP_HOME), never a second copy.
# - A half-made chroot never looks finished: debootstrap writes to ROOT.new, renamed when done.
set -euo pipefail

ROOT=${OXLOOP_SID_ROOT:-/opt/oxloop-sid}
CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}
RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}
# The archive's sid Release file can be past its Valid-Until date (the mirror is a snapshot).
APT=(apt-get -o Acquire::Check-Valid-Until=false -o Dpkg::Use-Pty=0 -y -q)

log() { echo "sid: $*" >&2; }

# The Debian mirror this machine's own apt uses (deb822 sources or the one-line format).
mirror() {
  local m=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    m=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$m" ] && [ -f /etc/apt/sources.list ]; then
    m=$(awk '$1 == "deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
  fi
  echo "${m:-http://deb.debian.org/debian}"
}

bootstrap() {
  [ -x "$ROOT/usr/bin/apt-get" ] && return 0
  if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2
  fi
  log "debootstrap sid into $ROOT (about 2 minutes)"
  rm -rf "$ROOT.new"
  mkdir -p "$(dirname "$ROOT")"
  debootstrap --variant=minbase sid "$ROOT.new" "$(mirror)" >"$ROOT.log" 2>&1 \
    || { tail -20 "$ROOT.log" >&2; log "debootstrap failed (log: $ROOT.log)"; return 1; }
  echo 'Acquire::Check-Valid-Until "false";' >"$ROOT.new/etc/apt/apt.conf.d/99oxloop"
  mv "$ROOT.new" "$ROOT"
}

# What the host knows that the chroot needs to reach PyPI and localhost: name resolution, the
# locally added CA certificates (a TLS-inspecting egress here), pip's global configuration.
# Cheap, so it is refreshed on every setup.
host_config() {
  cp -f /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
  cp -f /etc/hosts "$ROOT/etc/hosts" 2>/dev/null || true
  [ -f /etc/pip.conf ] && cp -f /etc/pip.conf "$ROOT/etc/pip.conf"
  if [ -d /usr/local/share/ca-certificates ]; then
    mkdir -p "$ROOT/usr/local/share/ca-certificates"
    cp -rf /usr/local/share/ca-certificates/. "$ROOT/usr/local/share/ca-certificates/"
  fi
}

# Mounts are made once per boot and kept; each is checked first, so this is idempotent.
mount_one() { # mount_one SRC DEST [mount options...]
  local src=$1 dst=$ROOT$2
  shift 2
  mkdir -p "$dst"
  if mountpoint -q "$dst"; then
    # A bind mount of a folder since deleted and made again (a fresh clone at the same path)
    # still shows the old, deleted one: remount when the two are not the same inode.
    case $src in
      /*) [ "$(stat -c %d:%i "$src")" = "$(stat -c %d:%i "$dst")" ] && return 0
          umount -l "$dst" ;;
      *) return 0 ;;
    esac
  fi
  mount "$@" "$src" "$dst"
}

mounts() {
  mount_one proc /proc -t proc
  mount_one /dev /dev --rbind --make-rslave
  mount_one sysfs /sys -t sysfs
  # The host's /tmp, so a script or socket path under /tmp means the same file on both sides.
  mount_one /tmp /tmp --bind
  [ -d "$CARGO_HOME" ] && mount_one "$CARGO_HOME" "$CARGO_HOME" --bind
  [ -d "$RUSTUP_HOME" ] && mount_one "$RUSTUP_HOME" "$RUSTUP_HOME" --bind
  # Local wheel folders pip is pointed at (PIP_FIND_LINKS), so pip inside finds them too.
  local d
  for d in ${PIP_FIND_LINKS:-}; do
    case $d in /*) [ -d "$d" ] && mount_one "$d" "$d" --bind ;; esac
  done
  # The work tree this script belongs to, at the same path.
  local top
  top=$(cd "$(dirname "$0")/.." && pwd -P)
  mount_one "$top" "$top" --bind
}

packages_for() {
  local v=$1
  echo "python$v python$v-dev python$v-venv python$v-dbg libpython$v-testsuite"
}

setup() {
  [ "$(id -u)" = 0 ] || { log "must run as root (debootstrap, mount, chroot)"; return 1; }
  bootstrap
  host_config
  mounts
  local want="" v
  for v in "$@"; do
    [ -x "$ROOT/usr/bin/python$v" ] && [ -x "$ROOT/usr/bin/python${v}d" ] \
      && [ -d "$ROOT/usr/lib/python$v/test/test_asyncio" ] && continue
    want="$want $(packages_for "$v")"
  done
  [ -x "$ROOT/usr/bin/gcc" ] || want="$want gcc libc6-dev"
  [ -f "$ROOT/etc/ssl/certs/ca-certificates.crt" ] || want="$want ca-certificates"
  # procps: ps, which tests of `python -m asyncio ps` and the CLI use.
  [ -x "$ROOT/usr/bin/ps" ] || want="$want procps"
  # wrk: the HTTP rows of benches/net.py; git: the commit the benchmarks name.
  [ -x "$ROOT/usr/bin/wrk" ] || want="$want wrk"
  [ -x "$ROOT/usr/bin/git" ] || want="$want git"
  # PostgreSQL's server, for tests/integration/test_asyncpg.py (it starts its own throwaway
  # cluster). No service is started in the chroot (policy-rc.d) and no default cluster made.
  ls "$ROOT"/usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || want="$want postgresql"
  if [ -n "$want" ]; then
    log "installing:$want"
    printf '#!/bin/sh\n# A chroot: no daemon is ever started by a package here.\nexit 101\n' \
      >"$ROOT/usr/sbin/policy-rc.d"
    chmod +x "$ROOT/usr/sbin/policy-rc.d"
    mkdir -p "$ROOT/etc/postgresql-common"
    echo "create_main_cluster = false" >"$ROOT/etc/postgresql-common/createcluster.conf"
    chroot "$ROOT" /usr/bin/env DEBIAN_FRONTEND=noninteractive "${APT[@]}" update >&2
    # shellcheck disable=SC2086
    chroot "$ROOT" /usr/bin/env DEBIAN_FRONTEND=noninteractive "${APT[@]}" \
      install --no-install-recommends $want >&2
  fi
  chroot "$ROOT" update-ca-certificates >/dev/null 2>&1 || true
  for v in "$@"; do
    has "$v" || { log "python$v could not be set up"; return 1; }
    log "python$v: $(chroot "$ROOT" "/usr/bin/python$v" -c 'import sys; print(sys.version.split()[0])')"
  done
}

has() { [ -x "$ROOT/usr/bin/python$1" ]; }

run() {
  mounts
  # env -C: the same working directory inside (the work tree is mounted at its own path).
  # PATH: cargo's bin first (maturin calls cargo), then the chroot's own system folders.
  exec chroot "$ROOT" /usr/bin/env -C "$PWD" PATH="$CARGO_HOME/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    CARGO_HOME="$CARGO_HOME" RUSTUP_HOME="$RUSTUP_HOME" "$@"
}

"$@"
