#!/usr/bin/env bash
# Install nerbatch with its test extras into .venv, start the local Kafka broker,
# run the test suite, stop the broker. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/venv.sh
source scripts/venv.sh
install_into_venv '.[dev]'
# shellcheck disable=SC1091
source .venv/bin/activate

# A broker the developer started stays running, with its topics; only one started here is stopped.
# Tests deselected with -m "not kafka" need none (nor Java).
case " $* " in
    *"not kafka"*) ;;
    *)
        if ! bash scripts/kafka.sh status >/dev/null 2>&1; then
            bash scripts/kafka.sh start
            trap 'bash scripts/kafka.sh stop >/dev/null 2>&1 || true' EXIT
        fi
        kafka_env=$(bash scripts/kafka.sh env)  # its failure stops here, not in every Kafka test
        eval "$kafka_env"
        ;;
esac

status=0
python -m pytest -p no:cacheprovider "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "test.sh: pytest collected no tests" >&2
    exit 1
fi
exit "$status"
