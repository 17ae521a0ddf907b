#!/usr/bin/env bash
# A private Dovecot (IMAP + LMTP on 127.0.0.1) for the tests and local runs of MES Hub.
#
# Usage: scripts/dovecot.sh start|stop|status [DIR]
#   DIR          instance folder (default $MESHUB_DOVECOT_DIR, else /var/tmp/meshub-dovecot): the rendered
#                dovecot.conf, sockets (run/), state, dovecot.log and the maildirs (mail/<domain>/<user>).
#   start        installs dovecot-imapd, dovecot-lmtpd and dovecot-sieve with apt-get when missing (needs
#                root), renders config/dovecot/dovecot.conf.in into DIR, copies and compiles the sieve_before
#                script config/dovecot/meshub-delivery.sieve (idempotent LMTP redelivery) into DIR/sieve, runs
#                `dovecot -c DIR/dovecot.conf` and waits for both ports.  Already running: only waits for the
#                ports, and warns when the running config is older than the template (stop, then start).
#   stop         stops the instance of DIR.     status: exit 0 if it runs and both ports answer.
# Environment (read by start; the pytest fixture in tests/fixtures_mail.py reads the same names):
#   MESHUB_DOVECOT_IMAP_PORT  IMAP port (default 10143)     MESHUB_DOVECOT_LMTP_PORT  LMTP port (default 10024)
#   MESHUB_DOVECOT_PASSWORD   the one password of every mailbox (default meshub-test)
#   MESHUB_DOVECOT_DOMAINS    space-separated mail domains that have mailboxes (default org.test.mssante.fr)
# It never reads or changes /etc/dovecot and never touches a system Dovecot already running.
#
# Production does not use this script.  Run your own Dovecot (the distribution's service, TLS, your real
# passdb/userdb), give it an LMTP inet_listener that the hub's workers can reach (a firewall or TLS between
# them), load the sieve plugin for LMTP with config/dovecot/meshub-delivery.sieve as sieve_before and the
# duplicate periods of dovecot.conf.in (else a redelivery after a crash files a second copy), then point
# the hub at it: `[lmtp] host = ... port = ...` in the hub's TOML for delivery to local
# organisation mailboxes (connectors.outbound.lmtp.LmtpDelivery), and host, port (993), user, password and
# an ssl_context for each mailbox the IMAP intake polls (connectors.inbound.imap.ImapIntake).
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
template="$root/config/dovecot/dovecot.conf.in"
sieve_script="$root/config/dovecot/meshub-delivery.sieve"
command="${1:-status}"
dir="${2:-${MESHUB_DOVECOT_DIR:-/var/tmp/meshub-dovecot}}"
imap_port="${MESHUB_DOVECOT_IMAP_PORT:-10143}"
lmtp_port="${MESHUB_DOVECOT_LMTP_PORT:-10024}"
password="${MESHUB_DOVECOT_PASSWORD:-meshub-test}"
domains="${MESHUB_DOVECOT_DOMAINS:-org.test.mssante.fr}"
conf="$dir/dovecot.conf"

log() { echo "dovecot: $*" >&2; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { for _ in $(seq 1 "${2:-30}"); do port_open "$1" && return 0; sleep 1; done; return 1; }

apt_install() {
  command -v apt-get >/dev/null || { log "apt-get not found: install $* yourself"; return 1; }
  [ "$(id -u)" = 0 ] || { log "not root: install $* yourself"; return 1; }
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_installed() {
  [ -x /usr/sbin/dovecot ] && [ -x /usr/lib/dovecot/imap ] && [ -x /usr/lib/dovecot/lmtp ] &&
    [ -f /usr/lib/dovecot/modules/lib90_sieve_plugin.so ] && [ -x /usr/bin/sievec ] && return 0
  log "installing dovecot-imapd, dovecot-lmtpd and dovecot-sieve"
  apt_install dovecot-imapd dovecot-lmtpd dovecot-sieve
}

running() {
  local pid
  pid="$(cat "$dir/run/master.pid" 2>/dev/null)" || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

check_settings() {
  [[ "$dir" =~ ^/[A-Za-z0-9._/-]+$ ]] || { log "DIR must be an absolute path of [A-Za-z0-9._/-]: $dir"; return 1; }
  [[ "$imap_port" =~ ^[0-9]+$ && "$lmtp_port" =~ ^[0-9]+$ ]] || { log "ports must be numbers"; return 1; }
  [[ "$password" =~ ^[A-Za-z0-9._~+=-]+$ ]] || { log "MESHUB_DOVECOT_PASSWORD: use [A-Za-z0-9._~+=-] only"; return 1; }
  [[ "$domains" =~ ^[A-Za-z0-9.\ -]+$ ]] || { log "MESHUB_DOVECOT_DOMAINS: bad domain list"; return 1; }
}

rendered() {
  local uid gid
  uid="$(id -u mail)" && gid="$(id -g mail)" || { log "system user 'mail' not found"; return 1; }
  sed -e "s|@BASE_DIR@|$dir|g" -e "s|@IMAP_PORT@|$imap_port|g" -e "s|@LMTP_PORT@|$lmtp_port|g" \
      -e "s|@PASSWORD@|$password|g" -e "s|@MAIL_UID@|$uid|g" -e "s|@MAIL_GID@|$gid|g" "$template"
}

render() {
  local uid gid
  uid="$(id -u mail)" && gid="$(id -g mail)" || { log "system user 'mail' not found"; return 1; }
  mkdir -p "$dir" && chmod 0755 "$dir" || return 1
  install -d -o "$uid" -g "$gid" -m 0700 "$dir/mail" || return 1
  rendered >"$conf.tmp" && mv "$conf.tmp" "$conf" || return 1
  # shellcheck disable=SC2086 # one domain per word
  printf '%s:::::::nopassword\n' $domains >"$dir/domains.passwd"
  # The sieve_before script, compiled here (root-owned, read-only for the LMTP process, which runs as
  # `mail` and would otherwise compile it in memory on every delivery).
  install -d -m 0755 "$dir/sieve" && install -m 0644 "$sieve_script" "$dir/sieve/meshub-delivery.sieve" || return 1
  sievec -c "$conf" "$dir/sieve/meshub-delivery.sieve" || { log "sievec failed on meshub-delivery.sieve"; return 1; }
  chmod 0644 "$dir/sieve/meshub-delivery.svbin"
}

warn_if_stale() {
  # Settings are read at start only: say so when the template (or the sieve script) changed since.
  if ! rendered 2>/dev/null | cmp -s - "$conf" || ! cmp -s "$sieve_script" "$dir/sieve/meshub-delivery.sieve"; then
    log "the running instance uses an older config than config/dovecot/: run '$0 stop' then '$0 start'"
  fi
}

start() {
  if running; then
    log "already running in $dir"
    warn_if_stale
  else
    [ "$(id -u)" = 0 ] || { log "start needs root (Dovecot drops privileges itself)"; return 1; }
    check_settings || return 1
    for port in "$imap_port" "$lmtp_port"; do
      port_open "$port" && { log "port $port is already taken by another program"; return 1; }
    done
    ensure_installed && render || return 1
    log "starting in $dir (imap 127.0.0.1:$imap_port, lmtp 127.0.0.1:$lmtp_port)"
    /usr/sbin/dovecot -c "$conf" || { tail -n 20 "$dir/dovecot.log" >&2 2>/dev/null; return 1; }
  fi
  wait_port "$imap_port" && wait_port "$lmtp_port" && return 0
  log "ports $imap_port/$lmtp_port did not open; last log lines:"
  tail -n 20 "$dir/dovecot.log" >&2 2>/dev/null
  return 1
}

stop() {
  running || { log "not running in $dir"; return 0; }
  /usr/sbin/dovecot -c "$conf" stop || return 1
  for _ in $(seq 1 30); do running || return 0; sleep 0.5; done
  log "did not stop within 15 s"
  return 1
}

status() {
  if running && port_open "$imap_port" && port_open "$lmtp_port"; then
    echo "dovecot: running in $dir (imap 127.0.0.1:$imap_port, lmtp 127.0.0.1:$lmtp_port)"
    return 0
  fi
  echo "dovecot: not running in $dir"
  return 1
}

case "$command" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status [DIR]" >&2; exit 2 ;;
esac
