#!/bin/sh
# Installs klio on a backup VM: the binary, a `klio` system user, directories with tight
# permissions, the systemd unit, an example config, two random API tokens (kept if they exist)
# and the guide. `sh install.sh --help` says how; README.md beside this script walks through
# the whole installation.
set -eu

usage() {
  cat <<'EOF'
usage: sudo sh install.sh PATH/TO/klio
       sudo KLIO_BIN=PATH/TO/klio sh install.sh

Installs the klio binary (built with `npm ci && npm run build` on a linux-x64 glibc machine:
dist/klio) on this machine:

  /usr/local/bin/klio                         root:root  0755  the binary
  /etc/klio/                                  root:klio  0750
  /etc/klio/klio.json                         root:klio  0640  from klio.example.json, kept if it exists
  /etc/klio/tokens/, /etc/klio/tls/           root:klio  0750
  /etc/klio/tokens/admin.token, read.token    klio:klio  0600  random API tokens, kept if they exist
  /var/lib/klio/, /var/lib/klio/state/        klio:klio  0750
  /etc/systemd/system/klio.service            root:root  0644
  /usr/local/share/doc/klio/                  root:root  0644  the guide (README.md), AIRGAP.md, examples

and a `klio` system user (no shell, no login). Running it again upgrades the binary, the unit
and the guide, and keeps the config and the tokens. Without an argument or KLIO_BIN it takes
dist/klio of the project this script sits in.

KLIO_ROOT=DIR installs into DIR instead of / (a staging root: no user, no systemctl; owners
only when run as root with a klio user present).
EOF
}

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  -*) echo "install.sh: unknown option $1 (see sh install.sh --help)" >&2; exit 2 ;;
esac
[ $# -le 1 ] || { echo "install.sh: give one binary (see sh install.sh --help)" >&2; exit 2; }

ROOT="${KLIO_ROOT:-}"
HERE="$(cd "$(dirname "$0")" && pwd)"
BIN="${1:-${KLIO_BIN:-}}"
if [ -z "$BIN" ]; then
  BIN="$HERE/../dist/klio"
  [ -e "$BIN" ] || { echo "install.sh: which klio binary? give its path: sudo sh $0 PATH/TO/klio (see --help)" >&2; exit 2; }
fi
case "$BIN" in */*) ;; *) BIN="./$BIN" ;; esac # a bare name is a file here, not a command on the PATH
[ -f "$BIN" ] || { echo "install.sh: $BIN is not a file: give the path of the klio binary (see --help)" >&2; exit 2; }
[ -x "$BIN" ] || { echo "install.sh: $BIN is not executable (copied without its mode?): chmod +x $BIN" >&2; exit 2; }
# Run it once before installing anything: a binary built for another platform fails here, plainly.
said() { printf '%s' "$1" | head -n 2 | tr '\n' ' '; }
if ! version="$("$BIN" --version 2>&1)"; then
  echo "install.sh: $BIN does not run on this machine ($(uname -s) $(uname -m)): \`klio --version\` said: $(said "$version")" >&2
  echo "install.sh: build it on a machine like this one (linux-x64 with glibc, e.g. Debian or Ubuntu on x86-64) with npm ci && npm run build, and copy dist/klio" >&2
  exit 1
fi
case "$version" in
  "klio "*) ;;
  *) echo "install.sh: $BIN is not klio: \`$BIN --version\` said: $(said "$version")" >&2; exit 1 ;;
esac
if [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then echo "install.sh: run as root (sudo), or set KLIO_ROOT to install into a staging directory" >&2; exit 1; fi
echo "installing $version"

# Owners: always on a real install; in a staging root only as root with a klio user present.
if [ -z "$ROOT" ] || { [ "$(id -u)" = 0 ] && id klio >/dev/null 2>&1; }; then CHOWN=yes; else CHOWN=; fi
owner() { if [ -n "$CHOWN" ]; then chown "$@"; fi; }

if [ -z "$ROOT" ] && ! id klio >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/klio --no-create-home --shell /usr/sbin/nologin klio
fi

install -d -m 0755 "$ROOT/usr/local/bin" "$ROOT/usr/local/share/doc/klio" "$ROOT/etc/systemd/system"
install -m 0755 "$BIN" "$ROOT/usr/local/bin/klio"
# The guide and everything it links to (test/appliance.test.ts checks the links resolve here).
install -m 0644 "$HERE/README.md" "$HERE/AIRGAP.md" "$HERE/klio.example.json" "$HERE/klio.service" "$ROOT/usr/local/share/doc/klio/"

# Data: only klio reads it. Config: root writes, klio reads. Secrets: klio's alone.
install -d -m 0750 "$ROOT/var/lib/klio" "$ROOT/var/lib/klio/state"
owner klio:klio "$ROOT/var/lib/klio" "$ROOT/var/lib/klio/state"
install -d -m 0750 "$ROOT/etc/klio" "$ROOT/etc/klio/tokens" "$ROOT/etc/klio/tls"
owner root:klio "$ROOT/etc/klio" "$ROOT/etc/klio/tokens" "$ROOT/etc/klio/tls"

if [ ! -e "$ROOT/etc/klio/klio.json" ]; then
  install -m 0640 "$HERE/klio.example.json" "$ROOT/etc/klio/klio.json"
  owner root:klio "$ROOT/etc/klio/klio.json"
  echo "wrote $ROOT/etc/klio/klio.json: edit its clusters before starting klio"
fi
for t in admin read; do
  f="$ROOT/etc/klio/tokens/$t.token"
  if [ ! -e "$f" ]; then
    (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$f"; echo >> "$f")
    chmod 0600 "$f"
    owner klio:klio "$f"
    echo "made the $t token: $f"
  fi
done

install -m 0644 "$HERE/klio.service" "$ROOT/etc/systemd/system/klio.service"
if [ -z "$ROOT" ] && command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload
  echo "installed. Next (see /usr/local/share/doc/klio/README.md): the password, CA and TLS files, /etc/klio/klio.json,"
  echo "then: sudo -u klio klio server start --config /etc/klio/klio.json --check && systemctl enable --now klio"
fi
