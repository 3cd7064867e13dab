#!/usr/bin/env bash
# Test suite: set up .venv if needed, then run pytest (extra arguments go to pytest).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$root/tools/bootstrap.sh"
cd "$root"
exec "$root/.venv/bin/python" -m pytest "$@"
