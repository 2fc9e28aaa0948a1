# Sourced by scripts/run-sim and scripts/test: create or reuse .venv (Python 3.11) and install
# exactly the locked dependencies when the lock files changed since the last install.
#   VENV_EXTRAS=test   install requirements-test.lock (the test suite) instead of requirements.lock
#   PYTHON=...         the interpreter to create .venv with (default: python3.11)
# Every dependency, transitive ones and the build backend included, is pinned with its hashes
# (scripts/lock writes the lock files). When nothing changed, nothing is installed: no network.
# A lock (flock on .venv.lock) keeps two set-ups, e.g. run-sim and test started together, from racing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
EXTRAS="${VENV_EXTRAS:-}"
LOCK="$ROOT/requirements${EXTRAS:+-$EXTRAS}.lock"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_WARN_SCRIPT_LOCATION=1 PIP_NO_INPUT=1

_py_version() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo "missing"; }
_describe() { local v; v="$(_py_version "$1")"; [ "$v" = missing ] && echo "not a working Python" || echo "Python $v"; }

exec 9>"$ROOT/.venv.lock"
if ! flock -n 9; then
    echo "[setup] another set-up of .venv is running; waiting for it" >&2
    flock 9
fi

if [ -e "$VENV" ] && [ "$(_py_version "$VENV/bin/python")" != "3.11" ]; then
    echo "[setup] .venv has $(_describe "$VENV/bin/python"), 3.11 is required: recreating it" >&2
    rm -rf "$VENV"
fi
if [ ! -e "$VENV" ]; then
    PYTHON="${PYTHON:-python3.11}"
    if [ "$(_py_version "$PYTHON")" != "3.11" ]; then
        echo "[setup] Python 3.11 is required; '$PYTHON' is $(_describe "$PYTHON")." \
             "Install python3.11 or run with PYTHON=/path/to/python3.11" >&2
        exit 1
    fi
    echo "[setup] creating $VENV (Python 3.11)" >&2
    "$PYTHON" -m venv "$VENV"
fi

STAMP="$VENV/.installed${EXTRAS:+-$EXTRAS}"
_want() { cat "$ROOT/$1" "$ROOT/setup.cfg" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1; }
_current() { [ -f "$VENV/.installed${2:+-$2}" ] && [ "$(cat "$VENV/.installed${2:+-$2}")" = "$(_want "$1")" ]; }
# the test lock holds every version of the plain lock (it is constrained by it): either will do
if ! _current "$(basename "$LOCK")" "$EXTRAS" \
        && ! { [ -z "$EXTRAS" ] && _current requirements-test.lock test; }; then
    echo "[setup] installing the locked dependencies ($(basename "$LOCK")) and the package into .venv" >&2
    "$VENV/bin/python" -m pip install -qq --require-hashes --no-deps -r "$LOCK" >&2
    "$VENV/bin/python" -m pip install -qq --no-deps --no-build-isolation -e "$ROOT" >&2
    rm -f "$VENV"/.installed*
    _want "$(basename "$LOCK")" > "$STAMP"
fi
flock -u 9
exec 9>&-
export PATH="$VENV/bin:$PATH"
