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

# HOTLINE_SETUP_ROOT: a folder standing in for / for apt's sources and the package's pid file (tests only).
root=${HOTLINE_SETUP_ROOT:-}

need_pkgs=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

debian_major=$(cut -d. -f1 /etc/debian_version 2>/dev/null || echo 12)
case "$debian_major" in
  11|bullseye*) asterisk_suite="" ;;                 # bullseye ships asterisk itself
  *) asterisk_suite="bullseye" ;;                     # bookworm/trixie have no asterisk: pin bullseye low
esac

# Asterisk from Debian's bullseye suite and its security updates (bullseye-security), both pinned at priority 100
# so nothing else comes from them unless asked for; the security suite's newer asterisk wins over bullseye's.
# Written when asterisk is still to be installed, and kept up to date once the source is ours.
sources_changed=0
if [ -n "$asterisk_suite" ]; then
  src=${root}/etc/apt/sources.list.d/hotline-${asterisk_suite}.sources
  pin=${root}/etc/apt/preferences.d/hotline-${asterisk_suite}
  if [ -f "$src" ] || ! command -v asterisk >/dev/null 2>&1; then
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    [ -f "$keyring" ] || keyring=/usr/share/keyrings/debian-archive-bullseye-stable.gpg
    want_src="Types: deb
URIs: http://deb.debian.org/debian
Suites: ${asterisk_suite}
Components: main
Signed-By: ${keyring}

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: ${asterisk_suite}-security
Components: main
Signed-By: ${keyring}"
    want_pin="Package: *
Pin: release n=${asterisk_suite}
Pin-Priority: 100

Package: *
Pin: release n=${asterisk_suite}-security
Pin-Priority: 100"
    if [ "$(cat "$src" 2>/dev/null)" != "$want_src" ] || [ "$(cat "$pin" 2>/dev/null)" != "$want_pin" ]; then
      log "adding Debian ${asterisk_suite} and ${asterisk_suite}-security (pinned at 100) for asterisk"
      $SUDO mkdir -p "$(dirname "$src")" "$(dirname "$pin")"
      printf '%s\n' "$want_src" | $SUDO tee "$src" >/dev/null
      printf '%s\n' "$want_pin" | $SUDO tee "$pin" >/dev/null
      sources_changed=1
    fi
  fi
fi

for p in asterisk asterisk-core-sounds-en-wav sip-tester espeak-ng sox libsox-fmt-base redis-server chromium chromium-driver; do
  have "$p" || need_pkgs+=("$p")
done

installing_asterisk=0
for p in "${need_pkgs[@]}"; do [ "$p" = asterisk ] && installing_asterisk=1; done

if [ ${#need_pkgs[@]} -gt 0 ]; then
  log "installing: ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
elif [ "$sources_changed" = 1 ]; then
  # Nothing to install: only make apt see the security suite (`apt-get upgrade` then takes its asterisk).
  $SUDO apt-get update -qq || log "apt-get update failed; the ${asterisk_suite}-security suite is used from the next one"
fi

# Debian's asterisk package may start a system-wide instance on ports 5060/5038 when it is installed; the hotline
# runs its own. That instance is stopped only when this run installed the package (so it is the one the package
# just started): by the pid in the package's own pid file, after checking that pid is an asterisk running the
# package's configuration. Any other Asterisk on the machine — someone else's, or a hotline's own under var/ — is
# never touched (no pkill, no killall, no control socket that could belong to another instance).
if [ "$installing_asterisk" = 1 ]; then
  pkg_pid=$(cat "${root}/var/run/asterisk/asterisk.pid" 2>/dev/null || true)
  if [ -n "$pkg_pid" ] && [ "$(cat /proc/"$pkg_pid"/comm 2>/dev/null)" = asterisk ] \
     && ! tr '\0' ' ' </proc/"$pkg_pid"/cmdline 2>/dev/null | grep -q -- ' -C '; then
    log "stopping the system-wide asterisk (pid $pkg_pid) the package just started"
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet asterisk 2>/dev/null; then
      $SUDO systemctl disable --now asterisk >/dev/null 2>&1 || log "could not stop it; the hotline's ports may be taken"
    else
      $SUDO kill -TERM "$pkg_pid" || log "could not stop it; the hotline's ports may be taken"
    fi
  fi
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
