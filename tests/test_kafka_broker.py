"""Round trips against the real local Kafka broker (scripts/kafka.sh).

These pin down what the streaming worker relies on, with the client library
we ship (kafka-python) and the broker we test against (Apache Kafka 4.x):
acks=all + idempotent producer, consumer groups with manual commits,
transactions (commit and abort), read_committed consumers, and
consume-transform-produce with send_offsets_to_transaction.
"""

from __future__ import annotations

import time
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.serializer import DefaultSerializer, JsonSerializer
from kafka.structs import OffsetAndMetadata

pytestmark = pytest.mark.kafka

POLL_DEADLINE_S = 60


# kafka-python 3 wants Serializer/Deserializer objects (plain callables are deprecated).
KEYS = DefaultSerializer()   # str <-> utf-8 bytes
JSON = JsonSerializer()      # JSON value <-> utf-8 bytes


def _uid(kind: str) -> str:
    return f"nbt-{kind}-{uuid.uuid4().hex[:10]}"


def _partitions(topic: str, n: int) -> list[TopicPartition]:
    return [TopicPartition(topic, p) for p in range(n)]


def _producer(bootstrap: str, **extra) -> KafkaProducer:
    return KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                         key_serializer=KEYS, value_serializer=JSON, **extra)


def _read_all(bootstrap: str, topic: str, n_partitions: int, isolation_level: str) -> list:
    """Everything readable in `topic` under `isolation_level` (no group).

    For read_committed, end_offsets() is the last stable offset, so this also
    proves no open transaction is left behind.
    """
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level=isolation_level,
                             enable_auto_commit=False, value_deserializer=JSON,
                             key_deserializer=KEYS)
    try:
        tps = _partitions(topic, n_partitions)
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        records = []
        deadline = time.monotonic() + POLL_DEADLINE_S
        while any(consumer.position(tp) < end[tp] for tp in tps):
            assert time.monotonic() < deadline, (
                f"{isolation_level} read of {topic} stuck at "
                f"{ {tp.partition: consumer.position(tp) for tp in tps} } of { {tp.partition: o for tp, o in end.items()} }")
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


def test_acks_all_round_trip_with_group_and_manual_commit(kafka_bootstrap, kafka_admin, kafka_topic_factory):
    topic = kafka_topic_factory(3)
    group = _uid("group")
    docs = [{"doc_id": f"doc-{i}", "text": f"Ada Lovelace met Charles Babbage, #{i}"} for i in range(100)]

    producer = _producer(kafka_bootstrap)
    try:
        futures = [producer.send(topic, key=d["doc_id"], value=d) for d in docs]
        producer.flush(timeout=30)
        metas = [f.get(timeout=30) for f in futures]
    finally:
        producer.close(timeout=30)
    per_partition = {p: sum(1 for m in metas if m.partition == p) for p in range(3)}
    assert sum(per_partition.values()) == 100
    assert all(per_partition.values()), f"keys did not spread over the 3 partitions: {per_partition}"

    # The idempotent producer registered a producer id on every partition it wrote.
    states = kafka_admin.describe_producers(_partitions(topic, 3))
    for tp, state in states.items():
        assert [ps.producer_id >= 0 for ps in state.active_producers] == [True], (tp, state)

    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=group,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             key_deserializer=KEYS, value_deserializer=JSON)
    seen = []
    try:
        deadline = time.monotonic() + POLL_DEADLINE_S
        while len(seen) < 100:
            assert time.monotonic() < deadline, f"consumed only {len(seen)}/100"
            batches = consumer.poll(timeout_ms=500)
            for records in batches.values():
                seen.extend(records)
            if batches:
                consumer.commit()  # synchronous, offsets of everything polled so far
        assert consumer.poll(timeout_ms=1000) == {}
        tps = _partitions(topic, 3)
        end = consumer.end_offsets(tps)
        for tp in tps:
            assert consumer.committed(tp) == end[tp] == per_partition[tp.partition]
    finally:
        consumer.close(autocommit=False)

    assert sorted(r.value["doc_id"] for r in seen) == sorted(d["doc_id"] for d in docs)
    assert all(r.key == r.value["doc_id"] for r in seen)
    # Per-key ordering: offsets within a partition are consecutive from 0.
    for p in range(3):
        assert sorted(r.offset for r in seen if r.partition == p) == list(range(per_partition[p]))

    committed = kafka_admin.list_group_offsets({group: None})[group]
    assert {tp.partition: om.offset for tp, om in committed.items() if tp.topic == topic} == per_partition


def test_transactions_commit_and_abort_read_committed(kafka_bootstrap, kafka_topic_factory):
    topic = kafka_topic_factory(3)
    producer = _producer(kafka_bootstrap, transactional_id=_uid("txn"))
    try:
        producer.init_transactions()

        producer.begin_transaction()
        for i in range(10):
            producer.send(topic, key=f"a-{i}", value={"txn": "first", "i": i})
        producer.commit_transaction()

        producer.begin_transaction()
        for i in range(7):
            producer.send(topic, key=f"b-{i}", value={"txn": "aborted", "i": i})
        producer.flush(timeout=30)  # really written to the log before the abort
        producer.abort_transaction()

        producer.begin_transaction()
        for i in range(5):
            producer.send(topic, key=f"c-{i}", value={"txn": "second", "i": i})
        producer.commit_transaction()
    finally:
        producer.close(timeout=30)

    committed = _read_all(kafka_bootstrap, topic, 3, "read_committed")
    assert sorted((r.value["txn"], r.value["i"]) for r in committed) == sorted(
        [("first", i) for i in range(10)] + [("second", i) for i in range(5)])

    # The aborted records are in the log; only read_committed hides them.
    everything = _read_all(kafka_bootstrap, topic, 3, "read_uncommitted")
    assert sorted(r.value["txn"] for r in everything).count("aborted") == 7
    assert len(everything) == 22


def test_consume_transform_produce_with_send_offsets_to_transaction(
        kafka_bootstrap, kafka_admin, kafka_topic_factory):
    source = kafka_topic_factory(3)
    sink = kafka_topic_factory(3)
    group = _uid("ctp")
    n = 30

    plain = _producer(kafka_bootstrap)
    try:
        for i in range(n):
            plain.send(source, key=f"doc-{i}", value={"doc_id": f"doc-{i}"})
        plain.flush(timeout=30)
    finally:
        plain.close(timeout=30)

    consumer = KafkaConsumer(source, bootstrap_servers=kafka_bootstrap, group_id=group,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             isolation_level="read_committed",
                             key_deserializer=KEYS, value_deserializer=JSON)
    producer = _producer(kafka_bootstrap, transactional_id=_uid("ctp-txn"))
    try:
        producer.init_transactions()

        def poll_some() -> dict:
            deadline = time.monotonic() + POLL_DEADLINE_S
            while True:
                assert time.monotonic() < deadline, "no input records"
                batches = consumer.poll(timeout_ms=500)
                if batches:
                    return batches

        def process(batches) -> int:
            producer.begin_transaction()
            offsets = {}
            for tp, records in batches.items():
                for r in records:
                    producer.send(sink, key=r.key, value={"doc_id": r.value["doc_id"], "entities": []})
                offsets[tp] = OffsetAndMetadata(records[-1].offset + 1, "", -1)
            producer.send_offsets_to_transaction(offsets, consumer.group_metadata())
            return sum(len(records) for records in batches.values())

        # A failed batch: output and input offsets are rolled back together.
        aborted = process(poll_some())
        producer.flush(timeout=30)
        producer.abort_transaction()
        assert kafka_admin.list_group_offsets({group: None})[group] == {}
        for tp in consumer.assignment():  # rewind to the committed position (none yet)
            consumer.seek_to_beginning(tp)

        done = 0
        while done < n:
            done += process(poll_some())
            producer.commit_transaction()
        assert done == n
    finally:
        producer.close(timeout=30)
        consumer.close(autocommit=False)

    end = {tp.partition: o for tp, o in _end_offsets(kafka_bootstrap, source, 3).items()}
    # The coordinator writes the transaction's commit markers after EndTxn returns: the offsets show a moment later.
    deadline = time.monotonic() + 30
    while True:
        committed = kafka_admin.list_group_offsets({group: None})[group]
        if {tp.partition: om.offset for tp, om in committed.items()} == end or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert {tp.partition: om.offset for tp, om in committed.items()} == end
    assert sum(end.values()) == n

    out = _read_all(kafka_bootstrap, sink, 3, "read_committed")
    assert sorted(r.value["doc_id"] for r in out) == sorted(f"doc-{i}" for i in range(n))
    assert len(_read_all(kafka_bootstrap, sink, 3, "read_uncommitted")) == n + aborted


def _end_offsets(bootstrap: str, topic: str, n_partitions: int) -> dict:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        return consumer.end_offsets(_partitions(topic, n_partitions))
    finally:
        consumer.close()
