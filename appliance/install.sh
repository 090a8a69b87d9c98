#!/bin/sh
# Installs klio on a backup VM: the binary, a `klio` system user, directories with tight
# permissions, the systemd unit, an example config and two random API tokens (kept if they
# exist). Run as root from the project directory after `npm run build`:
#
#   sudo sh appliance/install.sh            # then edit /etc/klio/klio.json
#
# KLIO_ROOT=/some/dir installs into a staging root instead of / (no user, no systemctl).
set -eu
ROOT="${KLIO_ROOT:-}"
HERE="$(cd "$(dirname "$0")" && pwd)"
BIN="${KLIO_BIN:-$HERE/../dist/klio}"

[ -x "$BIN" ] || { echo "install.sh: $BIN is missing: run npm run build first" >&2; exit 1; }
if [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then echo "install.sh: run as root (or set KLIO_ROOT)" >&2; exit 1; fi

owner() { [ -z "$ROOT" ] && chown "$@" || true; }

if [ -z "$ROOT" ] && ! id klio >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/klio --no-create-home --shell /usr/sbin/nologin klio
fi

install -d -m 0755 "$ROOT/usr/local/bin" "$ROOT/usr/local/share/doc/klio" "$ROOT/etc/systemd/system"
install -m 0755 "$BIN" "$ROOT/usr/local/bin/klio"
install -m 0644 "$HERE/README.md" "$HERE/AIRGAP.md" "$ROOT/usr/local/share/doc/klio/"

# Data: only klio reads it. Config and secrets: root writes, klio reads.
install -d -m 0750 "$ROOT/var/lib/klio" "$ROOT/var/lib/klio/state"
owner -R klio:klio "$ROOT/var/lib/klio"
install -d -m 0750 "$ROOT/etc/klio" "$ROOT/etc/klio/tokens"
owner root:klio "$ROOT/etc/klio" "$ROOT/etc/klio/tokens"

if [ ! -e "$ROOT/etc/klio/klio.json" ]; then
  install -m 0640 "$HERE/klio.example.json" "$ROOT/etc/klio/klio.json"
  owner root:klio "$ROOT/etc/klio/klio.json"
  echo "wrote $ROOT/etc/klio/klio.json: edit its clusters before starting klio"
fi
for t in admin read; do
  f="$ROOT/etc/klio/tokens/$t.token"
  if [ ! -e "$f" ]; then
    (umask 027; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$f"; echo >> "$f")
    owner root:klio "$f"
    echo "made the $t token: $f"
  fi
done

install -m 0644 "$HERE/klio.service" "$ROOT/etc/systemd/system/klio.service"
if [ -z "$ROOT" ] && command -v systemctl >/dev/null 2>&1; then
  systemctl daemon-reload
  echo "installed. Next: edit /etc/klio/klio.json, then: systemctl enable --now klio && journalctl -u klio -f"
fi
