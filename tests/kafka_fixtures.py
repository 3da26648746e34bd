"""Pytest plugin: a real local Apache Kafka broker for tests marked ``kafka``.

Registered from ``tests/conftest.py`` with
``pytest_plugins = ["tests.kafka_fixtures"]``.

Fixtures:

``kafka_bootstrap`` (session)
    ``"127.0.0.1:PORT"`` of a running broker. Taken from
    ``NERBATCH_KAFKA_BOOTSTRAP`` when set (CI starts the broker with
    ``scripts/kafka.sh start`` before pytest); otherwise the fixture runs
    ``scripts/kafka.sh start`` itself and stops the broker at the end of the
    session, but only if this session started it (a broker a developer
    already had running is reused and left running).

``kafka_sasl`` (session)
    The same broker's SASL_PLAINTEXT listener and its one user:
    ``{"bootstrap", "user", "password"}``.

``kafka_admin`` (session)
    A ``kafka.KafkaAdminClient`` connected to that broker.

``kafka_topic_factory`` (function)
    ``make(num_partitions=1, configs=None) -> str``: creates a uniquely named
    topic (the broker runs with ``auto.create.topics.enable=false``), waits
    until every partition has a leader, and deletes the topic at teardown
    (best effort).

Any test that uses ``kafka_bootstrap`` (directly or through the fixtures
above) is given the ``kafka`` marker, so ``-m "not kafka"`` deselects it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
KAFKA_SH = REPO_ROOT / "scripts" / "kafka.sh"
BOOTSTRAP_ENV = "NERBATCH_KAFKA_BOOTSTRAP"
TOPIC_READY_TIMEOUT_MS = 30_000


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "kafka_bootstrap" in getattr(item, "fixturenames", ()) and item.get_closest_marker("kafka") is None:
            item.add_marker(pytest.mark.kafka)


def _run_kafka_sh(command: str, timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    # The script's readiness check needs kafka-python: use this interpreter.
    env.setdefault("NERBATCH_PYTHON", sys.executable)
    return subprocess.run(
        ["bash", str(KAFKA_SH), command],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _check_reachable(bootstrap: str) -> None:
    from kafka import KafkaAdminClient

    admin = None
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="nerbatch-tests-probe",
                                 request_timeout_ms=10_000, bootstrap_timeout_ms=10_000)
        admin.list_topics()
    except Exception as exc:  # noqa: BLE001 - reported to the user as is
        pytest.fail(f"{BOOTSTRAP_ENV}={bootstrap} but no Kafka broker answers there "
                    f"(start one with scripts/kafka.sh start): {type(exc).__name__}: {exc}",
                    pytrace=False)
    finally:
        if admin is not None:
            admin.close()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    from_env = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if from_env:
        _check_reachable(from_env)
        yield from_env
        return

    # First start downloads the jars (Maven), later ones reuse them.
    proc = _run_kafka_sh("start", timeout=900)
    if proc.returncode != 0:
        pytest.fail(
            "scripts/kafka.sh start failed (Java 17+ and Maven are needed; "
            "deselect these tests with -m 'not kafka'):\n" + proc.stdout + proc.stderr,
            pytrace=False,
        )
    started_here = "already started" not in proc.stdout
    env_proc = _run_kafka_sh("env", timeout=60)
    match = re.search(rf"{BOOTSTRAP_ENV}=(\S+)", env_proc.stdout)
    if env_proc.returncode != 0 or not match:
        pytest.fail("scripts/kafka.sh env gave no bootstrap address:\n"
                    + env_proc.stdout + env_proc.stderr, pytrace=False)
    try:
        yield match.group(1)
    finally:
        if started_here:
            stop = _run_kafka_sh("stop", timeout=120)
            if stop.returncode != 0:
                sys.stderr.write("scripts/kafka.sh stop failed:\n" + stop.stdout + stop.stderr)


SASL_ENV = ("NERBATCH_KAFKA_SASL_BOOTSTRAP", "NERBATCH_KAFKA_SASL_USER", "NERBATCH_KAFKA_SASL_PASSWORD")


@pytest.fixture(scope="session")
def kafka_sasl(kafka_bootstrap: str) -> dict:
    """The same broker's SASL_PLAINTEXT (PLAIN) listener: ``bootstrap``, ``user`` and ``password``,
    from the environment ``scripts/kafka.sh env`` prints, else asked of the script."""
    values = {name: os.environ.get(name, "").strip() for name in SASL_ENV}
    if not all(values.values()):
        values = dict(re.findall(r"(NERBATCH_KAFKA_SASL_\w+)=(\S+)", _run_kafka_sh("env", timeout=60).stdout))
    if not all(values.get(name) for name in SASL_ENV):
        pytest.fail("the broker has no SASL listener: restart it with scripts/kafka.sh stop; scripts/kafka.sh start",
                    pytrace=False)
    return {"bootstrap": values[SASL_ENV[0]], "user": values[SASL_ENV[1]], "password": values[SASL_ENV[2]]}


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str):
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="nerbatch-tests-admin",
                             request_timeout_ms=30_000)
    try:
        yield admin
    finally:
        admin.close()


def _topic_prefix(request: pytest.FixtureRequest) -> str:
    # Legal topic characters are [a-zA-Z0-9._-]; keep names short and readable.
    name = re.sub(r"[^a-zA-Z0-9._-]+", "-", request.node.name).strip("-.")
    return f"nbt-{name[:60]}"


@pytest.fixture
def kafka_topic_factory(kafka_admin, request: pytest.FixtureRequest) -> Iterator[Callable[..., str]]:
    created: list[str] = []
    prefix = _topic_prefix(request)

    def make(num_partitions: int = 1, *, configs: dict[str, str] | None = None) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        kafka_admin.create_topics(
            {name: {"num_partitions": num_partitions, "replication_factor": 1,
                    "configs": dict(configs or {})}},
            timeout_ms=TOPIC_READY_TIMEOUT_MS,
        )
        created.append(name)
        # Raises KafkaTimeoutError unless every partition has a leader in time.
        kafka_admin.wait_for_topics([name], timeout_ms=TOPIC_READY_TIMEOUT_MS)
        return name

    yield make

    if created:
        try:
            kafka_admin.delete_topics(created, timeout_ms=TOPIC_READY_TIMEOUT_MS, raise_errors=False)
        except Exception as exc:  # noqa: BLE001 - best effort cleanup
            sys.stderr.write(f"kafka_topic_factory: could not delete {created}: {exc}\n")
