#!/usr/bin/env bash
# Test suite: set up .venv if needed, then run pytest (extra arguments go to pytest).
#   ./test.sh           everything that needs no GPU (CI runs this)
#   ./test.sh --fast    the day-to-day tier: no Verilator, synthesis, formal or real-model tests (< 3 min)
#   ./test.sh --runslow also the long sweeps
# Any other pytest arguments pass through (-n 0 runs in one process).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$root/tools/bootstrap.sh"
cd "$root"
args=(-n 2)  # two workers (pytest-xdist): the machines have two cores
if [[ "${1:-}" == "--fast" ]]; then
    shift
    args+=(-m "not rtl and not synth and not model and not formal and not soak and not slow")
fi
exec "$root/.venv/bin/python" -m pytest "${args[@]}" "$@"
