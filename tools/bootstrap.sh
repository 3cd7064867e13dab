#!/usr/bin/env bash
# Create or refresh the project's virtual environment in .venv (idempotent).
# Re-installs only when requirements*.txt or pyproject.toml change.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
stamp="$venv/.ptqtp-stamp"
want="$(cat "$root/requirements.txt" "$root/requirements-nodeps.txt" "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    exit 0
fi
echo "[bootstrap] setting up $venv (first run takes about a minute)" >&2
[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip
"${pip[@]}" install -r "$root/requirements.txt"
"${pip[@]}" install --no-deps -r "$root/requirements-nodeps.txt"
"${pip[@]}" install --no-deps -e "$root"
echo "$want" > "$stamp"
echo "[bootstrap] done" >&2
