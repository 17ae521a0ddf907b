#!/usr/bin/env bash
# Create .venv (once) and install MES Hub into it. Needs only python3 (>= 3.11).
# Usage: scripts/bootstrap.sh [dev]   -- "dev" adds the test and lint tools.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$root/.venv"
extra="${1:-}"
stamp="$venv/.installed${extra:+-$extra}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  echo "meshub: installing into $venv (log: $venv/install.log)" >&2
  target="$root"
  [ "$extra" = dev ] && target="$root[dev]"
  if ! { "$venv/bin/python" -m pip install --upgrade pip && "$venv/bin/python" -m pip install -e "$target"; } \
      >"$venv/install.log" 2>&1; then
    tail -n 20 "$venv/install.log" >&2
    echo "meshub: installation failed; see $venv/install.log" >&2
    exit 1
  fi
  touch "$stamp"
fi
