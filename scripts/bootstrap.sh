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
  "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
  if [ "$extra" = dev ]; then
    "$venv/bin/python" -m pip install -q -e "$root[dev]"
  else
    "$venv/bin/python" -m pip install -q -e "$root"
  fi
  touch "$stamp"
fi
