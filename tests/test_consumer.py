"""The Kafka worker (``nerbatch consume``) against the real local broker.

In-process workers run in threads with the tiny bundle; subprocess workers
run ``python -m nerbatch consume --model <tiny bundle>`` and are stopped with
SIGTERM or killed with SIGKILL.  The tiny bundle (2 epochs on the committed
sample) finds almost no entities, so the in-process end-to-end test wraps it
with a word list that adds a ``geo`` entity for known place names: the real
model still runs on every document, and entity rows really flow to both
outputs.
"""

from __future__ import annotations

import contextlib
import csv
import gc
import glob
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest

from nerbatch.consumer import (
    MIN_MESSAGE_BYTES, ConsumeConfigError, ConsumeOptions, ConsumeReport, UnreadableRecordError, Worker, _Outcome, _record_bytes, part_name,
)
from nerbatch.documents import Document, DocumentError, parse_document
from nerbatch.errors import NerbatchError, OutputError
from nerbatch.pipeline import AnnotatedChunk
from nerbatch.records import ERROR_SCHEMA_NAME, OUTCOME_SCHEMA_NAME, validate_record
from nerbatch.sinks import check_writable_folder

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "tests" / "fixtures" / "gmb_sample.csv"
WAIT_S = 90  # upper bound of every wait; waits poll and end as soon as the condition holds


# --------------------------------------------------------------------------- helpers


def _sentences(n: int) -> list[str]:
    """The first ``n`` sentences of the committed GMB sample, detokenised (real news text)."""
    out, words = [], []
    with open(SAMPLE, encoding="latin-1", newline="") as handle:
        rows = csv.reader(handle)
        next(rows)
        for row in rows:
            if row[0].strip() and words:
                out.append(_detok(words))
                words = []
                if len(out) == n:
                    return out
            words.append(row[1])
    out.append(_detok(words))
    return out[:n]


def _detok(words: list[str]) -> str:
    text = " ".join(words)
    return re.sub(r" ([.,;:!?'%)])", r"\1", text).replace("( ", "(")


def _docs(n: int, prefix: str) -> list[tuple[str, bytes]]:
    texts = _sentences(n)
    return [(f"{prefix}-{i:05d}", json.dumps({"id": f"{prefix}-{i:05d}", "text": texts[i % len(texts)],
                                              "lang": "en"}).encode()) for i in range(n)]


def _produce(bootstrap: str, topic: str, messages, *, keyed: bool = True) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    try:
        for key, value, *headers in messages:
            producer.send(topic, key=key.encode() if keyed and key else None, value=value,
                          headers=headers[0] if headers else None)
        producer.flush(timeout=30)
    finally:
        producer.close(timeout=30)


def _end_offsets(bootstrap: str, topic: str, partitions: int, isolation: str = "read_uncommitted") -> dict:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level=isolation)
    try:
        return {tp.partition: o for tp, o in
                consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)]).items()}
    finally:
        consumer.close()


def _read_all(bootstrap: str, topic: str, partitions: int, isolation: str = "read_uncommitted") -> list:
    """Everything readable in ``topic`` now (under read_committed: up to the last stable offset)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level=isolation)
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        records, deadline = [], time.monotonic() + WAIT_S
        while any(consumer.position(tp) < end[tp] for tp in tps):
            assert time.monotonic() < deadline, f"reading {topic} stuck"
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def _committed(kafka_admin, group: str, topic: str) -> dict:
    import kafka.errors

    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            offsets = kafka_admin.list_group_offsets({group: None})[group]
            return {tp.partition: om.offset for tp, om in offsets.items() if tp.topic == topic}
        except (kafka.errors.CoordinatorNotAvailableError, kafka.errors.CoordinatorLoadInProgressError):
            # a broker just started is still creating its offsets topic
            assert time.monotonic() < deadline, f"no group coordinator for {group}"
            time.sleep(0.5)


def _wait(condition, what: str, timeout: float = WAIT_S, proc: subprocess.Popen | None = None, log=None):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"worker exited ({proc.returncode}) while waiting for {what}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}" + (f":\n{_tail(log)}" if log else ""))
        time.sleep(0.2)


def _tail(path, n: int = 40) -> str:
    if not path or not os.path.exists(path):
        return ""
    return "".join(open(path, encoding="utf-8", errors="replace").readlines()[-n:])


def _spawn(args: list[str], log: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    handle = open(log, "ab")  # noqa: SIM115 - owned by the process
    try:
        return subprocess.Popen([sys.executable, "-m", "nerbatch", "consume", *args], cwd=REPO, env=env,
                                stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    finally:
        handle.close()


def _log_has(log: Path, text: str, after: int = 0) -> bool:
    return log.exists() and text in log.read_text(encoding="utf-8", errors="replace")[after:]


def _parts(folder) -> list[dict]:
    out = []
    for path in sorted(glob.glob(os.path.join(folder, "part-*.parquet"))):
        meta = {k.decode(): v.decode() for k, v in pq.read_metadata(path).metadata.items()}
        out.append({"path": path, "partition": int(meta["partition"]), "first": int(meta["first_offset"]),
                    "last": int(meta["last_offset"]), "docs": int(meta["documents"]), "meta": meta,
                    "writer": path.rsplit("-", 1)[1].removesuffix(".parquet")})
    return out


def _side_file(part: dict, kind: str) -> str:
    """The errors or outcomes file beside ``part``."""
    folder = os.path.dirname(part["path"])
    return os.path.join(folder, part_name(part["meta"]["topic"], part["partition"], part["first"], part["writer"], kind))


def _check_coverage(parts: list[dict], ends: dict) -> None:
    """The parts of each partition cover offsets 0..end-1 exactly: no gap, no overlap."""
    for p, end in ends.items():
        ranges = sorted((x["first"], x["last"]) for x in parts if x["partition"] == p)
        expected = 0
        for first, last in ranges:
            assert first == expected, f"partition {p}: parts {ranges} leave a gap or overlap at {expected}"
            expected = last + 1
        assert expected == end, f"partition {p}: parts end at {expected}, the partition at {end}"


class _PlaceNames:
    """The real pipeline, plus a ``geo`` entity for every place name of a short list."""

    PLACES = ("London", "Iraq", "Baghdad", "Iran", "Paris", "Washington", "Pakistan", "Afghanistan")

    def __init__(self, inner) -> None:
        self.inner = inner
        self.model_name = inner.model_name
        self.calls: list[int] = []
        self.lock = threading.Lock()

    def annotate(self, documents):
        yield self.annotate_all(documents)

    def annotate_all(self, documents):
        docs = list(documents)
        with self.lock:
            self.calls.append(len(docs))
            chunk = self.inner.annotate_all(docs)
        rows = [(int(d), int(s), lab, txt, int(a), int(b), float(sc)) for d, s, lab, txt, a, b, sc in zip(
            chunk.doc_index, chunk.sentence, chunk.label, chunk.text, chunk.start, chunk.end, chunk.score)]
        for i, doc in enumerate(docs):
            for place in self.PLACES:
                for m in re.finditer(rf"\b{place}\b", doc.text):
                    rows.append((i, 0, "geo", place, m.start(), m.end(), 0.5))
        rows.sort(key=lambda r: (r[0], r[4]))
        col = list(zip(*rows)) if rows else [[]] * 7
        return AnnotatedChunk(docs, np.array(col[0], np.int64), np.array(col[1], np.int64), list(col[2]),
                              list(col[3]), np.array(col[4], np.int64), np.array(col[5], np.int64),
                              np.array(col[6], np.float32), chunk.sentences_per_doc, chunk.tokens_per_doc)


@pytest.fixture(scope="module")
def pipeline(tiny_bundle):
    from nerbatch.bundle import load_bundle
    from nerbatch.pipeline import NerPipeline

    return NerPipeline(load_bundle(tiny_bundle), batch_size=64)


def _uid(kind: str) -> str:
    return f"nbt-{kind}-{uuid.uuid4().hex[:8]}"


def _start(worker: Worker) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def target():
        try:
            box["report"] = worker.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            box["error"] = exc

    thread = threading.Thread(target=target, name="test-worker", daemon=True)
    thread.start()
    return thread, box


def _finish(thread: threading.Thread, box: dict, timeout: float = WAIT_S):
    thread.join(timeout)
    assert not thread.is_alive(), "worker did not stop"
    if "error" in box:
        raise box["error"]
    return box["report"]


# --------------------------------------------------------------------------- no broker needed


def test_a_failure_after_a_stop_request_is_not_announced_as_retried(caplog, tiny_pipeline):
    worker = Worker(ConsumeOptions(bootstrap_servers="127.0.0.1:9", topics=("in",), group="g", output_topic="out",
                                   dead_letter_topic="dlq"), tiny_pipeline)
    worker.stop()
    with caplog.at_level("WARNING", logger="nerbatch.consumer"):
        worker._backoff("batch of 3 message(s) failed", None)
    assert [r.message for r in caplog.records] == ["batch of 3 message(s) failed; not retried: the worker is stopping"]


def test_parse_document_uses_the_jsonl_rules():
    doc = parse_document(b'{"id": 7, "text": "Rain in Paris.", "lang": "fr"}', source="news/2", position=41,
                         keep_fields=["lang"])
    assert doc == Document("7", "Rain in Paris.", {"lang": "fr"}, "news/2", 41)
    assert parse_document(b'{"text": "No id."}', source="news/2", position=42).doc_id == "news/2:42"
    cases = {
        b"{oops": "malformed_json", b"[1, 2]": "not_object", b'{"id": "a"}': "missing_text",
        b'{"text": 3}': "non_string_text", b'{"text": "  "}': "empty_text", b"\xff\xfe": "invalid_utf8",
        b'{"text": "' + b"x" * 50 + b'"}': "oversized", b"": "malformed_json", None: "malformed_json",
        b'{"text": "a"}\n{"text": "b"}': "malformed_json",
    }
    for payload, kind in cases.items():
        error = parse_document(payload, source="news/0", position=5, max_doc_chars=20)
        assert isinstance(error, DocumentError) and error.reason.startswith(kind + ":"), (payload, error)
        assert (error.source, error.position) == ("news/0", 5)
    assert parse_document(b'\xef\xbb\xbf{"text": "BOM"}\n', source="t/0", position=9).text == "BOM"


def test_a_rebalance_with_records_in_hand_does_not_spin(tmp_path):
    from types import SimpleNamespace

    from nerbatch.consumer import REBALANCE_POLL_S

    options = ConsumeOptions(bootstrap_servers="127.0.0.1:9", topics=("in",), group="g", output_dir=str(tmp_path),
                             max_batch_ms=1, log_interval=3600)
    worker = Worker(options, SimpleNamespace(model_name="m@1"))
    worker._rebalancing = True  # partitions revoked, the new assignment not there yet
    timeouts = []

    def poll(timeout_s, max_records):
        timeouts.append(timeout_s)
        if len(timeouts) == 20:
            worker.stop()
        # the first poll brings records, which must wait in hand for the assignment
        return {("in", 0): [SimpleNamespace(offset=0)]} if len(timeouts) == 1 else {}

    worker._poll = poll
    worker._loop()
    assert len(worker._hand) == 1 and min(timeouts[1:]) >= REBALANCE_POLL_S


def test_options_refuse_what_cannot_work(monkeypatch, tmp_path):
    base = dict(bootstrap_servers="127.0.0.1:9", topics=("in",), group="g")
    bad = [
        (dict(output_dir=str(tmp_path)), None),  # fine
        (dict(), "nowhere to write"),
        (dict(output_topic="out"), "would vanish"),
        (dict(output_topic="out", dead_letter_topic="dlq", outcomes=True), "outcome files go next to the parquet"),
        (dict(output_topic="out", output_dir=str(tmp_path), exactly_once=True), "parquet files cannot join"),
        (dict(output_topic="in", dead_letter_topic="dlq"), "also an input topic"),
        (dict(output_dir=str(tmp_path), security_protocol="SASL_SSL", sasl_mechanism="PLAIN",
              sasl_username="u"), "NERBATCH_KAFKA_PASSWORD"),
        (dict(output_dir=str(tmp_path), keep_fields=("label",)), "collides"),
        (dict(output_dir=str(tmp_path), bootstrap_servers="127.0.0.1:notaport"), "is not HOST:PORT"),
        (dict(output_dir=str(tmp_path), bootstrap_servers="127.0.0.1:99999"), "is not HOST:PORT"),
        (dict(output_dir=str(tmp_path), bootstrap_servers=" , "), "is not HOST:PORT"),
        (dict(output_dir=str(tmp_path), bootstrap_servers="[::1]:9092,kafka-2:9092"), None),
        (dict(output_dir=str(tmp_path), id_field=""), "--id-field must be a non-empty field name"),
        (dict(output_dir=str(tmp_path), text_field=""), "--text-field must be a non-empty field name"),
        (dict(output_dir=str(tmp_path), transactional_id="tx"), "only with --exactly-once"),
        (dict(output_dir=str(tmp_path), metrics_host="0.0.0.0"), "--metrics-host is used only with --metrics-port"),
        (dict(output_dir=str(tmp_path), metrics_host="0.0.0.0", metrics_port=0), None),
        (dict(output_dir=str(tmp_path), max_message_bytes=1023), "max message bytes must be at least 1024"),
        (dict(output_dir=str(tmp_path), max_message_bytes=1024), None),
        # Kafka's protocol carries these as int32: kafka-python failed to pack a larger one and retried for ever
        (dict(output_dir=str(tmp_path), max_poll_interval_ms=2**31), "max poll interval ms must be at most 2147483647"),
        (dict(output_dir=str(tmp_path), session_timeout_ms=2**31), "session timeout ms must be at most 2147483647"),
        (dict(output_dir=str(tmp_path), transaction_timeout_ms=2**31), "transaction timeout ms must be at most"),
        (dict(output_dir=str(tmp_path), max_poll_interval_ms=2**31 - 1, session_timeout_ms=2**31 - 1), None),
        # security settings that would be ignored, or fail every connection
        (dict(output_dir=str(tmp_path), sasl_username="u"), "SASL settings need security protocol SASL_"),
        (dict(output_dir=str(tmp_path), ssl_cafile=str(SAMPLE)), "ssl cafile needs security protocol SSL or "
                                                                  "SASL_SSL, not PLAINTEXT: the connection would not"),
        (dict(output_dir=str(tmp_path), security_protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER",
              sasl_username="u"), "SASL mechanism must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, got 'OAUTHB"),
        (dict(output_dir=str(tmp_path), security_protocol="SASL_SSL", sasl_mechanism="plain",
              sasl_username="u"), "got 'plain'"),
        (dict(output_dir=str(tmp_path), security_protocol="SSL", ssl_cafile=str(SAMPLE)),
         "ssl cafile '.*gmb_sample.csv' cannot be used for TLS"),
        (dict(output_dir=str(tmp_path), security_protocol="SSL", ssl_keyfile=str(SAMPLE)), "ssl keyfile needs ssl certfile"),
        (dict(output_dir=str(tmp_path), security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN", sasl_username="u",
              sasl_password_env="NERBATCH_TEST_LATIN1_PASSWORD"), "NERBATCH_TEST_LATIN1_PASSWORD is not valid UTF-8"),
    ]
    monkeypatch.setenv("NERBATCH_TEST_LATIN1_PASSWORD", "p\udce4ss")  # b"p\xe4ss" from a latin-1 environment
    for extra, message in bad:
        options = ConsumeOptions(**{**base, **extra})
        if message is None:
            options.validate()
            continue
        with pytest.raises(NerbatchError, match=message):  # ConsumeConfigError, or OutputError for fields
            options.validate()
    with pytest.raises(ConsumeConfigError, match="exactly-once needs an output topic"):
        ConsumeOptions(**base, dead_letter_topic="dlq", output_dir=str(tmp_path), exactly_once=True).validate()
    monkeypatch.setenv("NERBATCH_KAFKA_PASSWORD", "s3cret")
    options = ConsumeOptions(**base, output_dir=str(tmp_path), security_protocol="SASL_SSL",
                             sasl_mechanism="SCRAM-SHA-512", sasl_username="u", **_tls_files(tmp_path))
    options.validate()
    assert options.client_config()["sasl_plain_password"] == "s3cret"
    assert "s3cret" not in repr(options)

    from typer.testing import CliRunner

    from nerbatch.cli import app

    result = CliRunner().invoke(app, ["consume", "-b", "127.0.0.1:9", "-t", "in", "-g", "g",
                                      "--output-topic", "out"])
    assert result.exit_code == 2 and "would vanish" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(app, ["consume", "-b", "127.0.0.1:9", "-t", "in", "-g", "g",
                                      "--output-dir", str(tmp_path), "--metrics-host", "0.0.0.0"])
    assert result.exit_code == 2 and "--metrics-host is used only with --metrics-port" in result.output


@pytest.mark.parametrize("name, reason", [
    ("file.txt/parts", "cannot create output folder {folder!r}: {parent!r} is not a folder"),
    ("x" * 300, "cannot write the output folder {folder!r}: File name too long"),
])
def test_an_output_folder_that_cannot_be_created_is_refused_before_consuming(tiny_pipeline, tmp_path, name, reason):
    # Before, a name too long for the file system failed the worker with a traceback from
    # os.makedirs, and a folder whose parts could not be written was retried forever.
    from typer.testing import CliRunner

    from nerbatch.cli import app

    (tmp_path / "file.txt").write_text("in the way")
    folder = str(tmp_path / name)
    reason = reason.format(folder=folder, parent=str(tmp_path / "file.txt"))
    options = ConsumeOptions(bootstrap_servers="127.0.0.1:9", topics=("in",), group="g", output_dir=folder)
    with pytest.raises(NerbatchError, match=re.escape(reason)):
        Worker(options, tiny_pipeline).run()
    result = CliRunner().invoke(app, ["consume", "-b", "127.0.0.1:9", "-t", "in", "-g", "g", "--output-dir", folder,
                                      "--model", str(tmp_path / "no-model")])  # refused before the model loads
    assert (result.exit_code, result.output) == (2, f"nerbatch: error: {reason}\n")


def test_a_check_of_the_output_folder_writes_and_removes_a_file_in_it(tmp_path):
    folder = tmp_path / "new" / "parts"
    check_writable_folder(folder.parent)
    check_writable_folder(folder)
    assert folder.is_dir() and list(folder.iterdir()) == []
    with pytest.raises(OutputError, match="it is not a folder"):
        check_writable_folder(SAMPLE)


@pytest.mark.parametrize("secret", ["plain-secret", "ab'cd", 'ab"cd', "a'b\"c", "pé\\ß-€", "tab\there"])
def test_the_log_filter_blanks_the_password_however_a_record_writes_it(secret):
    import logging

    from nerbatch.cli import _WorkerLogFilter

    shown = _WorkerLogFilter(show_kafka=True, secret=secret)
    payload = b"user\x00user\x00" + secret.encode() + b"\x00"
    for value in (secret, secret.encode(), bytearray(payload), payload + b'"', {"sasl_plain_password": secret}):
        record = logging.LogRecord("kafka.protocol.parser", logging.DEBUG, __file__, 1, "Send: %r", (value,), None)
        assert shown.filter(record)
        message = record.getMessage()
        assert "***" in message and not any(form in message for form in ("ab", "b\"c", "p\\xc3", "pé", "there",
                                                                          "secret")), message
    own = logging.LogRecord("nerbatch.consumer", logging.INFO, __file__, 1, "attempt 1 at 127.0.0.1", None, None)
    assert _WorkerLogFilter(show_kafka=True, secret="1").filter(own) and own.getMessage() == "attempt 1 at 127.0.0.1"
    hidden = _WorkerLogFilter(show_kafka=False, secret=None)
    assert not hidden.filter(logging.LogRecord("kafka.conn", logging.WARNING, __file__, 1, "x", None, None))
    assert hidden.filter(logging.LogRecord("nerbatch.consumer", logging.INFO, __file__, 1, "x", None, None))


def test_bootstrap_failures_reach_their_own_worker_whatever_the_logging_setup(monkeypatch):
    import logging

    from kafka.errors import KafkaConnectionError, SaslAuthenticationFailedError

    from nerbatch.consumer import _BOOTSTRAP_LOG, _BootstrapFailures

    logger = logging.getLogger("kafka.net.manager")
    monkeypatch.setattr(logging, "logThreads", False)  # records then name no thread
    monkeypatch.setattr(logger, "disabled", True)  # as logging.config.dictConfig leaves a library's logger
    logger.setLevel(logging.ERROR)  # as an application hiding kafka-python's warnings does
    mine, other, twin_a, twin_b = (_BootstrapFailures(c) for c in ("w1", "w2", "same", "same"))
    mine.thread = threading.get_ident()

    def log(reason, thread_name=None):
        def emit():
            logger.warning("Bootstrap connection to %s failed: %s (backoff %.2f secs)", "bootstrap-0", reason, 1.0)
        if thread_name is None:
            return emit()
        thread = threading.Thread(target=emit, name=thread_name)
        thread.start()
        thread.join()

    refusal, dropped, other_reason = (SaslAuthenticationFailedError("bad password"),
                                      KafkaConnectionError("socket disconnected"), KafkaConnectionError("refused"))
    try:
        for watcher in (mine, other, twin_a, twin_b):
            _BOOTSTRAP_LOG.watch(watcher)
        log(refusal)
        log(dropped)  # the broker's next answer: it must not hide the refusal
        log(other_reason, "kafka-io-w2")
        log(other_reason, "kafka-io-same")  # two workers with one client id: neither can tell whose it is
        logger.setLevel(logging.INFO)  # the application changes its mind while workers run
    finally:
        for watcher in (mine, other, twin_a, twin_b):
            _BOOTSTRAP_LOG.unwatch(watcher)
    assert mine.take() is refusal and mine.take() is None
    assert other.take() is other_reason and twin_a.take() is None and twin_b.take() is None
    assert logger.level == logging.INFO and logger.disabled and not logger.filters
    logger.setLevel(logging.NOTSET)


def _tls_files(folder: Path) -> dict:
    """A self-signed certificate and its key (PEM), as a client presents them; it is its own CA."""
    cert, key = folder / "client.pem", folder / "client.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=nerbatch",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return {"ssl_cafile": str(cert), "ssl_certfile": str(cert), "ssl_keyfile": str(key)}


# --------------------------------------------------------------------------- against the broker


def test_end_to_end_topic_parquet_and_dead_letters(kafka_bootstrap, kafka_admin, kafka_topic_factory, pipeline,
                                                   tmp_path):
    source, out, dlq = kafka_topic_factory(3), kafka_topic_factory(3), kafka_topic_factory(1)
    group = _uid("e2e")
    good = _docs(150, "e2e")
    poison = [
        ("p-json", b'{"id": "bad-json", "text": '),
        ("p-notext", b'{"id": "no-text", "body": "where is the text"}'),
        ("p-big", json.dumps({"id": "too-big", "text": "word " * 2000}).encode()),
        ("p-array", b'["not", "an", "object"]'),
        ("p-utf8", b'{"id": "bad-utf8", "text": "caf\xe9"}'),
        ("p-empty", b""),
    ]
    messages = list(good)
    for i, (key, value) in enumerate(poison):  # spread among the good ones
        messages.insert(10 + 25 * i, (key, value, [("trace", f"t{i}".encode())]))
    _produce(kafka_bootstrap, source, messages)

    worker_pipeline = _PlaceNames(pipeline)
    folder = tmp_path / "parts"
    options = ConsumeOptions(
        bootstrap_servers=kafka_bootstrap, topics=(source,), group=group, output_topic=out,
        output_dir=str(folder), dead_letter_topic=dlq, max_batch_docs=40, max_batch_ms=300,
        keep_fields=("lang",), max_doc_chars=5000, part_max_seconds=1.0, outcomes=True, idle_timeout=4.0,
        log_interval=1.0, metrics_port=0,
    )
    worker = Worker(options, worker_pipeline)
    thread, box = _start(worker)
    _wait(worker.running.is_set, "the worker to connect")
    host, port = worker.metrics_address
    _wait(lambda: worker.report.docs_in == len(messages), "every message to be processed")
    metrics = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10).read().decode()
    report = _finish(thread, box)

    # micro-batches, never one document at a time
    assert max(worker_pipeline.calls) > 1 and all(n <= 40 for n in worker_pipeline.calls)
    assert (report.docs_in, report.docs_ok, report.docs_failed) == (156, 150, 6)
    assert report.stopped_by == "idle_timeout"

    # one output message per good document, keyed by its id
    outputs = _read_all(kafka_bootstrap, out, 3)
    assert sorted(r.key.decode() for r in outputs) == sorted(k for k, _ in good)
    values = [json.loads(r.value) for r in outputs]
    assert all(v["doc_id"] == r.key.decode() and v["model"] == pipeline.model_name for v, r in zip(values, outputs))
    assert all(set(v["source"]) == {"topic", "partition", "offset"} and v["source"]["topic"] == source
               for v in values)
    with_entities = [v for v in values if v["entities"]]
    assert 0 < len(with_entities) < len(values)  # "entities": [] is the no-entities outcome
    for v in with_entities:
        for e in v["entities"]:
            assert e["doc_id"] == v["doc_id"] and e["lang"] == "en" and e["label"] in {"geo", "per", "org", "gpe",
                                                                                     "tim", "art", "eve", "nat"}

    # poison: dead-lettered with the original payload, key and headers, never blocking the others
    dead = _read_all(kafka_bootstrap, dlq, 1)
    assert sorted(r.value for r in dead) == sorted(v for _, v in poison)
    for r in dead:
        headers = dict(r.headers)
        kind = headers["nerbatch-reason-kind"].decode()
        assert kind in {"malformed_json", "missing_text", "oversized", "not_object", "invalid_utf8"}
        assert headers["nerbatch-reason"].decode().startswith(kind + ":")
        assert headers["nerbatch-source-topic"].decode() == source
        src = (int(headers["nerbatch-source-partition"]), int(headers["nerbatch-source-offset"]))
        assert headers["trace"].startswith(b"t") and r.key.decode().startswith("p-")
        if r.key == b"p-notext":
            assert headers["nerbatch-doc-id"] == b"no-text" and kind == "missing_text"
        assert src[0] in range(3)

    # parquet: the parts cover every offset; their rows are exactly the entity records of the topic
    ends = _end_offsets(kafka_bootstrap, source, 3)
    parts = _parts(folder)
    _check_coverage(parts, ends)
    assert sum(p["docs"] for p in parts) == len(messages)
    assert all(p["meta"]["group"] == group and p["meta"]["model"] == pipeline.model_name for p in parts)
    assert os.path.basename(parts[0]["path"]) == part_name(source, parts[0]["partition"], parts[0]["first"],
                                                           parts[0]["writer"])
    rows = [row for p in parts for row in pq.read_table(p["path"]).to_pylist()]
    topic_rows = [e for v in values for e in v["entities"]]
    key = lambda e: (e["doc_id"], e["start"], e["end"], e["label"])  # noqa: E731
    assert sorted(map(key, rows)) == sorted(map(key, topic_rows))
    assert sorted(map(key, pq.read_table(folder).to_pylist())) == sorted(map(key, rows))  # the folder is a dataset
    errors = [json.loads(line) for f in glob.glob(str(folder / "_errors-*.jsonl")) for line in open(f)]
    for e in errors:
        validate_record(e, ERROR_SCHEMA_NAME)
    assert sorted(e["position"] for e in errors) == sorted(
        int(dict(r.headers)["nerbatch-source-offset"]) for r in dead)

    # outcomes: one row per offset of each part, agreeing with the rows, the topic and the errors
    outcomes = []
    for p in parts:
        table = pq.read_table(_side_file(p, "outcomes"))
        assert table.column("position").to_pylist() == list(range(p["first"], p["last"] + 1))
        assert set(table.column("source").to_pylist()) == {f"{source}/{p['partition']}"}
        outcomes += table.to_pylist()
    for row in outcomes:
        validate_record(row, OUTCOME_SCHEMA_NAME)
    assert sorted(r["position"] for r in outcomes if r["outcome"] == "failed") == sorted(
        e["position"] for e in errors)
    entity_counts = {v["doc_id"]: len(v["entities"]) for v in values}
    assert {r["doc_id"]: r["entities"] for r in outcomes if r["outcome"] != "failed"} == entity_counts
    assert {r["outcome"] for r in outcomes} == {"entities", "no_entities", "failed"}

    # every offset committed, nothing left behind
    assert _committed(kafka_admin, group, source) == ends
    assert "nerbatch_consume_messages_total 156.0" in metrics
    resident = re.search(r"^process_resident_memory_bytes (\S+)$", metrics, re.M)
    assert resident and float(resident.group(1)) > 50 * 2**20  # the worker's own process, model loaded
    assert 'nerbatch_consume_documents_failed_total{reason="malformed_json"} 2.0' in metrics


def test_record_size_bound_holds_at_the_brokers_limit(kafka_bootstrap, kafka_topic_factory):
    from kafka import KafkaProducer

    from nerbatch.consumer import _record_bytes

    limit = 20_000
    topic = kafka_topic_factory(1, configs={"max.message.bytes": str(limit)})
    key, headers = b"k" * 40, [("nerbatch-reason", b"oversized: x" * 20), ("trace", b"t1")]
    value = b"v" * (limit - _record_bytes(key, b"", headers))
    assert _record_bytes(key, value, headers) == limit
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", max_request_size=4 * limit)
    try:
        producer.send(topic, key=key, value=value, headers=headers).get(timeout=30)  # the broker takes it
    finally:
        producer.close(timeout=30)


def test_messages_at_the_topic_size_limit_never_stall_a_partition(kafka_bootstrap, kafka_admin, kafka_topic_factory,
                                                                  pipeline):
    limit = {"max.message.bytes": "20000"}
    source, out, dlq = kafka_topic_factory(1), kafka_topic_factory(1, configs=limit), kafka_topic_factory(1, configs=limit)
    group = _uid("limit")
    good = _docs(20, "lim")
    big = ("big", json.dumps({"id": "big", "text": "Paris is large. " * 2100}).encode(),
           [("trace", b"x" * 100)])  # 33 KB: over max_doc_chars, and its copy must be cut to fit
    _produce(kafka_bootstrap, source, [good[0], big, *good[1:]])
    options = ConsumeOptions(bootstrap_servers=kafka_bootstrap, topics=(source,), group=group, output_topic=out,
                             dead_letter_topic=dlq, max_message_bytes=20_000, max_doc_chars=10_000,
                             max_batch_docs=8, idle_timeout=3.0, metrics_port=0, max_backoff_s=1.0)
    worker = Worker(options, pipeline)
    thread, box = _start(worker)
    _wait(worker.running.is_set, "the worker to connect")
    host, port = worker.metrics_address
    _wait(lambda: worker.report.docs_in == 21, "every message to be processed")
    metrics = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10).read().decode()
    report = _finish(thread, box)
    assert (report.docs_ok, report.docs_failed, report.batch_failures) == (20, 1, 0)
    [dead] = _read_all(kafka_bootstrap, dlq, 1)
    headers = dict(dead.headers)
    assert headers["nerbatch-reason-kind"] == b"oversized" and headers["trace"] == b"x" * 100
    assert int(headers["nerbatch-payload-truncated"]) == len(big[1]) and big[1].startswith(dead.value)
    assert len(_read_all(kafka_bootstrap, out, 1)) == 20
    assert _committed(kafka_admin, group, source) == {0: 21}
    # the delay from message to commit is observed in this mode too (topic output only)
    assert "nerbatch_consume_latency_seconds_count 21.0" in metrics


def _produce_unchecked(bootstrap: str, topic: str, records, partition: int = 0) -> None:
    """Records that kafka-python's ``send`` refuses but the protocol and other clients (Java, librdkafka)
    allow, such as neither key nor value: appended to a producer batch directly."""
    from kafka import KafkaProducer, TopicPartition

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        producer.partitions_for(topic)  # metadata, as send() would fetch it
        futures = [producer._accumulator.append(TopicPartition(topic, partition), int(time.time() * 1000), key, value,
                                                headers)[0] for key, value, headers in records]
        producer._sender.wakeup()
        producer.flush(timeout=30)
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close(timeout=30)


def test_dead_letters_the_producer_would_refuse_still_go_out_and_fit(kafka_bootstrap, kafka_admin,
                                                                     kafka_topic_factory, pipeline):
    limit = {"max.message.bytes": "5000"}
    source, out, dlq = kafka_topic_factory(1), kafka_topic_factory(1, configs=limit), kafka_topic_factory(1, configs=limit)
    group = _uid("unsendable")
    good = lambda n: json.dumps({"id": f"ok-{n}", "text": "Angela Merkel visited Paris."}).encode()  # noqa: E731
    long_id = "x" * 6000
    _produce_unchecked(kafka_bootstrap, source, [
        (None, good(0), []),
        (None, None, []),  # a tombstone without a key
        (b"badjson", b"{not json", [("trace", b"t")]),
        (b"k" * 6000, json.dumps({"id": long_id, "body": "no text"}).encode(), [("trace", b"t")]),  # id over the limit
        (None, good(1), []),
    ])
    options = ConsumeOptions(bootstrap_servers=kafka_bootstrap, topics=(source,), group=group, output_topic=out,
                             dead_letter_topic=dlq, max_message_bytes=5000, idle_timeout=3.0, max_backoff_s=1.0)
    report = _finish(*_start(Worker(options, pipeline)))
    assert (report.docs_ok, report.docs_failed, report.batch_failures) == (2, 3, 0)
    assert _committed(kafka_admin, group, source) == {0: 5}
    tombstone, bad_json, long = _read_all(kafka_bootstrap, dlq, 1)
    assert (tombstone.key, tombstone.value) == (None, b"")
    assert dict(tombstone.headers)["nerbatch-source-offset"] == b"1"
    assert (bad_json.key, bad_json.value, dict(bad_json.headers)["trace"]) == (b"badjson", b"{not json", b"t")
    headers = dict(long.headers)
    payload = json.dumps({"id": long_id, "body": "no text"}).encode()
    assert headers["nerbatch-reason-kind"] == b"missing_text" and long.key is None
    assert long.value and payload.startswith(long.value) and headers["nerbatch-payload-truncated"] == b"6029"
    assert (headers["nerbatch-doc-id-dropped"], headers["nerbatch-key-dropped"]) == (b"6000", b"6000")
    assert "nerbatch-doc-id" not in headers and "trace" not in headers
    assert len(_read_all(kafka_bootstrap, out, 1)) == 2


def test_a_null_header_value_is_dead_lettered_empty(pipeline):
    # The protocol allows a null header value and kafka-python reads one, but its producer cannot send it.
    options = ConsumeOptions(bootstrap_servers="127.0.0.1:9", topics=("in",), group="g", output_topic="out",
                             dead_letter_topic="dlq")
    record = SimpleNamespace(topic="in", partition=0, offset=7, key=b"k", value=b"{not json",
                             headers=[("trace", None), ("span", b"s")])
    error = parse_document(record.value, source="in/0", position=7)
    topic, key, value, headers, _ = Worker(options, pipeline)._dead_letter(_Outcome(record, error=error))
    assert (topic, key, value) == ("dlq", b"k", b"{not json")
    assert headers[:2] == [("trace", b""), ("span", b"s")]
    assert all(isinstance(k, str) and isinstance(v, bytes) for k, v in headers)


def test_idle_metrics_connections_are_closed_while_scrapes_are_served(monkeypatch, capsys):
    import socket
    import urllib.request

    from prometheus_client import CollectorRegistry, Counter

    from nerbatch import consumer

    monkeypatch.setattr(consumer, "METRICS_REQUEST_TIMEOUT_S", 0.5)
    registry = CollectorRegistry()
    Counter("probe", "A probe.", registry=registry).inc()
    server = consumer._serve_metrics(registry, "127.0.0.1", 0)
    try:
        port = server.server_address[1]
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]  # never send a request
        assert "probe_total 1.0" in urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        for connection in idle:
            connection.settimeout(10)
            assert connection.recv(1) == b""  # closed by the server, its thread ended
            connection.close()
    finally:
        server.shutdown()
        server.server_close()
    assert "Traceback" not in capsys.readouterr().err  # a client that went quiet is no error


def test_the_metrics_server_answers_its_paths_only_and_head_like_get():
    import http.client

    from prometheus_client import CollectorRegistry, Counter

    from nerbatch import consumer

    registry = CollectorRegistry()
    Counter("probe", "A probe.", registry=registry).inc()
    server = consumer._serve_metrics(registry, "127.0.0.1", 0, stalled=lambda: None)

    def fetch(method: str, path: str) -> tuple[int, int, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
        try:
            connection.request(method, path)
            response = connection.getresponse()
            return response.status, int(response.getheader("Content-Length") or -1), response.read()
        finally:
            connection.close()

    try:
        for path in ("/metrics", "/"):
            status, length, body = fetch("GET", path)
            assert status == 200 and b"probe_total 1.0" in body and length == len(body)
        assert fetch("GET", "/healthz") == (200, 3, b"ok\n")
        for mistyped in ("/health", "/healthz/", "/metric"):  # a probe of a mistyped path must fail
            assert fetch("GET", mistyped)[0] == 404
        for path in ("/metrics", "/healthz"):
            status, length, body = fetch("HEAD", path)
            assert (status, body) == (200, b"") and length == len(fetch("GET", path)[2])
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("host, reason", [("a..b", "label empty or too long"), ("x" * 64 + ".example", "too long")])
def test_a_metrics_host_no_resolver_accepts_is_one_line(pipeline, host, reason):
    options = ConsumeOptions(bootstrap_servers="127.0.0.1:9", topics=("in",), group="g", output_topic="out",
                             dead_letter_topic="dlq", metrics_port=0, metrics_host=host)
    with pytest.raises(ConsumeConfigError, match=rf"cannot serve metrics on {re.escape(host)}:0: .*{reason}"):
        Worker(options, pipeline).run()


def test_a_dead_letter_fits_the_smallest_message_limit(pipeline):
    # Stripped of payload, key, doc id and the input's headers, a long reason still has to give way.
    topic = "t" * 249  # Kafka's longest topic name
    options = ConsumeOptions(bootstrap_servers="127.0.0.1:9", topics=(topic,), group="g", output_topic="out",
                             dead_letter_topic="dlq", max_message_bytes=MIN_MESSAGE_BYTES)
    options.validate()
    record = SimpleNamespace(topic=topic, partition=2_147_483_647, offset=9_223_372_036_854_775_807,
                             key=b"k" * 2000, value=b"v" * 5000, headers=[("trace", b"t" * 2000)])
    reason = "missing_text: " + "é" * 2000
    error = DocumentError(topic, 7, "d" * 2000, reason, "")
    _, key, value, headers, _ = Worker(options, pipeline)._dead_letter(_Outcome(record, error=error))
    assert _record_bytes(key, value, headers) <= MIN_MESSAGE_BYTES
    found = dict(headers)
    cut = found["nerbatch-reason"].decode("utf-8")  # cut on a character boundary
    assert len(found["nerbatch-reason"]) >= 250 and reason.startswith(cut)
    assert found["nerbatch-reason-truncated"] == str(len(reason.encode())).encode()
    assert found["nerbatch-reason-kind"] == b"missing_text" and found["nerbatch-source-topic"] == topic.encode()
    assert (key, found["nerbatch-key-dropped"], found["nerbatch-payload-truncated"]) == (None, b"2000", b"5000")
    assert len(value) < 4 and record.value.startswith(value)  # what a cut character left, at most


def test_transactional_input_is_consumed_to_its_end(kafka_bootstrap, kafka_admin, kafka_topic_factory, pipeline):
    # Each transaction ends with a commit marker that takes an offset and that no poll returns.
    from kafka import KafkaProducer

    source, out = kafka_topic_factory(1), kafka_topic_factory(1)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=_uid("txn-input"))
    try:
        producer.init_transactions()
        for n in range(3):
            producer.begin_transaction()
            producer.send(source, value=json.dumps({"id": f"t{n}", "text": "Angela Merkel visited Paris."}).encode())
            producer.commit_transaction()
    finally:
        producer.close(timeout=30)
    group = _uid("txn-input")
    options = ConsumeOptions(bootstrap_servers=kafka_bootstrap, topics=(source,), group=group, output_topic=out,
                             dead_letter_topic=out, idle_timeout=2.0, max_backoff_s=1.0)
    worker = Worker(options, pipeline)
    report = _finish(*_start(worker), timeout=60)
    assert (report.docs_ok, report.stopped_by) == (3, "idle_timeout")
    # records at offsets 0, 2, 4; the commit follows the last record, before the last marker
    assert worker.lag() == 0 and _committed(kafka_admin, group, source) == {0: 5}


def test_an_open_input_transaction_does_not_hold_off_the_idle_timeout(kafka_bootstrap, kafka_topic_factory,
                                                                       pipeline):
    """A read_committed reader cannot read past an open transaction: its records are no lag, and a run
    that has read all it can ends by --idle-timeout (a fetch's high watermark counts them)."""
    from kafka import KafkaProducer

    source, out = kafka_topic_factory(1), kafka_topic_factory(1)
    _produce(kafka_bootstrap, source, _docs(3, "before-txn"))
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=_uid("txn-open"))
    try:
        producer.init_transactions()
        producer.begin_transaction()
        producer.send(source, value=json.dumps({"id": "open", "text": "Angela Merkel visited Paris."}).encode())
        producer.flush(timeout=30)
        options = ConsumeOptions(bootstrap_servers=kafka_bootstrap, topics=(source,), group=_uid("txn-open"),
                                 output_topic=out, dead_letter_topic=out, idle_timeout=2.0, max_backoff_s=1.0)
        worker = Worker(options, pipeline)
        thread, box = _start(worker)
        thread.join(30)
        if thread.is_alive():
            worker.stop()
        report = _finish(thread, box)
        assert (report.docs_ok, report.stopped_by) == (3, "idle_timeout")
    finally:
        with contextlib.suppress(Exception):
            producer.abort_transaction()
        producer.close(timeout=30)


class _HeldPipeline:
    """The real pipeline; its first call waits until ``release`` is set (a batch outlasting the poll interval)."""

    def __init__(self, pipeline) -> None:
        self._pipeline = pipeline
        self.held, self.release = threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self._pipeline, name)

    def annotate(self, documents):
        if not self.held.is_set():
            self.held.set()
            self.release.wait(WAIT_S)
        return self._pipeline.annotate(documents)


class _WriteHeldWorker(Worker):
    """A worker paused while it writes its first part, after its ownership check passed."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.held, self.release = threading.Event(), threading.Event()

    def _write_part(self, *args, **kwargs):
        if not self.held.is_set():
            self.held.set()
            self.release.wait(WAIT_S)
        return super()._write_part(*args, **kwargs)


@pytest.mark.parametrize("held_in, instance, rolled_by", [
    ("batch", None, "rows"),  # before its ownership check: it writes nothing
    ("write", None, "rows"),  # after it: its commit is refused and it removes what it wrote
    ("write", "w1", "rows"),  # the same for a static member, whose commit is refused as fenced
    ("write", "w2", "time"),  # the same when the part is rolled by its age, between batches
])
def test_a_worker_the_group_moved_on_from_leaves_the_new_owners_part_whole(
        kafka_bootstrap, kafka_admin, kafka_topic_factory, pipeline, tmp_path, held_in, instance, rolled_by):
    source, dlq = kafka_topic_factory(1), kafka_topic_factory(1)
    group, folder = _uid("zombie"), tmp_path / "parts"
    docs = _docs(10, "z")
    _produce(kafka_bootstrap, source, docs[:5])

    def options(**extra):
        return ConsumeOptions(bootstrap_servers=kafka_bootstrap, topics=(source,), group=group,
                              output_dir=str(folder), dead_letter_topic=dlq, max_batch_ms=200, max_backoff_s=1.0,
                              outcomes=True, group_instance_id=instance,
                              **(dict(part_max_rows=1, part_max_seconds=600) if rolled_by == "rows"
                                 else dict(part_max_rows=1000, part_max_seconds=1)),
                              **extra)

    stale_options = options(max_poll_interval_ms=6000)  # held past 6 s: the group drops it
    if held_in == "batch":
        held = _HeldPipeline(pipeline)
        stale = Worker(stale_options, held)
    else:
        stale = held = _WriteHeldWorker(stale_options, pipeline)
    stale_run = _start(stale)
    _wait(held.held.is_set, "the first worker to hold its part")
    _produce(kafka_bootstrap, source, docs[5:])
    owner = Worker(options(), pipeline)
    owner_run = _start(owner)
    try:
        _wait(lambda: _committed(kafka_admin, group, source) == {0: 10}, "the new owner to commit all ten")
        held.release.set()  # the dropped worker wakes up with its part of offsets 0-4
        if instance:  # fenced: it can never commit again, so it stops instead of retrying (and resending) for ever
            stale_run[0].join(WAIT_S)
        else:
            _wait(lambda: stale.report.batch_failures >= 1, "the dropped worker's part to be refused")
    finally:
        held.release.set()
        stale.stop()
        owner.stop()
    _finish(*owner_run)
    if instance:
        with pytest.raises(ConsumeConfigError, match=f"with this worker's --group-instance-id '{instance}'"):
            _finish(*stale_run)
        stale_report = stale.report
    else:
        stale_report = _finish(*stale_run)
    assert stale_report.parts == 0
    [part] = _parts(folder)  # the dropped worker's part neither replaced the owner's nor stayed beside it
    assert (part["first"], part["last"]) == (0, 9)
    assert pq.read_table(_side_file(part, "outcomes")).column("doc_id").to_pylist() == [key for key, _ in docs]
    assert sorted(os.listdir(folder)) == sorted(os.path.basename(p) for p in (part["path"],
                                                                              _side_file(part, "outcomes")))
    assert _committed(kafka_admin, group, source) == {0: 10}


def _static_member(bootstrap: str, source: str, out: str, group: str, pipeline) -> tuple[Worker, tuple]:
    """A started worker with group instance id w1: a second one fences the first."""
    worker = Worker(ConsumeOptions(bootstrap_servers=bootstrap, topics=(source,), group=group, output_topic=out,
                                   dead_letter_topic=out, group_instance_id="w1", max_batch_ms=200,
                                   max_backoff_s=1.0), pipeline)
    return worker, _start(worker)


def _fenced_run_ended(first_run, second_run, bootstrap: str, out: str, docs) -> ConsumeReport:
    """The fenced worker stopped with its one-line error, the output holds each document once; the second
    worker's report."""
    with pytest.raises(ConsumeConfigError, match="with this worker's --group-instance-id 'w1'"):
        _finish(*first_run)
    report = _finish(*second_run)
    assert sorted(m.key.decode() for m in _read_all(bootstrap, out, 1)) == [key for key, _ in docs]
    return report


def test_an_idle_worker_another_member_fenced_stops_before_it_sends_again(kafka_bootstrap, kafka_admin,
                                                                          kafka_topic_factory, pipeline):
    """Only the fenced member's heartbeat learns of it; it used to wait without a word, then annotate and
    send the next input (which the member that fenced it sends too) before its commit was refused."""
    source, out = kafka_topic_factory(1), kafka_topic_factory(1)
    group = _uid("fenced-idle")
    docs = _docs(5, "fi")
    _produce(kafka_bootstrap, source, docs[:2])
    first, first_run = _static_member(kafka_bootstrap, source, out, group, pipeline)
    _wait(lambda: _committed(kafka_admin, group, source) == {0: 2}, "the first worker's commit")
    second, second_run = _static_member(kafka_bootstrap, source, out, group, pipeline)
    try:
        first_run[0].join(WAIT_S)
        assert not first_run[0].is_alive(), "the fenced worker did not stop"
        _produce(kafka_bootstrap, source, docs[2:])
        _wait(lambda: _committed(kafka_admin, group, source) == {0: 5}, "the second worker's commit")
    finally:
        first.stop()
        second.stop()
    assert _fenced_run_ended(first_run, second_run, kafka_bootstrap, out, docs).docs_in == 3
    assert first.report.docs_in == 2


def test_a_worker_fenced_while_it_annotates_sends_nothing(kafka_bootstrap, kafka_admin, kafka_topic_factory,
                                                         pipeline):
    source, out = kafka_topic_factory(1), kafka_topic_factory(1)
    group = _uid("fenced-busy")
    docs = _docs(4, "fb")
    _produce(kafka_bootstrap, source, docs)
    held = _HeldPipeline(pipeline)
    first, first_run = _static_member(kafka_bootstrap, source, out, group, held)
    _wait(held.held.is_set, "the first worker to annotate")
    second, second_run = _static_member(kafka_bootstrap, source, out, group, pipeline)
    try:
        _wait(lambda: first._fenced.seen, "the first worker's heartbeat to learn it is fenced")
        held.release.set()
        first_run[0].join(WAIT_S)
        _wait(lambda: _committed(kafka_admin, group, source) == {0: 4}, "the second worker's commit")
    finally:
        held.release.set()
        first.stop()
        second.stop()
    assert _fenced_run_ended(first_run, second_run, kafka_bootstrap, out, docs).docs_in == 4
    assert first.report.produced == 0


def test_only_its_own_fencing_stops_a_worker():
    """Another client of the process may share the worker's client id, and so its IO thread."""
    from nerbatch.consumer import _Fenced

    def seen(instance_id, *records) -> bool:
        fenced = _Fenced("app", "g", instance_id)
        for msg, args in records:
            record = logging.LogRecord("kafka.coordinator.heartbeat", logging.ERROR, "base.py", 1, msg, args, None)
            thread = threading.Thread(target=fenced.see, args=(record,), name="kafka-io-app")
            thread.start()
            thread.join()
        return fenced.seen

    by_group = "Heartbeat failed for group %s due to fenced id error: %s"
    by_thread = "Heartbeat thread caught fenced group_instance_id %s error"
    assert seen("w1", (by_group, ("g", "w1"))) and seen("w1", (by_thread, ("w1",)))
    assert not seen("w1", (by_group, ("other-group", "w1")), (by_thread, ("i1",)), (by_group, ("g", "i1")))


def test_a_commit_refused_on_a_retry_after_the_broker_applied_it_keeps_its_parts(
        kafka_bootstrap, kafka_admin, kafka_topic_factory, pipeline, tmp_path):
    """kafka-python resends a commit whose reply was lost; a refusal of the resend does not undo the first."""
    import kafka.errors

    source, dlq = kafka_topic_factory(1), kafka_topic_factory(1)
    group, folder = _uid("applied"), tmp_path / "parts"
    _produce(kafka_bootstrap, source, _docs(5, "a"))
    worker = Worker(ConsumeOptions(bootstrap_servers=kafka_bootstrap, topics=(source,), group=group,
                                   output_dir=str(folder), dead_letter_topic=dlq, part_max_seconds=0.5, outcomes=True,
                                   idle_timeout=3.0, max_backoff_s=0.5), pipeline)
    real_commit, refused = worker._commit, []

    def applied_then_refused(offsets, timestamps=None, metadata=None):
        real_commit(offsets, timestamps, metadata)
        if metadata and not refused:
            refused.append(offsets)
            raise kafka.errors.CommitFailedError("the resent commit was refused")

    worker._commit = applied_then_refused
    _finish(*_start(worker))
    assert refused and _committed(kafka_admin, group, source) == {0: 5}
    [part] = _parts(folder)  # the only copy of offsets 0-4
    assert (part["first"], part["last"]) == (0, 4)
    assert pq.read_table(_side_file(part, "outcomes")).column("position").to_pylist() == list(range(5))


def test_parts_a_crash_left_uncommitted_are_removed_once_their_offsets_are_committed(
        kafka_bootstrap, kafka_admin, kafka_topic_factory, pipeline, tmp_path):
    source, dlq = kafka_topic_factory(1), kafka_topic_factory(1)
    group, folder = _uid("redo"), tmp_path / "parts"
    _produce(kafka_bootstrap, source, _docs(6, "r"))
    folder.mkdir()
    # What a worker killed between putting its parts in place and committing them leaves, and the part
    # of another partition and of committed offsets before them.
    left = [part_name(source, 0, 0, "0badf00d"), part_name(source, 0, 0, "0badf00d", "outcomes"),
            part_name(source, 0, 3, "0badf00d", "errors")]
    kept = [part_name(source, 1, 0, "0badf00d"), part_name(source + "-x", 0, 0, "0badf00d"), "notes.txt"]
    for name in left + kept:
        (folder / name).write_text("")
    options = ConsumeOptions(bootstrap_servers=kafka_bootstrap, topics=(source,), group=group, output_dir=str(folder),
                             dead_letter_topic=dlq, part_max_seconds=600, outcomes=True, idle_timeout=3.0,
                             max_backoff_s=1.0)
    _finish(*_start(Worker(options, pipeline)))
    new = sorted(set(os.listdir(folder)) - set(kept))
    assert len(new) == 2 and not set(new) & set(left), new
    meta = pq.read_metadata(folder / new[1]).metadata  # "_outcomes-..." sorts before "part-..."
    assert (meta[b"first_offset"], meta[b"last_offset"]) == (b"0", b"5")


def test_a_flood_of_failing_documents_rolls_parts_by_document_count(kafka_bootstrap, kafka_admin,
                                                                     kafka_topic_factory, pipeline, tmp_path):
    # Failures add no entity rows; counted by rows alone, their part held them all until the clock rolled it.
    source, folder, group = kafka_topic_factory(1), tmp_path / "parts", _uid("flood")
    _produce(kafka_bootstrap, source, [(f"bad-{n}", b"{broken " + b"x" * 1000) for n in range(45)]
                                      + [("ok", json.dumps({"id": "ok", "text": "Angela Merkel visited Paris."}).encode())])
    options = ConsumeOptions(bootstrap_servers=kafka_bootstrap, topics=(source,), group=group, output_dir=str(folder),
                             part_max_rows=10, part_max_seconds=600, max_batch_docs=5, outcomes=True,
                             idle_timeout=3.0, max_backoff_s=1.0)
    report = _finish(*_start(Worker(options, pipeline)))
    parts = _parts(folder)
    assert (report.docs_failed, report.docs_ok) == (45, 1)
    assert [p["docs"] for p in parts] == [10, 10, 10, 10, 6]
    _check_coverage(parts, {0: 46})
    outcomes = pq.read_table(_side_file(parts[-1], "outcomes")).to_pylist()
    assert [(r["position"], r["outcome"]) for r in outcomes][-2:] == [(44, "failed"), (45, "entities")]
    assert outcomes[-1]["doc_id"] == "ok" and outcomes[-1]["entities"] == 2
    assert _committed(kafka_admin, group, source) == {0: 46}


def test_parts_roll_together_once_they_hold_part_max_rows_documents(pipeline, tmp_path):
    from kafka.structs import TopicPartition

    from nerbatch.consumer import _PartitionState, _Part

    options = ConsumeOptions(bootstrap_servers="127.0.0.1:9", topics=("in",), group="g", output_dir=str(tmp_path),
                             part_max_rows=10)
    worker = Worker(options, pipeline)
    tps = [TopicPartition("in", p) for p in range(4)]

    def parts(*held):  # (documents, entity rows) per partition
        worker._states = {tp: _PartitionState(part=_Part(0, 0, 0.0, rows=rows, docs=docs))
                          for tp, (docs, rows) in zip(tps, held)}
        return worker._parts_full()

    assert parts((3, 9), (3, 0), (3, 0), (0, 0)) == []
    assert parts((3, 0), (3, 0), (3, 0), (1, 0)) == tps  # ten documents among four partitions
    assert parts((2, 10), (1, 0)) == tps[:1]  # a part full of entity rows rolls alone


def _parts_fail(monkeypatch):
    """Writing a parquet part fails as on a full disk; its side files are written first."""
    from nerbatch import sinks

    real = sinks.ParquetSink

    def sink(path, *args, **kwargs):
        if os.path.basename(path).startswith("part-"):
            raise OSError(28, "No space left on device")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(sinks, "ParquetSink", sink)


def test_parts_that_cannot_be_written_back_off_leave_no_side_files_and_mark_the_run_unfinished(
        kafka_bootstrap, kafka_admin, kafka_topic_factory, pipeline, tmp_path, monkeypatch, caplog):
    source, folder, group = kafka_topic_factory(1), tmp_path / "parts", _uid("diskfull")
    _produce(kafka_bootstrap, source, _docs(6, "full") + [("bad", b"{broken")])
    _parts_fail(monkeypatch)
    options = ConsumeOptions(bootstrap_servers=kafka_bootstrap, topics=(source,), group=group, output_dir=str(folder),
                             outcomes=True, part_max_seconds=0.2, max_backoff_s=1.0)
    worker = Worker(options, pipeline)
    run = _start(worker)
    caplog.set_level(logging.WARNING, logger="nerbatch.consumer")
    _wait(lambda: worker.report.batch_failures >= 3, "three failed part writes")
    worker.stop()
    report = _finish(*run)
    # each failed roll is one more consecutive failure, not attempt 1 again after a batch that only buffers
    attempts = [int(m) for m in re.findall(r"\(attempt (\d+)\)", caplog.text)]
    assert attempts[:3] == [1, 2, 3], caplog.text
    assert report.unfinished and report.parts == 0
    assert sorted(os.listdir(folder)) == []  # no _errors or _outcomes file for a part that is not there
    assert _committed(kafka_admin, group, source) in ({}, {0: 0})

    monkeypatch.undo()
    options = replace(options, max_docs=7)
    report = _finish(*_start(Worker(options, pipeline)))
    assert (report.stopped_by, report.unfinished, report.parts) == ("max_docs", False, 1)
    assert _committed(kafka_admin, group, source) == {0: 7}


def test_a_roll_that_fails_for_one_partition_leaves_no_copy_of_the_others_parts(
        kafka_bootstrap, kafka_topic_factory, pipeline, tmp_path, monkeypatch):
    """Both parts roll together; the one written before the failure is removed, or each retry adds a copy."""
    from nerbatch import sinks

    good, bad, folder = kafka_topic_factory(1), kafka_topic_factory(1), tmp_path / "parts"
    _produce(kafka_bootstrap, good, _docs(4, "good"))
    _produce(kafka_bootstrap, bad, _docs(4, "bad"))
    real = sinks.ParquetSink

    def sink(path, *args, **kwargs):
        if os.path.basename(path).startswith(f"part-{bad}-"):
            raise OSError(36, "File name too long")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(sinks, "ParquetSink", sink)
    options = ConsumeOptions(bootstrap_servers=kafka_bootstrap, topics=(good, bad), group=_uid("onebad"),
                             output_dir=str(folder), outcomes=True, part_max_seconds=0.2, max_backoff_s=0.5,
                             max_batch_docs=8, max_batch_ms=2000)
    worker = Worker(options, pipeline)
    run = _start(worker)
    _wait(lambda: worker.report.batch_failures >= 3, "three failed rolls")
    worker.stop()
    _finish(*run)
    assert os.listdir(folder) == []


def test_failed_work_the_group_moved_elsewhere_leaves_the_run_finished(pipeline, tmp_path):
    from kafka.structs import TopicPartition

    options = ConsumeOptions(bootstrap_servers="127.0.0.1:9", topics=("in",), group="g", output_dir=str(tmp_path))
    worker = Worker(options, pipeline)
    failed, kept = TopicPartition("in", 0), TopicPartition("in", 1)
    worker._rewind({failed, kept})  # a part write failed
    worker._failures = 2
    worker._drop({failed}, "revoked")  # one partition now belongs to another worker
    assert worker._failed_uncommitted == {kept} and worker._failures == 2
    worker._drop({kept}, "revoked")
    assert worker._failed_uncommitted == set() and worker._failures == 0  # nothing of it is this worker's to redo


def test_idle_timeout_ends_a_run_only_when_the_broker_answers(kafka_bootstrap, kafka_topic_factory, pipeline,
                                                               monkeypatch):
    source, out = kafka_topic_factory(1), kafka_topic_factory(1)
    _produce(kafka_bootstrap, source, _docs(2, "idle"))
    answers = []
    monkeypatch.setattr(Worker, "_stop_if_deleted", lambda self, kind, topics, more=None: answers.append(kind) or
                        len(answers) > 2)  # the broker answers the third time it is asked
    options = ConsumeOptions(bootstrap_servers=kafka_bootstrap, topics=(source,), group=_uid("idle"), output_topic=out,
                             dead_letter_topic=out, idle_timeout=1.0, max_backoff_s=1.0)
    report = _finish(*_start(Worker(options, pipeline)))
    assert report.stopped_by == "idle_timeout" and answers.count("input") >= 3 and report.docs_ok == 2


_DEAD_MEMBER = """
import sys, time
from kafka import KafkaConsumer
consumer = KafkaConsumer(sys.argv[3], bootstrap_servers=sys.argv[1], group_id=sys.argv[2], session_timeout_ms=6000,
                         enable_auto_commit=False)
while not consumer.assignment():
    consumer.poll(timeout_ms=200)
print("assigned", flush=True)
time.sleep(600)
"""


def test_idle_timeout_counts_neither_a_slow_join_nor_partitions_not_fetched_yet(
        kafka_bootstrap, kafka_admin, kafka_topic_factory, pipeline, tmp_path):
    # A member killed while it holds the group makes the next join wait for its session to expire,
    # longer than the idle timeout; right after the assignment no fetch has seen where the partitions
    # end. Before, that wait counted as idle and unknown ends as caught up: the worker stopped at once
    # as idle with every partition but the committed one unread.
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    source, out = kafka_topic_factory(3), kafka_topic_factory(1)
    _produce(kafka_bootstrap, source, _docs(150, "slow"))
    ends = _end_offsets(kafka_bootstrap, source, 3)
    group = _uid("slowjoin")
    committer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False)
    try:
        committer.assign([TopicPartition(source, 1)])
        committer.commit({TopicPartition(source, 1): OffsetAndMetadata(ends[1], "", -1)})
    finally:
        committer.close(autocommit=False)
    log = tmp_path / "member.log"
    with open(log, "wb") as handle:
        member = subprocess.Popen([sys.executable, "-c", _DEAD_MEMBER, kafka_bootstrap, group, source],
                                  stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        _wait(lambda: _log_has(log, "assigned"), "the member's assignment", proc=member, log=log)
    finally:
        member.kill()
        member.wait()
    options = ConsumeOptions(bootstrap_servers=kafka_bootstrap, topics=(source,), group=group, output_topic=out,
                             dead_letter_topic=out, idle_timeout=2.0, max_backoff_s=1.0)
    report = _finish(*_start(Worker(options, pipeline)))
    assert report.stopped_by == "idle_timeout" and not report.unfinished
    assert report.docs_in == ends[0] + ends[2] > 0
    assert _committed(kafka_admin, group, source) == ends


class _UndecodableKey(str):
    """A header key whose bytes are not UTF-8: the protocol says UTF-8, but not every client checks."""

    def encode(self, *args, **kwargs) -> bytes:
        return b"\xffkey"


def test_a_record_that_cannot_be_decoded_stops_the_worker_by_name(kafka_bootstrap, kafka_topic_factory, pipeline):
    source, out = kafka_topic_factory(1), kafka_topic_factory(1)
    good = json.dumps({"id": "ok", "text": "Angela Merkel visited Paris."}).encode()
    _produce_unchecked(kafka_bootstrap, source, [(None, good, [(_UndecodableKey("trace"), b"t")])])
    options = ConsumeOptions(bootstrap_servers=kafka_bootstrap, topics=(source,), group=_uid("undecodable"),
                             output_topic=out, dead_letter_topic=out, max_backoff_s=1.0)
    _stops_soon_unreadable(Worker(options, pipeline), f"cannot be decoded .* next in one of: {source}/0 at offset 0")


def test_the_records_before_an_undecodable_one_are_processed_and_committed(kafka_bootstrap, kafka_topic_factory,
                                                                          kafka_admin, pipeline):
    source, out = kafka_topic_factory(1), kafka_topic_factory(1)
    good = [json.dumps({"id": f"g{i}", "text": "Angela Merkel visited Paris."}).encode() for i in range(13)]
    _produce_unchecked(kafka_bootstrap, source, [(None, value, []) for value in good[:12]])  # one batch
    _produce_unchecked(kafka_bootstrap, source, [(None, good[12], [(_UndecodableKey("trace"), b"t")]),
                                                 (None, good[12], [])])  # the next: offsets 12 and 13
    group = _uid("before-undecodable")
    options = ConsumeOptions(bootstrap_servers=kafka_bootstrap, topics=(source,), group=group,
                             output_topic=out, dead_letter_topic=out, max_backoff_s=1.0)
    # The client drops what it decoded of a poll before the bad record: without a second read the
    # twelve were never processed, and the offset named was past them.
    _stops_soon_unreadable(Worker(options, pipeline), f"next in one of: {source}/0 at offset 12;")
    assert _committed(kafka_admin, group, source) == {0: 12}
    written = {json.loads(r.value)["doc_id"] for r in _read_all(kafka_bootstrap, out, 1)}
    assert written == {f"g{i}" for i in range(12)}
    # Restarted, as a supervisor would: the bad record is first, with nothing before it to read again.
    # A seek to where the client stands kept the record in its buffer, and its next poll spun for good.
    _stops_soon_unreadable(Worker(options, pipeline), f"next in one of: {source}/0 at offset 12;")
    assert _committed(kafka_admin, group, source) == {0: 12}


def test_consume_writes_its_report_when_it_stops_with_an_error(kafka_bootstrap, kafka_topic_factory, tiny_bundle,
                                                                tmp_path):
    from typer.testing import CliRunner

    from nerbatch.cli import app

    source, out = kafka_topic_factory(1), kafka_topic_factory(1)
    good = json.dumps({"id": "g", "text": "Angela Merkel visited Paris."}).encode()
    _produce_unchecked(kafka_bootstrap, source, [(None, good, []), (None, good, [(_UndecodableKey("trace"), b"t")])])
    report = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["consume", "-b", kafka_bootstrap, "-t", source, "-g", _uid("report-on-error"),
                                      "--output-topic", out, "--dead-letter-topic", out, "--model", str(tiny_bundle),
                                      "--report", str(report), "--log-level", "ERROR"])
    assert result.exit_code == 2 and f"{source}/0 at offset 1" in result.output, result.output
    saved = json.loads(report.read_text())  # the document before the bad record was done and committed
    assert (saved["stopped_by"], saved["docs_in"], saved["docs_ok"], saved["commits"]) == ("unreadable_record", 1, 1, 1)


def test_a_restart_at_an_undecodable_record_stops_whichever_partition_the_client_reads_first(
        kafka_bootstrap, kafka_topic_factory, kafka_admin, pipeline):
    source, out = kafka_topic_factory(2), kafka_topic_factory(1)
    good = json.dumps({"id": "g", "text": "Angela Merkel visited Paris."}).encode()
    _produce_unchecked(kafka_bootstrap, source, [(None, good, []), (None, good, [(_UndecodableKey("trace"), b"t")])])
    group = _uid("restart-undecodable")
    options = ConsumeOptions(bootstrap_servers=kafka_bootstrap, topics=(source,), group=group,
                             output_topic=out, dead_letter_topic=out, max_backoff_s=1.0)
    _stops_soon_unreadable(Worker(options, pipeline), f"next in one of: {source}/0 at offset 1, {source}/1 at offset 0;")
    assert _committed(kafka_admin, group, source)[0] == 1
    others = [json.dumps({"id": f"p{i}", "text": "Angela Merkel visited Paris."}).encode() for i in range(5)]
    _produce_unchecked(kafka_bootstrap, source, [(None, value, []) for value in others], partition=1)
    for _ in range(2):  # the other partition's records come first or not: either way no endless poll
        _stops_soon_unreadable(Worker(options, pipeline), f"next in one of: {source}/0 at offset 1, ")
        committed = _committed(kafka_admin, group, source)
        written = {json.loads(r.value)["doc_id"] for r in _read_all(kafka_bootstrap, out, 1)}
        assert committed[0] == 1 and written >= {f"p{i}" for i in range(committed.get(1, 0))}


def _stops_soon_unreadable(worker: Worker, match: str) -> None:
    started = time.monotonic()
    with pytest.raises(UnreadableRecordError, match=match):
        _finish(*_start(worker), timeout=60)
    assert time.monotonic() - started < 30


@pytest.mark.parametrize("codec", ["lz4", "snappy", "zstd"])
def test_topics_the_broker_compresses_are_read(kafka_bootstrap, kafka_topic_factory, pipeline, codec):
    # The topic's compression.type makes the broker recompress every batch with the codec.
    source, out = kafka_topic_factory(1, configs={"compression.type": codec}), kafka_topic_factory(1)
    _produce(kafka_bootstrap, source, _docs(4, codec))
    options = ConsumeOptions(bootstrap_servers=kafka_bootstrap, topics=(source,), group=_uid(codec),
                             output_topic=out, dead_letter_topic=out, idle_timeout=3.0, max_backoff_s=1.0)
    report = _finish(*_start(Worker(options, pipeline)), timeout=60)
    assert (report.docs_in, report.docs_ok) == (4, 4)
    assert len(_read_all(kafka_bootstrap, out, 1)) == 4


def test_a_codec_without_its_library_stops_the_worker_by_name(kafka_bootstrap, kafka_topic_factory, pipeline,
                                                               monkeypatch):
    import kafka.codec

    source, out = kafka_topic_factory(1, configs={"compression.type": "zstd"}), kafka_topic_factory(1)
    _produce(kafka_bootstrap, source, _docs(2, "nozstd"))
    monkeypatch.setattr(kafka.codec, "has_zstd", lambda: False)  # as on a machine without zstandard
    options = ConsumeOptions(bootstrap_servers=kafka_bootstrap, topics=(source,), group=_uid("nozstd"),
                             output_topic=out, dead_letter_topic=out, max_backoff_s=1.0)
    _stops_soon_unreadable(Worker(options, pipeline), f"zstd compression codec not found.* {source}/0 at offset 0")


def _broker_pid() -> int:
    status = subprocess.run(["bash", str(REPO / "scripts" / "kafka.sh"), "status"], capture_output=True, text=True)
    match = re.search(r"\(pid (\d+)\)", status.stdout)
    if status.returncode != 0 or not match:
        pytest.skip("the broker was not started by scripts/kafka.sh, so this test cannot freeze it")
    return int(match.group(1))


class _SignallingPipeline:
    """The real pipeline; its ``on_call``-th call sends ``signum`` to the broker, so that batch's
    outputs go unacknowledged (SIGSTOP: frozen until SIGCONT; SIGKILL: gone)."""

    def __init__(self, pipeline, broker_pid: int, signum: int, on_call: int = 1) -> None:
        self._pipeline, self._broker_pid, self._signum, self._on_call = pipeline, broker_pid, signum, on_call
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self._pipeline, name)

    def annotate(self, documents):
        self.calls += 1
        if self.calls == self._on_call:
            os.kill(self._broker_pid, self._signum)
        return self._pipeline.annotate(documents)


def test_a_batch_unacknowledged_while_the_broker_is_frozen_is_retried_without_a_traceback(
        kafka_bootstrap, kafka_admin, kafka_topic_factory, pipeline, monkeypatch):
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    source, out, dlq = kafka_topic_factory(1), kafka_topic_factory(1), kafka_topic_factory(1)
    group = _uid("frozen")
    docs = _docs(3, "frozen")
    _produce(kafka_bootstrap, source, docs)
    broker = _broker_pid()
    options = ConsumeOptions(bootstrap_servers=kafka_bootstrap, topics=(source,), group=group, output_topic=out,
                             dead_letter_topic=dlq, flush_timeout_s=2.0, max_backoff_s=1.0)
    worker = Worker(options, _SignallingPipeline(pipeline, broker, signal.SIGSTOP))
    try:
        thread, box = _start(worker)
        _wait(lambda: worker.report.batch_failures >= 1, "the unacknowledged batch to fail")
        gc.collect()  # while the broker is still frozen: a producer left half-closed prints a traceback here
    finally:
        os.kill(broker, signal.SIGCONT)
    _wait(lambda: worker.report.docs_ok == 3, "the retried batch to be committed")
    worker.stop()
    report = _finish(thread, box)
    assert report.batch_failures >= 1 and report.docs_ok == 3
    assert {r.key.decode() for r in _read_all(kafka_bootstrap, out, 1)} == {k for k, _ in docs}  # duplicates allowed
    assert _committed(kafka_admin, group, source) == {0: 3}
    # What the interpreter would print as "Exception ignored in ...", with a traceback.
    assert not unraisable, [f"{u.err_msg or 'Exception ignored in'} {u.object!r}: {u.exc_value!r}" for u in unraisable]


@pytest.fixture
def doomed_broker(kafka_bootstrap, tmp_path):
    """A second broker of this test's own, free to be killed: (bootstrap, pid)."""
    home = tmp_path / "kafka"
    home.mkdir()
    shared_home = Path(os.environ.get("NERBATCH_KAFKA_HOME") or REPO / ".kafka")
    for jars in shared_home.glob("jars-*"):  # the session broker's jars: no second download
        (home / jars.name).symlink_to(jars.resolve())
    env = {**os.environ, "NERBATCH_KAFKA_HOME": str(home), "NERBATCH_PYTHON": sys.executable}
    script = str(REPO / "scripts" / "kafka.sh")
    started = subprocess.run(["bash", script, "start"], env=env, capture_output=True, text=True, timeout=600)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        match = re.search(r"at (\S+) \(pid (\d+)\)", started.stdout)
        assert match, started.stdout
        yield match.group(1), int(match.group(2))
    finally:
        subprocess.run(["bash", script, "stop"], env=env, capture_output=True, timeout=120)


def _doomed_topics(bootstrap: str, prefix: str) -> tuple[str, str, str]:
    """Input (holding 3 documents), output and dead-letter topics on the doomed broker."""
    from kafka import KafkaAdminClient

    source, out, dlq = _uid("in"), _uid("out"), _uid("dlq")
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics({t: {"num_partitions": 1, "replication_factor": 1} for t in (source, out, dlq)},
                            timeout_ms=30_000)
        admin.wait_for_topics([source, out, dlq], timeout_ms=30_000)
    finally:
        admin.close()
    _produce(bootstrap, source, _docs(3, prefix))
    return source, out, dlq


def test_a_worker_whose_broker_dies_mid_batch_stops_cleanly_without_a_traceback(
        doomed_broker, pipeline, monkeypatch):
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    bootstrap, broker = doomed_broker
    source, out, dlq = _doomed_topics(bootstrap, "doomed")
    options = ConsumeOptions(bootstrap_servers=bootstrap, topics=(source,), group=_uid("doomed"),
                             output_topic=out, dead_letter_topic=dlq, flush_timeout_s=2.0, max_backoff_s=1.0)
    # The broker dies during the second batch, once the producer is connected and knows the
    # output topic: that batch's sends are then buffered, waiting for a broker that is gone.
    worker = Worker(options, _SignallingPipeline(pipeline, broker, signal.SIGKILL, on_call=2))
    thread, box = _start(worker)
    _wait(lambda: worker.report.docs_ok == 3, "the first batch to be committed")
    _produce(bootstrap, source, _docs(3, "doomed-2"))
    _wait(lambda: worker.report.batch_failures >= 1, "the unacknowledged batch to fail")
    gc.collect()  # a producer left half-closed prints its traceback here
    worker.stop()
    report = _finish(thread, box)
    gc.collect()
    assert report.docs_ok == 3 and report.commits == 1 and report.stopped_by == "stop"
    # What the interpreter would print as "Exception ignored in ...", with a traceback.
    assert not unraisable, [f"{u.err_msg or 'Exception ignored in'} {u.object!r}: {u.exc_value!r}" for u in unraisable]


def test_sigterm_finishes_the_batch_in_hand_and_exits_zero(kafka_bootstrap, kafka_admin, kafka_topic_factory,
                                                           tiny_bundle, tmp_path):
    source, out, dlq = kafka_topic_factory(2), kafka_topic_factory(2), kafka_topic_factory(1)
    group = _uid("term")
    log = tmp_path / "worker.log"
    report = tmp_path / "report.json"
    proc = _spawn(["-b", kafka_bootstrap, "-t", source, "-g", group, "--output-topic", out,
                   "--dead-letter-topic", dlq, "--model", str(tiny_bundle), "--max-batch-docs", "1000",
                   "--max-batch-ms", "60000", "--report", str(report)], log)
    try:
        _wait(lambda: _log_has(log, "partition(s) assigned"), "the worker to join its group", proc=proc, log=log)
        docs = _docs(40, "term")
        _produce(kafka_bootstrap, source, docs)
        time.sleep(1.5)  # let it poll them into its (60 s) batch
        assert sum(_end_offsets(kafka_bootstrap, out, 2).values()) == 0  # nothing processed yet
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, _tail(log)
    assert took < 10, f"took {took:.1f}s to stop"
    assert "SIGTERM received" in log.read_text()
    outputs = _read_all(kafka_bootstrap, out, 2)
    assert sorted(r.key.decode() for r in outputs) == sorted(k for k, _ in docs)
    assert _committed(kafka_admin, group, source) == _end_offsets(kafka_bootstrap, source, 2)
    saved = json.loads(report.read_text())
    assert saved["docs_in"] == 40 and saved["stopped_by"] == "signal" and saved["batches"] == 1


def test_a_lone_worker_is_assigned_its_partitions_once(kafka_bootstrap, kafka_topic_factory, pipeline, caplog):
    # Each rebalance revokes every partition of the group; a spurious one at start-up costs all
    # workers their batch in hand.
    source, out, dlq = kafka_topic_factory(3), kafka_topic_factory(1), kafka_topic_factory(1)
    options = ConsumeOptions(bootstrap_servers=kafka_bootstrap, topics=(source,), group=_uid("once"),
                             output_topic=out, dead_letter_topic=dlq)
    worker = Worker(options, pipeline)
    with caplog.at_level("INFO", logger="nerbatch.consumer"):
        thread, box = _start(worker)
        _wait(lambda: any("partition(s) assigned" in r.message for r in caplog.records), "the assignment")
        time.sleep(3)  # kafka-python's next metadata refresh comes about 0.5 s after the first join
        worker.stop()
        _finish(thread, box)
    rebalances = [r.message for r in caplog.records if r.message.startswith("rebalance:")]
    assert rebalances == [f"rebalance: 3 partition(s) assigned: {', '.join(f'{source}/{p}' for p in range(3))}"]


def test_broker_down_at_start_is_retried_with_backoff(pipeline, tmp_path, caplog):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = ConsumeOptions(bootstrap_servers=f"127.0.0.1:{port}", topics=("in",), group="g",
                             output_dir=str(tmp_path / "o"), max_backoff_s=1.0, bootstrap_timeout_ms=1000)
    worker = Worker(options, pipeline)
    with caplog.at_level("WARNING", logger="nerbatch.consumer"):
        thread, box = _start(worker)
        _wait(lambda: sum("cannot reach Kafka" in r.message for r in caplog.records) >= 2, "two retries",
              timeout=60)
        worker.stop()
        report = _finish(thread, box, timeout=30)
    assert report.docs_in == 0 and report.stopped_by == "stop"  # a library's stop(): no signal came
    assert not worker.running.is_set()
    with pytest.raises(RuntimeError, match="a Worker runs once"):  # not a silent return with the old report
        worker.run()


def test_a_worker_authenticates_over_sasl_and_a_refused_password_stops_it_by_name(
        kafka_bootstrap, kafka_sasl, kafka_topic_factory, pipeline, monkeypatch, tmp_path):
    source, out = kafka_topic_factory(1), kafka_topic_factory(1)
    _produce(kafka_bootstrap, source, _docs(3, "sasl"))
    sasl = dict(bootstrap_servers=kafka_sasl["bootstrap"], security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN",
                sasl_username=kafka_sasl["user"], topics=(source,), output_topic=out, dead_letter_topic=out,
                bootstrap_timeout_ms=3000, max_backoff_s=1.0)
    monkeypatch.setenv("NERBATCH_KAFKA_PASSWORD", kafka_sasl["password"])
    report = _finish(*_start(Worker(ConsumeOptions(group=_uid("sasl"), idle_timeout=3.0, **sasl), pipeline)))
    assert report.docs_ok == 3 and report.stopped_by == "idle_timeout"  # its topic checks authenticated too
    assert len(_read_all(kafka_bootstrap, out, 1)) == 3

    monkeypatch.setenv("NERBATCH_KAFKA_PASSWORD", "not-" + kafka_sasl["password"])
    import logging
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    unreachable = Worker(ConsumeOptions(bootstrap_servers=f"127.0.0.1:{port}", topics=("in",), group="g",
                                        output_dir=str(tmp_path / "o"), bootstrap_timeout_ms=1000, max_backoff_s=1.0),
                         pipeline)
    kafka_log = logging.getLogger("kafka")
    kafka_log.setLevel(logging.ERROR)  # as an application hiding kafka-python's warnings does
    try:
        other = _start(unreachable)
        started = time.monotonic()
        with pytest.raises(ConsumeConfigError, match="Kafka refused the worker: .*SaslAuthenticationFailedError"):
            _finish(*_start(Worker(ConsumeOptions(group=_uid("sasl"), **sasl), pipeline)), timeout=60)
        assert time.monotonic() - started < 15  # the first refusal ends it, not rounds of backoff
        assert other[0].is_alive()  # the refusal was not the other worker's
        unreachable.stop()
        assert _finish(*other).stopped_by == "stop"
    finally:
        kafka_log.setLevel(logging.NOTSET)


def test_the_worker_log_never_shows_the_sasl_password(kafka_bootstrap, kafka_sasl, kafka_topic_factory, tiny_bundle,
                                                      tmp_path, monkeypatch):
    source, out = kafka_topic_factory(1), kafka_topic_factory(1)
    _produce(kafka_bootstrap, source, _docs(1, "secret"))
    monkeypatch.setenv("NERBATCH_KAFKA_PASSWORD", kafka_sasl["password"])
    log = tmp_path / "worker.log"
    proc = _spawn(["-b", kafka_sasl["bootstrap"], "-t", source, "-g", _uid("secret"), "--output-topic", out,
                   "--dead-letter-topic", out, "--security-protocol", "SASL_PLAINTEXT", "--sasl-mechanism", "PLAIN",
                   "--sasl-username", kafka_sasl["user"], "--model", str(tiny_bundle), "--idle-timeout", "3",
                   "--log-level", "DEBUG"], log)
    assert proc.wait(timeout=180) == 0, _tail(log)
    text = log.read_text()
    assert "SaslAuthenticateRequest" in text  # kafka-python's request dumps were logged ...
    assert kafka_sasl["password"] not in text and "***" in text  # ... without the password


def test_a_connection_the_broker_keeps_failing_is_retried_with_its_reason(kafka_bootstrap, pipeline, tmp_path, caplog):
    options = ConsumeOptions(bootstrap_servers=kafka_bootstrap, topics=("in",), group="g", security_protocol="SSL",
                             output_dir=str(tmp_path / "o"), bootstrap_timeout_ms=1000, max_backoff_s=1.0)
    worker = Worker(options, pipeline)  # TLS to a plaintext listener: every handshake fails
    with caplog.at_level("WARNING", logger="nerbatch.consumer"):
        thread, box = _start(worker)
        try:
            _wait(lambda: any("the last connection failed:" in r.message for r in caplog.records),
                  "a retry with its reason", timeout=60)
        finally:
            worker.stop()
            _finish(thread, box, timeout=30)


class _SlowPipeline:
    def __init__(self, pipeline, seconds: float) -> None:
        self._pipeline, self._seconds = pipeline, seconds

    def __getattr__(self, name):
        return getattr(self._pipeline, name)

    def annotate(self, documents):
        time.sleep(self._seconds)
        return self._pipeline.annotate(documents)


def _scraped_lag(worker: Worker) -> float:
    host, port = worker.metrics_address
    text = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10).read().decode()
    return float(re.search(r"^nerbatch_consume_lag(?:\{.*\})? (\S+)$", text, re.M).group(1))


def test_the_lag_gauge_shows_a_backlog_before_the_first_progress_line(kafka_bootstrap, kafka_topic_factory, pipeline):
    source, out = kafka_topic_factory(1), kafka_topic_factory(1)
    _produce(kafka_bootstrap, source, _docs(60, "lag"))
    worker = Worker(ConsumeOptions(bootstrap_servers=kafka_bootstrap, topics=(source,), group=_uid("lag"),
                                   output_topic=out, dead_letter_topic=out, max_batch_docs=5, log_interval=600.0,
                                   metrics_port=0), _SlowPipeline(pipeline, 0.5))
    thread, box = _start(worker)
    _wait(worker.running.is_set, "the worker to connect")
    try:
        _wait(lambda: _scraped_lag(worker) > 0, "the gauge to show the backlog", timeout=5)
    finally:
        worker.stop()
        _finish(thread, box)


def test_the_lag_gauge_counts_partitions_not_reached_yet(kafka_bootstrap, kafka_topic_factory, pipeline):
    """A fetch learns a partition's end only once its records are handed out: the gauge must count the
    backlog of every assigned partition, not only of the one being drained."""
    source, out = kafka_topic_factory(3), kafka_topic_factory(1)
    _produce(kafka_bootstrap, source, _docs(300, "lag3"))  # keyed: about 100 a partition
    worker = Worker(ConsumeOptions(bootstrap_servers=kafka_bootstrap, topics=(source,), group=_uid("lag3"),
                                   output_topic=out, dead_letter_topic=out, max_batch_docs=10, log_interval=600.0,
                                   metrics_port=0), _SlowPipeline(pipeline, 0.3))
    thread, box = _start(worker)
    _wait(worker.running.is_set, "the worker to connect")
    samples = []
    try:
        while worker.report.docs_in < 150 and len(samples) < 200:
            gauge = _scraped_lag(worker)
            if gauge:  # 0 until the worker knows where it stands in every partition
                samples.append((gauge, worker.report.docs_in))  # committed <= processed, so lag >= 300 - processed
            time.sleep(0.2)
    finally:
        worker.stop()
        _finish(thread, box)
    assert len(samples) >= 5, samples
    assert all(gauge >= 300 - processed for gauge, processed in samples), samples


def test_healthz_tells_a_hung_worker_from_a_busy_one(kafka_bootstrap, kafka_topic_factory, pipeline):
    """A liveness probe restarts a worker whose loop is stuck (here: a batch that never ends); /metrics
    answers from its own thread whatever the loop does."""
    import urllib.error

    source, out = kafka_topic_factory(1), kafka_topic_factory(1)
    stuck = _HeldPipeline(pipeline)
    worker = Worker(ConsumeOptions(bootstrap_servers=kafka_bootstrap, topics=(source,), group=_uid("health"),
                                   output_topic=out, dead_letter_topic=out, max_batch_docs=5, max_batch_ms=100,
                                   max_poll_interval_ms=2_000, max_backoff_s=1.0, log_interval=600.0,
                                   metrics_port=0), stuck)
    thread, box = _start(worker)

    def health() -> tuple[int, str]:
        try:
            response = urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=10)
        except urllib.error.HTTPError as exc:
            response = exc
        return response.status, response.read().decode()

    try:
        _wait(worker.running.is_set, "the worker to connect")
        host, port = worker.metrics_address
        time.sleep(4)  # idle for longer than the limit: waiting for input is not hanging
        assert health() == (200, "ok\n")
        _produce(kafka_bootstrap, source, _docs(5, "health"))
        status, text = _wait(lambda: (answer := health())[0] == 503 and answer, "/healthz to see the stuck batch")
        assert stuck.held.is_set()
        assert re.fullmatch(r"stalled: the worker's loop has not come round for \d+ s \(limit 3 s\)\n", text)
        stuck.release.set()
        _wait(lambda: health() == (200, "ok\n"), "/healthz to see the loop again")
    finally:
        stuck.release.set()
        worker.stop()
        _finish(thread, box)


def test_healthz_does_not_count_a_wait_on_the_broker_as_a_hang(kafka_bootstrap, kafka_topic_factory, pipeline,
                                                                monkeypatch):
    """An exactly-once commit waits on the broker without a limit of its own (an outage ends when the broker
    is back): a probe must not restart the worker meanwhile."""
    import urllib.error

    from kafka import KafkaProducer

    source, out = kafka_topic_factory(1), kafka_topic_factory(1)
    commit = KafkaProducer.commit_transaction
    committing = threading.Event()

    def slow_commit(self):  # a transaction coordinator slower than the probe's limit
        committing.set()
        time.sleep(6.0)
        return commit(self)

    monkeypatch.setattr(KafkaProducer, "commit_transaction", slow_commit)
    worker = Worker(ConsumeOptions(bootstrap_servers=kafka_bootstrap, topics=(source,), group=_uid("health-eos"),
                                   output_topic=out, dead_letter_topic=out, exactly_once=True, max_batch_docs=5,
                                   max_batch_ms=100, max_poll_interval_ms=2_000, max_backoff_s=1.0,
                                   log_interval=600.0, metrics_port=0), pipeline)
    thread, box = _start(worker)
    try:
        _wait(worker.running.is_set, "the worker to connect")
        host, port = worker.metrics_address
        _produce(kafka_bootstrap, source, _docs(5, "health-eos"))
        _wait(committing.is_set, "the batch's commit")
        answers = []
        for _ in range(16):  # the commit's 6 s, twice the limit
            try:
                answers.append(urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=10).status)
            except urllib.error.HTTPError as exc:
                answers.append(exc.status)
            time.sleep(0.4)
        assert answers == [200] * 16
    finally:
        worker.stop()
        _finish(thread, box)


@pytest.mark.parametrize("rolls", [True, False])
def test_the_last_lag_figure_of_a_max_docs_run_counts_what_it_left(kafka_bootstrap, kafka_admin, kafka_topic_factory,
                                                                     pipeline, tmp_path, caplog, monkeypatch, rolls):
    """Records polled but left in hand at --max-docs, and parts that could not be committed, are not done:
    the next run reads them."""
    source, dlq = kafka_topic_factory(3), kafka_topic_factory(1)
    _produce(kafka_bootstrap, source, _docs(100, "left"))
    group = _uid("left")
    caplog.set_level(logging.INFO, logger="nerbatch.consumer")
    worker = Worker(ConsumeOptions(bootstrap_servers=kafka_bootstrap, topics=(source,), group=group,
                                   output_dir=str(tmp_path / "parts"), dead_letter_topic=dlq, max_docs=50,
                                   max_batch_docs=20, max_backoff_s=1.0), pipeline)
    if not rolls:
        _parts_fail(monkeypatch)
    report = _finish(*_start(worker))
    assert report.docs_in == 50
    last_lag = int(re.findall(r"\blag=(\d+)", caplog.text)[-1])
    ends, committed = _end_offsets(kafka_bootstrap, source, 3), _committed(kafka_admin, group, source)
    assert last_lag == sum(end - (committed.get(p) or 0) for p, end in ends.items()) == (50 if rolls else 100)


@pytest.mark.parametrize("setting, refused", [
    (dict(session_timeout_ms=4000), "InvalidSessionTimeoutError"),  # below the broker's group.min.session.timeout.ms
    (dict(exactly_once=True, transaction_timeout_ms=2_000_000), "InvalidTransactionTimeoutError"),  # above its max
])
def test_settings_the_broker_refuses_stop_the_worker_at_once(kafka_bootstrap, kafka_topic_factory, pipeline,
                                                             setting, refused):
    source, out = kafka_topic_factory(1), kafka_topic_factory(1)
    _produce(kafka_bootstrap, source, _docs(1, "refused"))
    options = ConsumeOptions(bootstrap_servers=kafka_bootstrap, topics=(source,), group=_uid("refused"),
                             output_topic=out, dead_letter_topic=out, max_backoff_s=1.0, **setting)
    started = time.monotonic()
    with pytest.raises(ConsumeConfigError, match=f"Kafka refused the worker: .*{refused}"):
        _finish(*_start(Worker(options, pipeline)), timeout=60)
    assert time.monotonic() - started < 30  # not after rounds of backoff


def test_two_workers_share_a_topic_exactly_once_in_steady_state(kafka_bootstrap, kafka_admin, kafka_topic_factory,
                                                                 pipeline, tmp_path):
    source, out, dlq = kafka_topic_factory(4), kafka_topic_factory(4), kafka_topic_factory(1)
    group = _uid("pair")
    shared = _PlaceNames(pipeline)  # one model, calls serialised by its lock
    workers = []
    for i in range(2):
        options = ConsumeOptions(bootstrap_servers=kafka_bootstrap, topics=(source,), group=group,
                                 output_topic=out, dead_letter_topic=dlq, max_batch_docs=25, max_batch_ms=200,
                                 session_timeout_ms=10_000, log_interval=5.0)
        workers.append(Worker(options, shared))
    runs = [_start(w) for w in workers]
    try:
        def balanced():
            sizes = [len(w._consumer.assignment()) if w._consumer else 0 for w in workers]
            return sizes == [2, 2] and not any(w._rebalancing for w in workers)

        _wait(balanced, "both workers to hold 2 partitions each")
        docs = _docs(300, "pair")
        _produce(kafka_bootstrap, source, docs)
        _wait(lambda: sum(w.report.docs_in for w in workers) >= 300, "all documents to be processed")
    finally:
        for w in workers:
            w.stop()
        reports = [_finish(t, b) for t, b in runs]
    assert all(r.docs_in > 0 for r in reports), [r.docs_in for r in reports]
    assert sum(r.docs_in for r in reports) == 300
    assert sum(r.dropped_on_rebalance for r in reports) == 0
    keys = Counter(r.key.decode() for r in _read_all(kafka_bootstrap, out, 4))
    assert sorted(keys) == sorted(k for k, _ in docs) and set(keys.values()) == {1}
    assert _committed(kafka_admin, group, source) == _end_offsets(kafka_bootstrap, source, 4)


def test_a_worker_joining_mid_stream_loses_nothing(kafka_bootstrap, kafka_admin, kafka_topic_factory, pipeline):
    source, out, dlq = kafka_topic_factory(4), kafka_topic_factory(4), kafka_topic_factory(1)
    group = _uid("join")
    shared = _PlaceNames(pipeline)
    docs = _docs(3000, "join")
    _produce(kafka_bootstrap, source, docs)

    def worker():
        return Worker(ConsumeOptions(bootstrap_servers=kafka_bootstrap, topics=(source,), group=group,
                                     output_topic=out, dead_letter_topic=dlq, max_batch_docs=10, max_batch_ms=100,
                                     session_timeout_ms=10_000, log_interval=5.0), shared)

    first, second = worker(), worker()
    runs = [_start(first)]
    try:
        _wait(lambda: first.report.docs_in >= 100, "the first worker to be mid-stream")
        runs.append(_start(second))  # rebalance while the first one holds and processes batches
        # A fast model can drain the backlog before the join completes: once both hold
        # partitions, more documents arrive, so the second worker surely gets work.
        _wait(lambda: second._consumer is not None and len(second._consumer.assignment()) > 0
              and not second._rebalancing, "the second worker to hold partitions")
        later = _docs(1000, "join-later")
        _produce(kafka_bootstrap, source, later)
        docs += later
        ends = _end_offsets(kafka_bootstrap, source, 4)
        _wait(lambda: _committed(kafka_admin, group, source) == ends, "every offset to be committed")
    finally:
        for w in (first, second):
            w.stop()
        reports = [_finish(t, b) for t, b in runs]
    assert reports[1].docs_in > 0, "the second worker got no work"
    keys = Counter(r.key.decode() for r in _read_all(kafka_bootstrap, out, 4))
    assert set(keys) == {k for k, _ in docs}  # zero loss across the rebalance
    # topic output commits after every batch: only a batch whose commit failed is redone
    duplicated = sum(n - 1 for n in keys.values())
    assert duplicated <= 10 * sum(r.batch_failures for r in reports), (duplicated, reports)
    print(f"\njoin mid-stream: {len(docs)} documents, first worker {reports[0].docs_in} "
          f"(dropped {reports[0].dropped_on_rebalance} uncommitted on revocation), second {reports[1].docs_in}, "
          f"duplicated {duplicated}")


def _crash_run(kafka_bootstrap, kafka_admin, kafka_topic_factory, tiny_bundle, tmp_path, *, exactly_once: bool):
    """Documents trickle in while a subprocess worker is killed (SIGKILL) 3 times at random moments
    mid-stream and restarted; a last run drains the rest.  Returns the facts to check."""
    partitions = 3
    source, out, dlq = (kafka_topic_factory(partitions), kafka_topic_factory(partitions),
                        kafka_topic_factory(1))
    group = _uid("crash")
    slot = _uid("slot")
    folder = tmp_path / "parts"
    docs = _docs(400, "crash")
    rng = random.Random(1234 + exactly_once)

    def trickle():  # 400 documents over about 16 s
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True)
        try:
            for i, (key, value) in enumerate(docs):
                producer.send(source, key=key.encode(), value=value)
                if i % 5 == 4:
                    producer.flush(timeout=30)
                    time.sleep(0.2)
            producer.flush(timeout=30)
        finally:
            producer.close(timeout=30)

    feeder = threading.Thread(target=trickle, daemon=True)
    args = ["-b", kafka_bootstrap, "-t", source, "-g", group, "--output-topic", out, "--dead-letter-topic", dlq,
            "--model", str(tiny_bundle), "--max-batch-docs", "12", "--max-batch-ms", "100",
            "--group-instance-id", slot, "--session-timeout-ms", "10000", "--log-interval", "1"]
    if exactly_once:
        args += ["--exactly-once", "--transactional-id", slot]
    else:
        args += ["--output-dir", str(folder), "--part-max-seconds", "0.5"]
    log = tmp_path / "worker.log"
    out_total = lambda: sum(_end_offsets(kafka_bootstrap, out, partitions).values())  # noqa: E731
    committed_at_kill = []
    feeder.start()
    for _ in range(3):
        before = out_total()
        proc = _spawn(args, log)
        try:
            _wait(lambda: out_total() > before, "the restarted worker to produce output", proc=proc, log=log)
            time.sleep(rng.uniform(0.2, 1.5))  # then kill it at a random moment
        finally:
            proc.kill()
            proc.wait()
        committed_at_kill.append(_committed(kafka_admin, group, source))
    feeder.join(WAIT_S)
    assert not feeder.is_alive()
    proc = _spawn(args + ["--idle-timeout", "4"], log)
    try:
        code = proc.wait(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, _tail(log)
    ends = _end_offsets(kafka_bootstrap, source, partitions)
    assert sum(ends.values()) == len(docs)
    assert _committed(kafka_admin, group, source) == ends
    assert sum(sum(c.values()) for c in committed_at_kill[:1]) < len(docs), "the first kill came after the end"
    return {"source": source, "out": out, "folder": folder, "docs": docs, "ends": ends,
            "committed_at_kill": committed_at_kill, "kills": len(committed_at_kill), "log": log}


def _duplicates_only_from_uncommitted(outputs: list, committed_at_kill: list[dict]) -> None:
    copies = Counter((json.loads(r.value)["source"]["partition"], json.loads(r.value)["source"]["offset"])
                     for r in outputs)
    for (p, offset), n in copies.items():
        redone = sum(1 for c in committed_at_kill if offset >= c.get(p, 0))
        assert n <= 1 + redone, f"partition {p} offset {offset} output {n} times but was uncommitted at {redone} kills"


def test_crash_restart_at_least_once_loses_nothing(kafka_bootstrap, kafka_admin, kafka_topic_factory, tiny_bundle,
                                                   tmp_path):
    run = _crash_run(kafka_bootstrap, kafka_admin, kafka_topic_factory, tiny_bundle, tmp_path, exactly_once=False)
    outputs = _read_all(kafka_bootstrap, run["out"], 3)
    ids = Counter(r.key.decode() for r in outputs)
    expected = {k for k, _ in run["docs"]}
    assert set(ids) == expected  # zero loss
    _duplicates_only_from_uncommitted(outputs, run["committed_at_kill"])
    duplicated = sum(n - 1 for n in ids.values())
    # parquet: the parts cover every offset exactly once (redone parts replace the ones they redo)
    _check_coverage(_parts(run["folder"]), run["ends"])
    print(f"\nat-least-once crash test: {len(expected)} documents, {run['kills']} kills, "
          f"lost {len(expected - set(ids))}, duplicated {duplicated} output messages")


def test_crash_restart_exactly_once_has_no_duplicates(kafka_bootstrap, kafka_admin, kafka_topic_factory,
                                                      tiny_bundle, tmp_path):
    run = _crash_run(kafka_bootstrap, kafka_admin, kafka_topic_factory, tiny_bundle, tmp_path, exactly_once=True)
    committed = _read_all(kafka_bootstrap, run["out"], 3, "read_committed")
    ids = Counter(r.key.decode() for r in committed)
    expected = {k for k, _ in run["docs"]}
    assert set(ids) == expected  # zero loss
    assert set(ids.values()) == {1}  # zero duplicates for a read_committed reader
    everything = _read_all(kafka_bootstrap, run["out"], 3)
    print(f"\nexactly-once crash test: {len(expected)} documents, {run['kills']} kills, "
          f"lost {len(expected - set(ids))}, duplicated {sum(n - 1 for n in ids.values())} (read_committed); "
          f"{len(everything) - len(committed)} aborted output messages in the log")


@pytest.mark.parametrize("flush_timeout_s", [2.0, 60.0])  # the stop comes after the flush gave up, or during it
def test_an_exactly_once_worker_whose_broker_dies_stops_soon_after_sigterm(doomed_broker, pipeline, flush_timeout_s):
    # kafka-python waits for a transaction's offsets, commit and abort without a timeout, so the
    # worker must bound those waits itself once it is asked to stop.
    bootstrap, broker = doomed_broker
    source, out, dlq = _doomed_topics(bootstrap, "doomed-eos")
    options = ConsumeOptions(bootstrap_servers=bootstrap, topics=(source,), group=_uid("doomed-eos"),
                             output_topic=out, dead_letter_topic=dlq, exactly_once=True,
                             flush_timeout_s=flush_timeout_s, max_backoff_s=1.0)
    signalling = _SignallingPipeline(pipeline, broker, signal.SIGKILL, on_call=2)
    worker = Worker(options, signalling)
    thread, box = _start(worker)
    _wait(lambda: worker.report.docs_ok == 3, "the first transaction to be committed")
    _produce(bootstrap, source, _docs(3, "doomed-eos-2"))
    _wait(lambda: signalling.calls >= 2, "the second batch")
    time.sleep(3)  # past the flush timeout: the worker is now waiting on the dead broker
    stopped = time.monotonic()
    worker.stop()
    report = _finish(thread, box, timeout=30)
    assert time.monotonic() - stopped < 12  # the broker's grace (5 s), then closing the connections
    assert report.docs_ok == 3 and report.commits == 1 and report.stopped_by == "stop"


def test_a_worker_writing_parts_whose_broker_dies_stops_soon_after_sigterm(doomed_broker, pipeline, tmp_path):
    bootstrap, broker = doomed_broker
    source, _, dlq = _doomed_topics(bootstrap, "doomed-parts")
    options = ConsumeOptions(bootstrap_servers=bootstrap, topics=(source,), group=_uid("doomed-parts"),
                             output_dir=str(tmp_path / "parts"), dead_letter_topic=dlq, part_max_seconds=600,
                             max_backoff_s=1.0)
    worker = Worker(options, pipeline)
    thread, box = _start(worker)
    _wait(lambda: worker.report.docs_ok == 3, "the documents to be annotated into an open part")
    os.kill(broker, signal.SIGKILL)
    time.sleep(2)
    stopped = time.monotonic()
    worker.stop()  # the open part's commit waits for a broker that is gone
    report = _finish(thread, box, timeout=30)
    assert time.monotonic() - stopped < 12  # the broker's grace (5 s), then closing the connections
    assert report.unfinished and report.parts == 0 and report.stopped_by == "stop"


@pytest.mark.parametrize("deleted, exactly_once", [("input", False), ("output", False), ("output", True),
                                                   ("dead-letter", True)])
def test_a_topic_deleted_while_the_worker_runs_stops_it_by_name(kafka_bootstrap, kafka_admin, kafka_topic_factory,
                                                                 pipeline, deleted, exactly_once):
    # Before, a deleted input topic left a worker reporting lag 0 forever (and "idle" success with
    # --idle-timeout); a deleted output topic left it retrying with only metadata timeouts to show, and
    # an exactly-once worker waiting without end for the abort of a transaction that wrote to it.
    source, out, dlq = kafka_topic_factory(2), kafka_topic_factory(1), kafka_topic_factory(1)
    _produce(kafka_bootstrap, source, _docs(4, f"deleted-{deleted}"))
    options = ConsumeOptions(bootstrap_servers=kafka_bootstrap, topics=(source,), group=_uid("deleted"),
                             output_topic=out, dead_letter_topic=dlq, flush_timeout_s=2.0, max_backoff_s=1.0,
                             idle_timeout=60.0, exactly_once=exactly_once)
    worker = Worker(options, pipeline)
    thread, box = _start(worker)
    _wait(lambda: worker.report.docs_ok == 4, "the first documents")
    name = {"input": source, "output": out, "dead-letter": dlq}[deleted]
    kafka_admin.delete_topics([name], timeout_ms=30_000)
    if deleted != "input":
        _produce(kafka_bootstrap, source, [*_docs(2, "deleted-more"), ("poison", b"not json")])  # one for each
    thread.join(WAIT_S)
    assert not thread.is_alive(), "worker did not stop"
    assert isinstance(box.get("error"), ConsumeConfigError), box
    assert f"{deleted} topic {name} no longer exists" in str(box["error"])


def _gauge(gauge) -> float:
    return gauge.collect()[0].samples[0].value


def test_a_deleted_input_topic_stops_a_group_whose_leader_reads_nothing(kafka_bootstrap, kafka_admin,
                                                                        kafka_topic_factory, pipeline, monkeypatch):
    # Only the member that computed the assignment rejoins when metadata changes, and an idle one
    # refreshes metadata every 5 minutes: the topic check must not wait for a rebalance.
    from nerbatch import consumer

    monkeypatch.setattr(consumer, "TOPIC_CHECK_S", 2.0)
    kept, deleted, out = kafka_topic_factory(1), kafka_topic_factory(1), kafka_topic_factory(1)
    group = _uid("leader")

    def worker(client_id: str) -> Worker:
        return Worker(ConsumeOptions(bootstrap_servers=kafka_bootstrap, topics=(kept, deleted), group=group,
                                     output_topic=out, dead_letter_topic=out, client_id=client_id,
                                     idle_timeout=60.0), pipeline)

    # The first member leads the group; the range assignor gives each topic's one partition to the
    # member whose id sorts first, so the leader ends up with nothing to read.
    leader = worker("z-leader")
    leader_run = _start(leader)
    _wait(lambda: _gauge(leader.metrics.assigned) == 2, "the leader's assignment")
    reader = worker("a-reader")
    reader_run = _start(reader)
    _wait(lambda: _gauge(reader.metrics.assigned) == 2 and _gauge(leader.metrics.assigned) == 0,
          "the reader to take both partitions")
    kafka_admin.delete_topics([deleted], timeout_ms=30_000)
    for thread, box in (leader_run, reader_run):
        thread.join(30)
        assert not thread.is_alive(), "worker did not stop"
        assert isinstance(box.get("error"), ConsumeConfigError), box
        assert f"input topic {deleted} no longer exists" in str(box["error"])


def test_a_topic_check_that_cannot_reach_the_broker_leaves_no_thread_behind(tiny_pipeline, caplog):
    worker = Worker(ConsumeOptions(bootstrap_servers="127.0.0.1:9", topics=("in",), group="g", output_topic="out",
                                   dead_letter_topic="dlq"), tiny_pipeline)
    before = {t.ident for t in threading.enumerate()}
    with caplog.at_level("WARNING", logger="nerbatch.consumer"):
        worker._stop_if_deleted("output", ["out"])  # nothing known: no error, but a warning
    assert [r.message.split(" (")[0] for r in caplog.records if r.name == "nerbatch.consumer"] == [
        "cannot ask 127.0.0.1:9 whether topic(s) out exist"]
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and {t.ident for t in threading.enumerate()} - before:
        time.sleep(0.1)
    assert [t.name for t in threading.enumerate() if t.ident not in before] == []


def test_a_stop_during_a_long_batch_still_gives_its_transaction_time_to_commit(kafka_bootstrap, kafka_admin,
                                                                               kafka_topic_factory, pipeline,
                                                                               monkeypatch):
    from kafka import KafkaProducer

    source, out = kafka_topic_factory(1), kafka_topic_factory(1)
    group = _uid("slow-commit")
    _produce(kafka_bootstrap, source, _docs(3, "slow-commit"))
    commit = KafkaProducer.commit_transaction

    def slow_commit(self):  # a healthy broker that takes a moment
        time.sleep(1.0)
        return commit(self)

    monkeypatch.setattr(KafkaProducer, "commit_transaction", slow_commit)

    class StopThenWork:
        def __getattr__(self, name):
            return getattr(pipeline, name)

        def annotate(self, documents):
            worker.stop()  # SIGTERM arrives as a batch starts that takes longer than the stop grace
            time.sleep(6.0)
            return pipeline.annotate(documents)

    worker = Worker(ConsumeOptions(bootstrap_servers=kafka_bootstrap, topics=(source,), group=group,
                                   output_topic=out, dead_letter_topic=out, exactly_once=True), StopThenWork())
    report = _finish(*_start(worker))
    assert (report.docs_ok, report.commits, report.batch_failures) == (3, 1, 0)
    assert _committed(kafka_admin, group, source) == {0: 3}
