#!/usr/bin/env bash
# Install nerbatch with its test extras into .venv, start the local Kafka broker,
# run the test suite, stop the broker. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'
# shellcheck disable=SC1091
source .venv/bin/activate

# A broker the developer started stays running, with its topics; only one started here is stopped.
if ! bash scripts/kafka.sh status >/dev/null 2>&1; then
    bash scripts/kafka.sh start
    trap 'bash scripts/kafka.sh stop >/dev/null 2>&1 || true' EXIT
fi
eval "$(bash scripts/kafka.sh env)"

status=0
python -m pytest -p no:cacheprovider "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no tests" >&2
    exit 1
fi
exit "$status"
