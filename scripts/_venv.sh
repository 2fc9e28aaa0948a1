# Sourced by scripts/run-sim and scripts/test: create or reuse .venv and
# (re)install the package when its metadata changed since the last install.
# VENV_EXTRAS names the extras to install ("test" for the test suite).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
EXTRAS="${VENV_EXTRAS:-}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV" >&2
    "$PYTHON" -m venv "$VENV"
fi
STAMP="$VENV/.installed${EXTRAS:+-$EXTRAS}"
WANT="$(cat "$ROOT/setup.cfg" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
current() { [ -f "$1" ] && [ "$(cat "$1")" = "$WANT" ]; }
# an install with the test extra also has everything the plain install has
if ! current "$STAMP" && ! { [ -z "$EXTRAS" ] && current "$VENV/.installed-test"; }; then
    echo "[setup] installing the package${EXTRAS:+ with [$EXTRAS]} into .venv" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT${EXTRAS:+[$EXTRAS]}" >&2
    echo "$WANT" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
