# Source this file: it makes (once) and activates the project's virtual environment.
#
# The environment lives outside the clone, keyed by a hash of the dependency files, so a fresh clone
# (CI) reuses it and any change to pyproject.toml or constraints/ci.txt builds a new one:
#   ${UNILIP_VENV_ROOT:-$HOME/.cache/unilip/venvs}/<hash>
# Set UNILIP_VENV to use a venv of your own instead (it is created there if missing).
# Needs only Python >= 3.10 with pip; exact versions come from constraints/ci.txt.

_unilip_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

_unilip_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.11 python3 python; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
           "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
            echo "$candidate"; return 0
        fi
    done
    echo "unilip: no Python >= 3.10 found (set PYTHON=/path/to/python3.11)" >&2
    return 1
}

_unilip_make_venv() {  # $1 = python, $2 = target directory
    if ! "$1" -m venv "$2" 2>/dev/null; then
        # Some system Pythons ship without the venv module: fall back to virtualenv from PyPI.
        echo "unilip: '$1 -m venv' is unavailable; using virtualenv instead" >&2
        rm -rf "$2"
        "$1" -m pip install --quiet --user virtualenv && "$1" -m virtualenv --quiet "$2"
    fi
}

_unilip_quiet() {  # $1 = venv, rest = command; its output goes to a log, shown only if it fails
    local log="$1/.unilip-install.log"; shift
    if ! "$@" >"$log" 2>&1; then
        echo "unilip: environment step failed: $*" >&2; tail -n 40 "$log" >&2; return 1
    fi
}

_unilip_setup() {
    local python hash venv
    python="$(_unilip_python)" || return 1
    hash="$(cat "$_unilip_root/pyproject.toml" "$_unilip_root/constraints/ci.txt" | "$python" -c \
        'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest()[:16])')"
    venv="${UNILIP_VENV:-${UNILIP_VENV_ROOT:-$HOME/.cache/unilip/venvs}/$hash}"
    if [ ! -f "$venv/.unilip-complete" ]; then
        echo "unilip: building the environment in $venv (first time only; a few minutes)" >&2
        rm -rf "$venv"
        mkdir -p "$(dirname "$venv")"
        _unilip_make_venv "$python" "$venv" || return 1
        _unilip_quiet "$venv" "$venv/bin/python" -m pip install --upgrade pip || return 1
        _unilip_quiet "$venv" "$venv/bin/python" -m pip install -c "$_unilip_root/constraints/ci.txt" \
            -e "$_unilip_root[test]" || return 1
        touch "$venv/.unilip-complete"
    else
        # The cached environment may point at another clone: re-link the package to this one.
        _unilip_quiet "$venv" "$venv/bin/python" -m pip install --no-deps -e "$_unilip_root" || return 1
    fi
    export VIRTUAL_ENV="$venv"
    export PATH="$venv/bin:$PATH"
}

# Nothing is downloaded at run time: models and data come from local paths.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
_unilip_setup
