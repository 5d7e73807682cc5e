#!/usr/bin/env bash
# Installs the system packages the hotline needs (Asterisk, SIPp, espeak-ng, sox, Redis,
# Chromium for browser tests) and makes sure Redis runs. Idempotent; needs root.
set -euo pipefail

log() { printf 'setup-system: %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi

need_pkgs=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

debian_major=$(cut -d. -f1 /etc/debian_version 2>/dev/null || echo 12)
case "$debian_major" in
  11|bullseye*) asterisk_suite="" ;;                 # bullseye ships asterisk itself
  *) asterisk_suite="bullseye" ;;                     # bookworm/trixie have no asterisk: pin bullseye low
esac

# Asterisk from Debian's bullseye suite, pinned at priority 100 so nothing else comes from it
# unless asked for.
if [ -n "$asterisk_suite" ] && ! command -v asterisk >/dev/null 2>&1; then
  src=/etc/apt/sources.list.d/hotline-${asterisk_suite}.sources
  if [ ! -f "$src" ]; then
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    [ -f "$keyring" ] || keyring=/usr/share/keyrings/debian-archive-bullseye-stable.gpg
    log "adding Debian ${asterisk_suite} (pinned at 100) for asterisk"
    $SUDO tee "$src" >/dev/null <<SRC
Types: deb
URIs: http://deb.debian.org/debian
Suites: ${asterisk_suite}
Components: main
Signed-By: ${keyring}
SRC
    $SUDO tee /etc/apt/preferences.d/hotline-${asterisk_suite} >/dev/null <<PIN
Package: *
Pin: release n=${asterisk_suite}
Pin-Priority: 100
PIN
  fi
fi

for p in asterisk asterisk-core-sounds-en-wav sip-tester espeak-ng sox libsox-fmt-base redis-server chromium chromium-driver; do
  have "$p" || need_pkgs+=("$p")
done

if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

# Debian's asterisk package may start a system-wide instance on port 5060/5038 when it is installed; the hotline
# runs its own. Stop only that packaged instance (the pid in its own pid file, through its own control socket),
# never any other Asterisk on the machine.
pkg_pid=$(cat /var/run/asterisk/asterisk.pid 2>/dev/null || true)
if [ -n "$pkg_pid" ] && [ "$(cat /proc/"$pkg_pid"/comm 2>/dev/null)" = asterisk ]; then
  log "stopping the system-wide asterisk (pid $pkg_pid) the package started"
  $SUDO /usr/sbin/asterisk -rx 'core stop now' >/dev/null 2>&1 || log "could not stop it; the hotline's ports may be taken"
fi

# Redis: start it when nothing answers on 6379.
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  log "starting redis-server on 127.0.0.1:6379"
  $SUDO mkdir -p /var/lib/redis /var/log/redis
  $SUDO redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/hotline.log
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && break; sleep 0.1; done
fi

# PostgreSQL is optional (SQLite is the default); start an installed cluster if it is down.
if command -v pg_ctlcluster >/dev/null 2>&1 && ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
  ver=$(ls /etc/postgresql 2>/dev/null | head -1 || true)
  if [ -n "$ver" ]; then
    log "starting PostgreSQL $ver"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
  fi
fi
log "ok"
