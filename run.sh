#!/usr/bin/env bash
# Main job: set up .venv if needed, then run the end-to-end demo on the embedded default.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$root/tools/bootstrap.sh"
cd "$root"
exec "$root/.venv/bin/ptqtp" demo "$@"
