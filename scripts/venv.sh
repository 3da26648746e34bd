# Sourced by quickstart.sh and test.sh: make .venv and install this checkout into it, editable.
#   install_into_venv TARGET    TARGET is "." or ".[dev]"
# $PYTHON picks the interpreter (default python3). A .venv made by another Python is made again
# (a .venv left by a too-old python3 would otherwise fail every later run), and a checkout whose
# pyproject.toml has not changed since its last install is not installed again, so a rerun needs
# no network.

install_into_venv() {
    local target=$1 python=${PYTHON:-python3} version stamp
    if ! version=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2]); sys.exit(sys.version_info < (3, 11))' 2>/dev/null); then
        echo "$0: nerbatch needs Python 3.11 or newer; ${python} is ${version:-not found}; set PYTHON, e.g. PYTHON=python3.12" >&2
        exit 1
    fi
    if [ ! -x .venv/bin/python ] || [ "$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" != "$version" ]; then
        "$python" -m venv --clear .venv
    fi
    stamp="$target $(cat pyproject.toml | cksum)"
    if [ -f .venv/.nerbatch-installed ] && grep -qxF -e "$stamp" -e ".[dev] ${stamp#* }" .venv/.nerbatch-installed; then
        return 0  # installed from this pyproject.toml, with at least what is asked for
    fi
    .venv/bin/python -m pip install --quiet --upgrade pip
    # editable: the one .venv always runs this checkout, never a stale copy
    .venv/bin/python -m pip install --quiet -e "$target"
    echo "$stamp" >> .venv/.nerbatch-installed
}
