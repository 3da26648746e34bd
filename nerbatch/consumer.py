"""The long-running Kafka worker behind ``nerbatch consume``.

Documents come in as Kafka messages (one JSON document per message, the same
objects as a JSONL line; the message key is not used), are annotated in
micro-batches and go out as one message per document on an output topic
and/or as parquet part files in a folder.

Flow
----
The worker polls until it holds ``max_batch_docs`` messages or
``max_batch_ms`` have passed since the first message of the batch, parses
every message with :func:`nerbatch.documents.parse_document` (``source`` is
``"topic/partition"`` and ``position`` the offset, so a generated id reads
``topic/partition:offset``), annotates the good ones with one
``NerPipeline.annotate`` call over the batch, then produces/writes and commits.

Outputs
-------
* Output topic: one message per input document, keyed by doc id, value
  ``{"doc_id", "model", "entities": [entity records], "source": {"topic",
  "partition", "offset"}}`` (UTF-8 JSON).  ``"entities": []`` is the explicit
  "no entities" outcome.
* Output folder: per input partition, parquet part files of entity records
  (``entity_record.v1`` plus kept fields) named
  ``part-<topic>-<partition:05d>-<first offset:020d>-<writer>.parquet``, each written
  atomically (:class:`~nerbatch.sinks.ParquetSink`: temp file, fsync, rename).
  A part covers the offsets ``first_offset..last_offset`` of one partition
  (both in its key-value metadata, with the model, group and document
  counts); documents without entities have no rows, failed ones are in
  ``_errors-<same stem>.jsonl`` (``error_record.v1``) next to it.  Side
  files start with ``_``, which parquet dataset readers (pyarrow, pandas,
  Spark) skip, so the folder reads as the entity records alone.  With
  ``outcomes``, ``_outcomes-<same stem>.parquet`` (``document_outcome.v1``)
  holds one row per offset of the part: entities, no_entities or failed.  A part rolls
  after ``part_max_rows`` entity rows or ``part_max_seconds``, and all parts roll
  once they hold ``part_max_rows`` documents together, so that a flood of failing
  documents (which add no entity rows) is never held in memory.  ``<writer>``
  is new for every part written, so no worker ever replaces another's file:
  once a part's offsets are committed, its worker removes the files that
  start inside its offsets under another writer (what a crash or a redone
  attempt left), and a worker whose commit the group refuses (it was paused
  while its partitions moved on) removes its own.  One output folder belongs
  to one consumer group.  A killed worker can leave hidden
  ``.part-*.tmp-*`` files; they are never read and may be deleted when no
  worker is running.

Failed documents (poison messages)
----------------------------------
Anything ``parse_document`` reports (bad JSON, not an object, missing or
empty text, oversized, invalid UTF-8...), a document the model fails on
(``pipeline_error``) and a document whose output message would be larger than
``max_message_bytes`` (``oversized``; sizes count Kafka's record framing, so a
message within it also fits a topic whose ``max.message.bytes`` is the same)
is a failed document.  It goes to the dead-letter topic with the original key,
the ORIGINAL payload as value (cut to fit ``max_message_bytes`` in the rare
case it does not, with header ``nerbatch-payload-truncated``; the original
headers are dropped too, with ``nerbatch-headers-dropped``, when they alone
leave no room), the original headers and ``nerbatch-reason``,
``nerbatch-reason-kind``, ``nerbatch-source-topic``,
``nerbatch-source-partition``, ``nerbatch-source-offset`` and, when known,
``nerbatch-doc-id``.  With an output folder it is also written as an error
record.  It is committed with its batch, so it never stalls a partition.  A
worker needs ``dead_letter_topic`` or ``output_dir`` (the options are refused
otherwise), so a failed document cannot vanish; failed documents are also
logged.  Keep ``max_message_bytes`` at or below the ``max.message.bytes`` of
the output and dead-letter topics: a message the broker refuses fails its
whole batch, which is then retried.  A model that fails on one document
dead-letters it (``pipeline_error``); a model that fails on every document of
a batch stops the worker with an exception, nothing committed.

Commit rule (at-least-once, the default)
----------------------------------------
Auto-commit is off.  The offsets of a partition are committed only when
everything produced for the messages up to them is durable:

* topic output only: after the batch's producer flush, every message
  acknowledged (idempotent producer, ``acks=all``), then the batch's offsets
  are committed;
* with an output folder: after the partition's part (and error file) is
  renamed into place, which happens after the output messages of every batch
  in it were acknowledged, and after a commit of the offsets already
  committed has shown that this worker still owns the partition.  Offsets therefore trail by up to
  ``part_max_seconds``.

Any failure (a send not acknowledged, a commit refused, a part not written)
rewinds the partitions of the failed work to their last committed offset and
retries after an exponential backoff (1 s doubling to ``max_backoff_s``): the
redo can duplicate output messages, never lose one.  A broker that is down at
start or goes away is retried the same way, with a log line per attempt.

Exactly-once (``exactly_once=True``, topic to topic)
-----------------------------------------------------
Each batch is one transaction of a transactional producer: the output and
dead-letter messages and the input offsets
(``send_offsets_to_transaction`` with the consumer's group metadata, so a
stale group member is fenced); the consumer reads with
``isolation_level=read_committed``.  Any failure aborts the transaction and
rewinds.  The ``transactional_id`` defaults to
``nerbatch-<group>-<host>-<pid>`` (unique per worker instance); give each
long-lived worker slot a stable one (``--transactional-id``) so that a
restarted worker aborts its crashed predecessor's open transaction at once
(otherwise read_committed readers of the output wait for
``transaction_timeout_ms``).  An output folder is refused in this mode:
parquet files cannot join a Kafka transaction.

Rebalances
----------
The worker never commits work of a partition it lost: when partitions are
revoked, the records of those partitions not yet committed (unprocessed ones
in hand, and documents buffered for an open part) are DROPPED, uncommitted;
the new owner re-reads them from the last committed offset.  Nothing is
processed while a rebalance is in progress.  Partitions revoked and handed
straight back (eager rebalancing) keep their work.  A batch is always
processed between two polls, so revocation never interrupts one; the only
duplicates a rebalance causes are output messages of dropped, uncommitted
work.

Connections
-----------
Consumer, producer and admin client get the same settings: bootstrap servers,
security protocol, SASL mechanism and username, CA/certificate/key files; the
SASL password is only read from an environment variable
(``NERBATCH_KAFKA_PASSWORD`` unless ``sasl_password_env`` names another) and
never logged (the CLI's log filter also blanks it out of kafka-python's DEBUG
request dumps).  kafka-python reports a failed bootstrap only as a timeout; the
worker reads the reason from kafka-python's log record and stops on refused
credentials or certificates instead of retrying them.  A
``group_instance_id`` (static membership) lets a restarted worker take its
partitions back at once instead of after the session timeout of its dead
predecessor.  Missing topics and refused credentials are errors
(:class:`ConsumeConfigError`), also for a topic deleted while the worker runs;
an unreachable broker is retried.

Stopping
--------
:meth:`Worker.stop` (SIGTERM/SIGINT in the CLI) stops polling; the batch in
hand is finished, flushed and committed, open parts are written and
committed, the consumer leaves the group and the worker returns.  ``max_docs``
(that many messages processed) and ``idle_timeout`` (no message for that many
seconds since the last assignment, and the broker's end offsets show nothing left
to read in any assigned partition, so neither a slow join nor an unreachable
broker ends a run) end a run the same way.  Waiting for the broker (acknowledgements, and in
exactly-once mode a transaction's offsets, commit or abort) gives up 5 s after
a stop request: the batch stays uncommitted, and an open transaction is
aborted by the broker after ``transaction_timeout_ms`` (or at once by the next
worker with the same transactional id).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import re
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from nerbatch import __version__
from nerbatch.documents import Document, DocumentError, RAW_LIMIT, parse_document, reason_kind
from nerbatch.errors import NerbatchError, OutputError
from nerbatch.records import entity_arrow_schema, error_record, outcome_arrow_schema, outcome_columns

__all__ = [
    "ConsumeConfigError",
    "UnreadableRecordError",
    "ConsumeOptions",
    "ConsumeReport",
    "PASSWORD_ENV",
    "Worker",
    "part_name",
    "report_dict",
]

log = logging.getLogger("nerbatch.consumer")

#: Environment variable the SASL password is read from (never from an option).
PASSWORD_ENV = "NERBATCH_KAFKA_PASSWORD"

_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
# Those a username and password configure (OAUTHBEARER and GSSAPI need more than options can give).
_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_HEADER_PREFIX = "nerbatch-"
# The smallest --max-message-bytes: a dead-letter message stripped of payload, key and the input's
# headers still carries our headers (a topic name may take 249 bytes) and at least 250 bytes of reason.
MIN_MESSAGE_BYTES = 1024


REBALANCE_POLL_S = 0.1  # the shortest poll while the group rebalances
STOP_GRACE_S = 5.0  # how long a stop request still waits for an unresponsive broker
TOPIC_CHECK_S = 60.0  # how often the worker asks whether its input topics still exist
LAG_ENDS_S = 5.0  # how often the lag gauge asks the broker for its partitions' ends
DEFAULT_METRICS_HOST = "127.0.0.1"
DEFAULT_MAX_POLL_INTERVAL_MS = 300_000  # kafka-python's, used when --max-poll-interval-ms is not given
INT32_MAX = 2**31 - 1  # the largest timeout Kafka's protocol carries


class ConsumeConfigError(NerbatchError, ValueError):
    """The worker's options cannot work (or the cluster refuses them: topics, credentials)."""


class UnreadableRecordError(NerbatchError):
    """A record of an input partition cannot be decoded, so it can be neither annotated nor dead-lettered."""


@dataclass(frozen=True)
class ConsumeOptions:
    """Everything a :class:`Worker` needs besides the pipeline.  See the module docstring."""

    bootstrap_servers: str | Sequence[str]
    topics: Sequence[str]
    group: str
    output_topic: str | None = None
    output_dir: str | None = None
    dead_letter_topic: str | None = None
    max_batch_docs: int = 256
    max_batch_ms: int = 500
    exactly_once: bool = False
    transactional_id: str | None = None  # None: nerbatch-<group>-<host>-<pid>
    transaction_timeout_ms: int = 60_000
    id_field: str = "id"
    text_field: str = "text"
    keep_fields: Sequence[str] = ()
    max_doc_chars: int = 1_000_000
    max_message_bytes: int = 1_000_000  # larger output messages fail their document
    part_max_rows: int = 100_000
    part_max_seconds: float = 60.0
    outcomes: bool = False  # with output_dir: an outcome row per document next to each part
    metrics_port: int | None = None
    metrics_host: str | None = None  # None: DEFAULT_METRICS_HOST; given, it needs metrics_port
    log_interval: float = 30.0
    max_docs: int | None = None  # stop after this many input messages
    idle_timeout: float | None = None  # stop after this many seconds without a message, once caught up
    auto_offset_reset: str = "earliest"  # where a group without committed offsets starts
    group_instance_id: str | None = None  # static membership: a restart takes its partitions back at once
    session_timeout_ms: int | None = None  # None: the client default (45 s)
    max_poll_interval_ms: int | None = None  # None: the client default (300 s); a batch must finish within it
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password_env: str = PASSWORD_ENV
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    client_id: str | None = None
    max_backoff_s: float = 30.0
    bootstrap_timeout_ms: int = 10_000  # one connection attempt
    commit_timeout_ms: int = 15_000
    flush_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if isinstance(self.topics, str):
            object.__setattr__(self, "topics", (self.topics,))
        object.__setattr__(self, "topics", tuple(dict.fromkeys(self.topics)))
        if isinstance(self.keep_fields, str):
            object.__setattr__(self, "keep_fields", (self.keep_fields,))
        object.__setattr__(self, "keep_fields", tuple(dict.fromkeys(self.keep_fields)))

    def validate(self) -> None:
        """Raise :class:`ConsumeConfigError` (one line) for options that cannot work."""

        def fail(message: str):
            raise ConsumeConfigError(message)

        if not self.bootstrap_servers:
            fail("no bootstrap servers given")
        for option, value in (("id-field", self.id_field), ("text-field", self.text_field)):
            if not isinstance(value, str) or not value:
                fail(f"--{option} must be a non-empty field name, got {value!r}")
        if self.transactional_id and not self.exactly_once:
            fail("--transactional-id is used only with --exactly-once")
        if self.metrics_host is not None and self.metrics_port is None:
            fail("--metrics-host is used only with --metrics-port")
        servers = self.bootstrap_servers
        for server in servers.split(",") if isinstance(servers, str) else servers:
            host, _, port = server.strip().rpartition(":")
            if not host.strip("[]") or not port.isdigit() or not 0 < int(port) < 65536:
                fail(f"bootstrap server {server.strip()!r} is not HOST:PORT (port 1-65535) "
                     f"in {servers!r}")
        if not self.topics:
            fail("no input topic given")
        if not self.group:
            fail("a consumer group is required")
        if not self.output_topic and not self.output_dir:
            fail("nowhere to write: give an output topic, an output folder, or both")
        if not self.dead_letter_topic and not self.output_dir:
            fail("failed documents would vanish: give a dead-letter topic or an output folder for error records")
        if self.outcomes and not self.output_dir:
            fail("outcome files go next to the parquet parts: give an output folder "
                 "(the output topic already has one message per document)")
        for name in ("output_topic", "dead_letter_topic"):
            value = getattr(self, name)
            if value and value in self.topics:
                fail(f"{name.replace('_', ' ')} {value!r} is also an input topic")
        if self.exactly_once:
            if not self.output_topic:
                fail("exactly-once needs an output topic (it is topic to topic)")
            if self.output_dir:
                fail("exactly-once is topic to topic: parquet files cannot join a Kafka transaction; "
                     "write parquet from a separate at-least-once worker group")
        if self.session_timeout_ms is not None and self.session_timeout_ms < 1:
            fail(f"session timeout must be positive, got {self.session_timeout_ms!r}")
        if self.max_poll_interval_ms is not None and self.max_poll_interval_ms < 1:
            fail(f"max poll interval must be positive, got {self.max_poll_interval_ms!r}")
        for name in ("session_timeout_ms", "max_poll_interval_ms", "transaction_timeout_ms"):
            value = getattr(self, name)
            if isinstance(value, int) and value > INT32_MAX:  # Kafka's protocol carries them as int32
                fail(f"{name.replace('_', ' ')} must be at most {INT32_MAX} (Kafka's largest), got {value}")
        if self.group_instance_id is not None and not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", self.group_instance_id):
            fail(f"group instance id must be 1-249 of A-Z a-z 0-9 . _ -, got {self.group_instance_id!r}")
        for name in ("max_batch_docs", "max_batch_ms", "max_doc_chars", "max_message_bytes", "part_max_rows",
                     "transaction_timeout_ms", "commit_timeout_ms", "bootstrap_timeout_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                fail(f"{name.replace('_', ' ')} must be a positive integer, got {value!r}")
        if isinstance(self.max_message_bytes, int) and 0 < self.max_message_bytes < MIN_MESSAGE_BYTES:
            fail(f"max message bytes must be at least {MIN_MESSAGE_BYTES} (room for a dead-letter message's "
                 f"headers), got {self.max_message_bytes}")
        for name in ("part_max_seconds", "log_interval", "max_backoff_s", "flush_timeout_s"):
            if not getattr(self, name) > 0:
                fail(f"{name.replace('_', ' ')} must be positive, got {getattr(self, name)!r}")
        if self.max_docs is not None and self.max_docs < 1:
            fail(f"max docs must be positive, got {self.max_docs!r}")
        if self.idle_timeout is not None and not self.idle_timeout > 0:
            fail(f"idle timeout must be positive, got {self.idle_timeout!r}")
        if self.metrics_port is not None and not 0 <= self.metrics_port <= 65535:
            fail(f"metrics port must be 0..65535, got {self.metrics_port!r}")
        if self.auto_offset_reset not in ("earliest", "latest"):
            fail(f"auto offset reset must be 'earliest' or 'latest', got {self.auto_offset_reset!r}")
        if self.security_protocol not in _SECURITY_PROTOCOLS:
            fail(f"security protocol must be one of {', '.join(_SECURITY_PROTOCOLS)}, got {self.security_protocol!r}")
        if self.sasl_mechanism is not None and self.sasl_mechanism not in _SASL_MECHANISMS:
            fail(f"SASL mechanism must be one of {', '.join(_SASL_MECHANISMS)}, got {self.sasl_mechanism!r}")
        if self.security_protocol.startswith("SASL_"):
            if not self.sasl_mechanism:
                fail(f"{self.security_protocol} needs a SASL mechanism ({', '.join(_SASL_MECHANISMS)})")
            if not self.sasl_username:
                fail(f"SASL {self.sasl_mechanism} needs a username")
            password = os.environ.get(self.sasl_password_env)
            if not password:
                fail(f"SASL {self.sasl_mechanism} needs the password in the environment variable "
                     f"{self.sasl_password_env}")
            try:
                password.encode()
            except UnicodeEncodeError:
                fail(f"the password in {self.sasl_password_env} is not valid UTF-8")
        elif self.sasl_mechanism or self.sasl_username:
            # Ignoring them would connect without the authentication the operator asked for.
            fail(f"SASL settings need security protocol SASL_PLAINTEXT or SASL_SSL, not {self.security_protocol}")
        given = [name for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile") if getattr(self, name)]
        if given and self.security_protocol not in ("SSL", "SASL_SSL"):
            fail(f"{given[0].replace('_', ' ')} needs security protocol SSL or SASL_SSL, not {self.security_protocol}: "
                 "the connection would not be encrypted")
        for name in given:
            if not os.path.isfile(getattr(self, name)):
                fail(f"{name.replace('_', ' ')} {getattr(self, name)!r} is not a file")
        if self.ssl_keyfile and not self.ssl_certfile:
            fail("ssl keyfile needs ssl certfile")
        if given:
            _check_tls_files(self.ssl_cafile, self.ssl_certfile, self.ssl_keyfile, fail)
        if self.output_dir:
            if os.path.exists(self.output_dir) and not os.path.isdir(self.output_dir):
                fail(f"output folder {self.output_dir!r} exists and is not a folder")
            parent = os.path.dirname(os.path.abspath(self.output_dir))
            if not os.path.isdir(parent):
                fail(f"cannot create output folder {self.output_dir!r}: {parent!r} "
                     + ("is not a folder" if os.path.exists(parent) else "does not exist"))
        entity_arrow_schema(self.keep_fields)  # OutputError for kept fields named like record fields

    def effective_transactional_id(self) -> str:
        if self.transactional_id:
            return self.transactional_id
        return f"nerbatch-{self.group}-{socket.gethostname()}-{os.getpid()}"

    def client_config(self) -> dict[str, Any]:
        """Connection settings shared by the consumer and the producer (holds the password: never log it)."""
        servers = self.bootstrap_servers
        config: dict[str, Any] = {
            "bootstrap_servers": [x.strip() for x in servers.split(",") if x.strip()]
            if isinstance(servers, str) else list(servers),
            "client_id": self.client_id or f"nerbatch-{socket.gethostname()}-{os.getpid()}",
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            config["sasl_mechanism"] = self.sasl_mechanism
            if self.sasl_username:
                config["sasl_plain_username"] = self.sasl_username
                config["sasl_plain_password"] = os.environ.get(self.sasl_password_env)
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if getattr(self, name):
                config[name] = getattr(self, name)
        return config


@dataclass
class ConsumeReport:
    """What a worker did, returned when it stops."""

    group: str
    model: str
    docs_in: int = 0  # input messages processed (committed or rewound for redo)
    docs_ok: int = 0
    docs_failed: int = 0
    produced: int = 0  # output messages acknowledged
    dead_lettered: int = 0
    batches: int = 0
    batch_failures: int = 0
    commits: int = 0
    parts: int = 0
    sentences: int = 0
    tokens: int = 0
    entities: int = 0
    dropped_on_rebalance: int = 0
    seconds: float = 0.0
    stopped_by: str = ""
    unfinished: bool = False  # work left uncommitted when it stopped (read again by the next run)
    part_paths: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.docs_in} messages ({self.docs_ok} annotated, {self.docs_failed} failed), "
                f"{self.produced} produced, {self.dead_lettered} dead-lettered, {self.parts} parts, "
                f"{self.batches} batches ({self.batch_failures} retried), {self.tokens} tokens in "
                f"{self.seconds:.1f}s; stopped by {self.stopped_by or 'error'}")


def part_name(topic: str, partition: int, first_offset: int, writer: str, kind: str = "part") -> str:
    """File name of the part (``kind="part"``), error file (``"errors"``) or outcome file (``"outcomes"``)
    starting at ``first_offset``, written by ``writer`` (8 hex digits, new for every part)."""
    stem = f"{topic}-{partition:05d}-{first_offset:020d}-{writer}"
    if kind == "part":
        return f"part-{stem}.parquet"
    return f"_{kind}-{stem}.{'jsonl' if kind == 'errors' else 'parquet'}"  # "_": dataset readers skip it


def _part_files(topic: str, partition: int) -> re.Pattern:
    """Names of a partition's parts and side files; groups: first offset, writer."""
    return re.compile(rf"(?:part|_errors|_outcomes)-{re.escape(topic)}-{partition:05d}-(\d{{20}})-([0-9a-f]{{8}})"
                      r"\.(?:parquet|jsonl)")


def _remove_parts(written) -> None:
    """Remove the files of ``(writer, part, errors, outcomes)`` paths: names of one attempt alone."""
    for _, *paths in written:
        for path in paths:
            with contextlib.suppress(OSError):
                os.remove(path)


# --------------------------------------------------------------------------- kafka plumbing


def _commit_refusals() -> tuple[type, ...]:
    """Errors of an offset commit the group did not apply: this worker no longer owns the partitions."""
    errors = _kafka().errors
    return (errors.CommitFailedError, errors.FencedInstanceIdError, errors.IllegalGenerationError,
            errors.UnknownMemberIdError, errors.RebalanceInProgressError)


def _kafka():
    import kafka
    import kafka.errors

    return kafka


def _make_consumer(config: dict):
    from kafka import KafkaConsumer

    class _Consumer(KafkaConsumer):
        """A consumer whose failed construction does not leave its IO thread running."""

        def __init__(self, **configs):
            try:
                super().__init__(**configs)
            except BaseException:
                client = getattr(self, "_client", None)
                if client is not None:
                    try:
                        client.close()
                    except Exception:  # noqa: BLE001 - cleaning up after a failure
                        pass
                raise

    return _Consumer(**config)


_FATAL_KAFKA_ERRORS = (
    "KafkaConfigurationError",
    "AuthorizationError",
    "SaslAuthenticationFailedError",
    "AuthenticationFailedError",
    "AuthenticationMethodNotSupported",
    "UnsupportedSaslMechanismError",
    "IllegalSaslStateError",
    # settings the broker refuses: retrying cannot help
    "InvalidSessionTimeoutError",  # --session-timeout-ms outside group.min/max.session.timeout.ms
    "InvalidTransactionTimeoutError",  # --transaction-timeout-ms above transaction.max.timeout.ms
    "InvalidGroupIdError",
    "FencedInstanceIdError",  # another member joined with this --group-instance-id
    "SSLCertVerificationError",  # the broker's certificate does not match --ssl-cafile or its host name
)


# A record batch's header (61 bytes) plus one record's own framing (length, attributes,
# timestamp and offset deltas, key and value lengths, header count: at most 36 bytes).
_BATCH_FRAMING = 61 + 36
_HEADER_FRAMING = 10  # key and value lengths of one header


def _record_bytes(key: bytes | None, value: bytes | None, headers) -> int:
    """Upper bound of the size the broker compares with ``max.message.bytes`` for one record."""
    return (_BATCH_FRAMING + len(key or b"") + len(value or b"")
            + sum(_HEADER_FRAMING + len(k.encode() if isinstance(k, str) else k) + len(v or b"") for k, v in headers))


def _check_tls_files(cafile: str | None, certfile: str | None, keyfile: str | None, fail) -> None:
    """Load the PEM files as the clients will, so that a wrong file fails now, by name, instead of
    every connection failing its handshake."""
    import ssl

    context = ssl.create_default_context()
    try:
        if cafile:
            context.load_verify_locations(cafile)
    except (ssl.SSLError, OSError) as exc:
        fail(f"ssl cafile {cafile!r} cannot be used for TLS ({_describe(exc)})")
    try:
        if certfile:  # a key that needs a password fails here instead of prompting on a terminal
            context.load_cert_chain(certfile, keyfile, password=lambda: b"")
    except (ssl.SSLError, OSError) as exc:
        fail(f"ssl certfile {certfile!r}{f' with ssl keyfile {keyfile!r}' if keyfile else ''} cannot be used "
             f"for TLS ({_describe(exc)})")


class _BootstrapFailures:
    """Why one worker's bootstrap connections failed, read from kafka-python's log records.

    After its bootstrap timeout kafka-python raises only 'Unable to bootstrap', whatever refused
    the connections (a password, a certificate, a TLS handshake); each reason is an argument of
    its 'Bootstrap connection to ... failed' record. A refusal is kept once seen: a broker may
    answer the next attempt by just closing the socket. The records of this worker's clients are
    told from other workers' by their thread: the worker's own, or kafka-python's IO thread, named
    after the client id.
    """

    def __init__(self, client_id: str) -> None:
        self.io_thread = f"kafka-io-{client_id}"
        self.io_thread_shared = False  # another running worker has the same client id
        self.thread: int | None = None
        self.refusal: BaseException | None = None
        self.last: BaseException | None = None

    def see(self, record: logging.LogRecord) -> None:
        """Called in the thread that logs the record (``record.thread`` is None without logThreads)."""
        args = record.args if isinstance(record.args, tuple) else ()
        if not (str(record.msg).startswith("Bootstrap connection to") and len(args) > 1
                and isinstance(args[1], BaseException)):
            return
        if threading.get_ident() == self.thread or (
                threading.current_thread().name == self.io_thread and not self.io_thread_shared):
            self.last = args[1]
            if self.refusal is None and _is_fatal(args[1]):
                self.refusal = args[1]

    def take(self) -> BaseException | None:
        """The refusal if there was one, else the last reason; forgotten once taken."""
        reason = self.refusal or self.last
        self.refusal = self.last = None
        return reason


class _Fenced:
    """Whether kafka-python found this worker fenced: another member joined the group with its
    ``--group-instance-id``. The client logs it from its heartbeat, on its IO thread (named after
    the client id), stops heartbeating and raises nothing until the worker's next commit; a worker
    without input would wait for ever, and one with input would first annotate and send a batch
    that the new member sends too."""

    def __init__(self, client_id: str, group: str, instance_id: str) -> None:
        self.io_thread = f"kafka-io-{client_id}"
        self.io_thread_shared = False  # unused: the record's group and instance id tell workers apart
        self.group, self.instance_id = group, instance_id
        self.seen = False

    def see(self, record: logging.LogRecord) -> None:
        # kafka-python 3.0's two records: "... for group %s due to fenced id error: %s" (group, instance
        # id) and "... caught fenced group_instance_id %s error" (instance id); another client of the
        # process may share the client id, and so the thread
        args = record.args if isinstance(record.args, tuple) else ()
        if (record.levelno >= logging.ERROR and "fenced" in str(record.msg)
                and threading.current_thread().name == self.io_thread
                and args in ((self.group, self.instance_id), (self.instance_id,))):
            self.seen = True


class _KafkaLog:
    """Shows one kafka-python logger's records to the running workers' watchers (``see(record)``).

    The records must be made even where logging hides kafka-python (the CLI does, and so may an
    application): while a worker runs, that logger is enabled at WARNING, and a filter on it hands
    each record to the workers, then lets through only what the logging configuration showed.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._watchers: list[_BootstrapFailures | _Fenced] = []
        self._saved = (logging.NOTSET, False)  # the logger's level and disabled flag before the first watcher
        self._set_level = logging.WARNING
        self._shown_from = logging.WARNING

    def watch(self, watcher: _BootstrapFailures | _Fenced) -> None:
        with self._lock:
            if not self._watchers:
                logger = logging.getLogger(self.name)
                # dictConfig disables the loggers of libraries imported before it
                self._saved, self._shown_from = (logger.level, logger.disabled), logger.getEffectiveLevel()
                self._set_level = min(self._shown_from, logging.WARNING)
                if logger.disabled:
                    self._shown_from = logging.CRITICAL + 1
                logger.setLevel(self._set_level)
                logger.disabled = False
                logger.addFilter(self._filter)
            self._watchers.append(watcher)
            self._mark_shared()

    def unwatch(self, watcher: _BootstrapFailures | _Fenced) -> None:
        with self._lock:
            self._watchers.remove(watcher)
            self._mark_shared()
            if not self._watchers:
                logger = logging.getLogger(self.name)
                logger.removeFilter(self._filter)
                if logger.level == self._set_level:  # else the application has set it since
                    logger.setLevel(self._saved[0])
                logger.disabled = self._saved[1]

    def _mark_shared(self) -> None:
        names = [w.io_thread for w in self._watchers]
        for w in self._watchers:
            w.io_thread_shared = names.count(w.io_thread) > 1

    def _filter(self, record: logging.LogRecord) -> bool:
        for watcher in list(self._watchers):
            watcher.see(record)
        return record.levelno >= self._shown_from


_BOOTSTRAP_LOG = _KafkaLog("kafka.net.manager")  # for _BootstrapFailures
_HEARTBEAT_LOG = _KafkaLog("kafka.coordinator.heartbeat")  # for _Fenced
_worker_numbers = itertools.count(1)


def _is_fatal(exc: BaseException) -> bool:
    names = {cls.__name__ for cls in type(exc).__mro__}
    # kafka-python raises some broker errors as a plain KafkaError that names them
    # ("Unexpected error in InitProducerIdResponse: [Error 50] InvalidTransactionTimeoutError").
    return bool(names.intersection(_FATAL_KAFKA_ERRORS)) or any(name in str(exc) for name in _FATAL_KAFKA_ERRORS)


def _cut_for_log(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _describe(exc: BaseException) -> str:
    name = type(exc).__name__
    text = " ".join(str(exc).split())
    if not text or text in (name, f"{name}: None"):
        return name
    return text if text.startswith(name) else f"{name}: {text}"


def _close_producer(producer, timeout: float) -> None:
    """Close a producer, abandoning what the broker has not acknowledged by ``timeout``.

    kafka-python's ``close`` flushes first and raises when that times out (the broker is down),
    leaving the producer open; its ``__del__`` then tries again and prints an "Exception ignored"
    traceback.  Force-closing the sender fails the unacknowledged sends, so the second close
    finds nothing left to wait for.  Those sends belong to a batch that is rewound and retried.
    """
    try:
        producer.close(timeout=timeout)
        return
    except Exception:  # noqa: BLE001 - the broker is unreachable: abandon its sends
        pass
    sender = getattr(producer, "_sender", None)
    try:
        if sender is not None:
            sender.force_close()
            sender.join(timeout)
        producer.close(timeout=0)
    except Exception as exc:  # noqa: BLE001
        log.warning("could not close the Kafka producer cleanly (%s)", _describe(exc))


class _Metrics:
    """Prometheus metrics of one worker, in their own registry."""

    def __init__(self, group: str, model: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)  # resident memory, CPU and open files: what a long-running worker is watched on
        Info("nerbatch_consume", "The worker's group and model.", registry=r).info(
            {"group": group, "model": model, "version": __version__})
        self.consumed = Counter("nerbatch_consume_messages", "Input messages processed.", registry=r)
        self.annotated = Counter("nerbatch_consume_documents_annotated", "Documents annotated.", registry=r)
        self.failed = Counter("nerbatch_consume_documents_failed", "Failed documents, by reason kind.",
                              ["reason"], registry=r)
        self.produced = Counter("nerbatch_consume_produced", "Output messages acknowledged.", registry=r)
        self.dead_lettered = Counter("nerbatch_consume_dead_lettered", "Dead-letter messages acknowledged.",
                                     registry=r)
        self.tokens = Counter("nerbatch_consume_tokens", "Tokens annotated.", registry=r)
        self.entities = Counter("nerbatch_consume_entities", "Entities found.", registry=r)
        self.batches = Counter("nerbatch_consume_batches", "Micro-batches processed.", registry=r)
        self.batch_failures = Counter("nerbatch_consume_batch_failures",
                                      "Batches or commits that failed and were rewound for a retry.", registry=r)
        self.commits = Counter("nerbatch_consume_commits", "Offset commits (or committed transactions).",
                               registry=r)
        self.parts = Counter("nerbatch_consume_parts", "Parquet parts written.", registry=r)
        self.dropped = Counter("nerbatch_consume_dropped_on_rebalance",
                               "Uncommitted messages dropped because their partition was revoked.", registry=r)
        self.batch_seconds = Histogram("nerbatch_consume_batch_seconds", "Time to process one micro-batch.",
                                       registry=r, buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60))
        self.latency = Histogram(
            "nerbatch_consume_latency_seconds",
            "Input message timestamp to output committed, per message.",
            registry=r, buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300))
        self.lag = Gauge("nerbatch_consume_lag", "Messages behind the end of the assigned partitions.", registry=r)
        self.assigned = Gauge("nerbatch_consume_assigned_partitions", "Partitions assigned.", registry=r)


# Seconds a metrics client may take to send its request; prometheus_client's own server waits forever,
# so idle connections (a load balancer's TCP checks, a port scan) each held a thread.
METRICS_REQUEST_TIMEOUT_S = 10.0


def _serve_metrics(registry, host: str, port: int, stalled: Callable[[], str | None] = lambda: None):
    """Serve ``registry`` at http://host:port/ on a daemon thread, one thread per request; the server.

    ``/healthz`` answers 200 ``ok``, or 503 with ``stalled()``'s words when that is not None; ``/metrics``
    (and ``/``) the metrics; any other path 404, so that a probe of a mistyped path fails instead of
    passing for good. HEAD gets GET's status and headers.
    """
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from prometheus_client import make_wsgi_app

    metrics_app = make_wsgi_app(registry)

    def text(start_response, status: str, body: str) -> list[bytes]:
        data = body.encode()
        start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data)))])
        return [data]

    def answer(environ, start_response):
        path = environ.get("PATH_INFO")
        if path in ("/metrics", "/"):
            return metrics_app(environ, start_response)
        if path == "/healthz":
            problem = stalled()
            return text(start_response, "503 Service Unavailable" if problem else "200 OK", f"{problem or 'ok'}\n")
        return text(start_response, "404 Not Found", "not found: try /metrics or /healthz\n")

    def app(environ, start_response):
        if environ.get("REQUEST_METHOD") != "HEAD":
            return answer(environ, start_response)
        got = []
        body = answer({**environ, "REQUEST_METHOD": "GET"}, lambda status, headers, exc_info=None: got.append(
            (status, headers)))
        length = len(b"".join(body))
        status, headers = got[0]
        if not any(name.lower() == "content-length" for name, _ in headers):
            headers = [*headers, ("Content-Length", str(length))]
        start_response(status, headers)
        return []

    class Handler(WSGIRequestHandler):
        timeout = METRICS_REQUEST_TIMEOUT_S

        def log_message(self, format, *args) -> None:  # noqa: A002 - the stdlib's name
            pass

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]

        def handle_error(self, request, client_address) -> None:
            if not isinstance(sys.exc_info()[1], (TimeoutError, ConnectionError)):  # a client that went quiet
                super().handle_error(request, client_address)

    server = make_server(host, port, app, Server, handler_class=Handler)
    threading.Thread(target=server.serve_forever, name="nerbatch-metrics", daemon=True).start()
    return server


class _Annotated(NamedTuple):
    """What the outcome file needs of an annotated document (its text can go)."""

    position: int
    doc_id: str
    entities: int


@dataclass
class _Part:
    """Documents of one partition waiting for their parquet part."""

    first_offset: int
    last_offset: int
    opened: float
    tables: list = field(default_factory=list)
    rows: int = 0
    docs: int = 0
    errors: list = field(default_factory=list)  # DocumentError of the failed documents
    timestamps: list = field(default_factory=list)
    annotated: list = field(default_factory=list)  # _Annotated, for the outcome file


@dataclass
class _PartitionState:
    resume_at: int | None = None  # first offset of work not yet committed
    part: _Part | None = None


@dataclass
class _Outcome:
    record: Any
    doc: Document | None = None
    error: DocumentError | None = None
    entities: list | None = None  # entity records (output message)
    rows: dict | None = None  # the same as columns (parquet part); None: no entities


class _Listener:
    """Rebalance callbacks record events; the worker acts on them after poll() returns."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, set]] = []

    def take(self) -> list[tuple[str, set]]:
        with self.lock:
            events, self.events = self.events, []
        return events

    def as_kafka_listener(self):
        from kafka import ConsumerRebalanceListener

        outer = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked):
                with outer.lock:
                    outer.events.append(("revoked", set(revoked)))

            def on_partitions_assigned(self, assigned):
                with outer.lock:
                    outer.events.append(("assigned", set(assigned)))

            def on_partitions_lost(self, lost):
                with outer.lock:
                    outer.events.append(("lost", set(lost)))

        return Listener()


# --------------------------------------------------------------------------- the worker


class Worker:
    """One consumer-group member: poll, annotate, produce/write, commit.  See the module docstring.

    ``run()`` blocks until :meth:`stop` is called (from a signal handler or
    another thread), ``max_docs`` messages were processed or ``idle_timeout``
    passed without a message; it returns a :class:`ConsumeReport`.
    """

    def __init__(self, options: ConsumeOptions, pipeline) -> None:
        options.validate()
        if options.client_id is None:  # one per worker: its clients' log records name it
            options = replace(options, client_id=f"nerbatch-{socket.gethostname()}-{os.getpid()}-{next(_worker_numbers)}")
        self.options = options
        self.pipeline = pipeline
        self.model = pipeline.model_name
        self.schema = entity_arrow_schema(options.keep_fields)
        self.report = ConsumeReport(group=options.group, model=self.model)
        self.metrics = _Metrics(options.group, self.model)
        self._stop = threading.Event()
        self._listener = _Listener()
        self._consumer = None
        self._producer = None
        self._states: dict[Any, _PartitionState] = {}
        self._hand: list = []  # polled records not processed yet, in poll order
        self._batch_stats = [0, 0]  # sentences, tokens of the batch being processed
        self._pending_revoked: set = set()
        self._rebalancing = False
        self._failures = 0  # consecutive, for the backoff
        self._failed_uncommitted: set = set()  # partitions rewound after a failure, not committed since
        # After an undecodable record: poll one record at a time up to it (until the assignment changes)
        self._one_at_a_time = False
        self._unreadable: UnreadableRecordError | None = None  # raised once the work before it is committed
        self._metrics_server = None
        self._last_log = time.monotonic()
        self._last_round = time.monotonic()  # the loop's (or a wait's) last turn: /healthz watches it
        self._last_log_counts = (0, 0)
        self.running = threading.Event()  # set once connected and subscribed
        self._stop_at = 0.0  # monotonic time of the first stop request
        self._stop_reason = "stop"
        self._ran = False
        self._last_topic_check = time.monotonic()
        self._last_lag = self._last_ends = 0.0
        # The broker's partition ends as last asked: a fetch learns a partition's end only once its
        # records are handed out, so a backlog of partitions not reached yet would count as none.
        self._ends: dict = {}
        self._bootstrap_failures = _BootstrapFailures(self.options.client_id)
        # only a static member can be fenced
        self._fenced = _Fenced(self.options.client_id, options.group, options.group_instance_id) \
            if options.group_instance_id else None

    # ---- control

    def stop(self, reason: str = "stop") -> None:
        """Ask the worker to finish the batch in hand, commit and return (thread- and signal-safe);
        ``reason`` is the report's ``stopped_by`` (the CLI's signal handler says "signal")."""
        if not self._stop.is_set():
            self._stop_at = time.monotonic()
            self._stop_reason = reason
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # ---- lifecycle

    def run(self) -> ConsumeReport:
        if self._ran:  # its report, stop request and partition states belong to the first run
            raise RuntimeError("a Worker runs once: make a new one for another run")
        self._ran = True
        if self._stop.is_set():  # stopped before it started: nothing to connect to or serve
            self.report.stopped_by = self._stop_reason
            return self.report
        started = self._last_round = time.monotonic()
        o = self.options
        log.info("worker starting: group %s, topics %s -> %s%s%s, model %s, %s", o.group, ",".join(o.topics),
                 f"topic {o.output_topic}" if o.output_topic else "",
                 " and " if o.output_topic and o.output_dir else "",
                 f"folder {o.output_dir}" if o.output_dir else "", self.model,
                 "exactly-once" if o.exactly_once else "at-least-once")
        self._bootstrap_failures.thread = threading.get_ident()
        _BOOTSTRAP_LOG.watch(self._bootstrap_failures)
        if self._fenced:
            _HEARTBEAT_LOG.watch(self._fenced)
        try:
            self._start_metrics_server()
            if o.output_dir:
                from nerbatch.sinks import check_writable_folder

                check_writable_folder(o.output_dir)  # before consuming: parts that cannot be written retry forever
            if self._connect():
                self.running.set()
                self._loop()
                self._drain()
                if self._unreadable is not None:
                    raise self._unreadable
            elif not self.report.stopped_by:
                self.report.stopped_by = self._stop_reason
        except BaseException:
            self.report.stopped_by = self.report.stopped_by or "error"
            raise
        finally:
            _BOOTSTRAP_LOG.unwatch(self._bootstrap_failures)
            if self._fenced:
                _HEARTBEAT_LOG.unwatch(self._fenced)
            self._close()
            self.report.seconds = round(time.monotonic() - started, 3)
        log.info("worker stopped: %s", self.report.summary())
        return self.report

    def _start_metrics_server(self) -> None:
        port = self.options.metrics_port
        if port is None:
            return
        host = self.options.metrics_host or DEFAULT_METRICS_HOST
        try:
            self._metrics_server = _serve_metrics(self.metrics.registry, host, port, self._stalled)
        except (OSError, UnicodeError) as exc:  # UnicodeError: a name IDNA cannot encode ("a..b")
            raise ConsumeConfigError(
                f"cannot serve metrics on {host}:{port}: {getattr(exc, 'strerror', None) or exc}") from None
        log.info("metrics at http://%s:%d/metrics", f"[{host}]" if ":" in host else host,
                 self._metrics_server.server_address[1])

    def _stalled(self) -> str | None:
        """Why the worker looks hung (its loop has not come round for longer than a batch and a backoff may
        take), or None."""
        o = self.options
        limit = (o.max_poll_interval_ms or DEFAULT_MAX_POLL_INTERVAL_MS) / 1000 + o.max_backoff_s
        since = time.monotonic() - self._last_round
        if since <= limit:
            return None
        return f"stalled: the worker's loop has not come round for {since:.0f} s (limit {limit:.0f} s)"

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        return tuple(self._metrics_server.server_address[:2]) if self._metrics_server else None

    def _backoff(self, what: str, exc: BaseException | None) -> None:
        detail = f" ({_describe(exc)})" if exc else ""
        if self._stop.is_set():
            log.warning("%s%s; not retried: the worker is stopping", what, detail)
            return
        delay = min(self.options.max_backoff_s, 2.0 ** min(self._failures, 16))
        self._failures += 1
        log.warning("%s%s; retrying in %.0f s (attempt %d)", what, detail, delay, self._failures)
        self._last_round = time.monotonic()
        self._stop.wait(delay)
        self._last_round = time.monotonic()

    def _connect(self) -> bool:
        """Create the clients, retrying with backoff; False when stopped first."""
        kafka = _kafka()
        o = self.options
        while not self._stop.is_set():
            try:
                self._consumer = _make_consumer(self._consumer_config())
                self._check_topics()
                if o.output_topic or o.dead_letter_topic:
                    self._producer = self._make_producer()
                self._consumer.subscribe(list(o.topics), listener=self._listener.as_kafka_listener())
                # kafka-python (3.0) keeps the partition snapshot it took before subscribe() until
                # metadata next arrives, so the first assignment is made against an empty snapshot
                # and redone half a second later: a rebalance of the whole group. Fetching
                # metadata now, for topics just checked to exist, fills the snapshot first.
                self._consumer.topics()
                self._failures = 0
                log.info("connected to %s", o.bootstrap_servers)
                return True
            except ConsumeConfigError:
                raise
            except kafka.errors.KafkaError as exc:
                self._close_clients()
                cause = self._bootstrap_failures.take()
                for reason in (exc, cause):
                    if reason is not None and _is_fatal(reason):
                        raise ConsumeConfigError(f"Kafka refused the worker: {_describe(reason)}") from None
                self._backoff(f"cannot reach Kafka at {o.bootstrap_servers}"
                              + (f" (the last connection failed: {_describe(cause)})" if cause else ""), exc)
            except OSError as exc:
                self._close_clients()
                self._backoff(f"cannot reach Kafka at {o.bootstrap_servers}", exc)
        return False

    def _consumer_config(self) -> dict:
        o = self.options
        return {
            **o.client_config(),
            "group_id": o.group,
            "enable_auto_commit": False,
            "auto_offset_reset": o.auto_offset_reset,
            "isolation_level": "read_committed",
            "max_poll_records": o.max_batch_docs,
            "bootstrap_timeout_ms": o.bootstrap_timeout_ms,
            **({"group_instance_id": o.group_instance_id} if o.group_instance_id else {}),
            **({"session_timeout_ms": o.session_timeout_ms} if o.session_timeout_ms else {}),
            **({"max_poll_interval_ms": o.max_poll_interval_ms} if o.max_poll_interval_ms else {}),
        }

    def _make_producer(self):
        from kafka import KafkaProducer

        o = self.options
        config = {
            **o.client_config(),
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": 5,
            # A batch of several records stays within max_message_bytes, so the broker never refuses
            # one as too large: kafka-python 3.0.12's flush fails ("Future not done") while it
            # splits such a batch, and the batch would be retried forever.
            "batch_size": min(16_384, o.max_message_bytes),
            "max_request_size": max(o.max_message_bytes + 64 * 1024, 1_048_576),
            "max_block_ms": 15_000,
            "bootstrap_timeout_ms": o.bootstrap_timeout_ms,
        }
        if o.exactly_once:
            config["transactional_id"] = o.effective_transactional_id()
            config["transaction_timeout_ms"] = o.transaction_timeout_ms
        producer = KafkaProducer(**config)
        if o.exactly_once:
            try:
                producer.init_transactions()
            except BaseException:
                _close_producer(producer, timeout=2)
                raise
        return producer

    def _stop_if_deleted(self, kind: str, topics: list[str], more: dict[str, list[str]] | None = None) -> bool:
        """Raise ConsumeConfigError for those of ``topics`` (named as ``kind`` topics; ``more`` maps
        other kinds to theirs, asked in the same request) the cluster no longer has: nothing could be
        read from (or written to) them again, and waiting would look like a healthy idle worker.

        Asked of a client of its own with short timeouts (kafka-python's consumer would wait for the
        answer without a limit): when the broker does not answer, nothing is known and the worker
        goes on retrying.  Returns whether the broker answered."""
        from kafka import KafkaAdminClient

        kafka = _kafka()
        kinds = {kind: topics, **(more or {})}
        topics = list(dict.fromkeys(t for named in kinds.values() for t in named))
        if not topics or self._stop.is_set():
            return False

        def existing() -> set[str]:
            admin = KafkaAdminClient.__new__(KafkaAdminClient)
            try:
                admin.__init__(**self.options.client_config(), request_timeout_ms=5_000, bootstrap_timeout_ms=5_000)
            except BaseException:
                # Its network thread starts before it bootstraps, and close() skips a client that never
                # finished starting: without this each check during an outage leaked a thread and sockets.
                admin._closed = False
                with contextlib.suppress(Exception):
                    admin.close()
                raise
            try:
                return {t["name"] for t in admin.describe_topics(topics) if not t["error_code"]}
            finally:
                admin.close()

        try:
            found = self._await_broker(existing, "the topic check", limit_s=15.0)
        except kafka.errors.KafkaError as exc:
            # Also the one sign of an outage from a worker with nothing to read.
            log.warning("cannot ask %s whether topic(s) %s exist (%s); asked again later",
                        self.options.bootstrap_servers, ", ".join(topics), _describe(exc))
            return False
        missing = {kind: [t for t in named if t not in found] for kind, named in kinds.items()}
        gone = [f"{kind} topic{'s' if len(named) > 1 else ''} {', '.join(named)}"
                for kind, named in missing.items() if named]
        if gone:
            several = sum(len(named) for named in missing.values()) > 1
            raise ConsumeConfigError(
                f"{' and '.join(gone)} no longer exist{'' if several else 's'} on {self.options.bootstrap_servers}; "
                "the worker stops (its uncommitted work is read again once the topic is back)")
        return True

    def _check_topics(self) -> None:
        o = self.options
        available = self._consumer.topics()
        wanted = [*o.topics, *(t for t in (o.output_topic, o.dead_letter_topic) if t)]
        missing = [t for t in wanted if t not in available]
        if missing:
            raise ConsumeConfigError(f"topic(s) {', '.join(missing)} do not exist on {o.bootstrap_servers}")

    def _close_clients(self) -> None:
        if self._producer is not None:
            _close_producer(self._producer, timeout=5)
            self._producer = None
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False, timeout_ms=5_000)
            except Exception:  # noqa: BLE001
                pass
            self._consumer = None

    def _close(self) -> None:
        self._close_clients()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None

    # ---- the loop

    def _limit_left(self) -> int | None:
        """Messages still allowed by ``max_docs`` (None: no limit)."""
        if self.options.max_docs is None:
            return None
        return self.options.max_docs - self.report.docs_in

    def _loop(self) -> None:
        o = self.options
        hand = self._hand
        deadline = None
        last_message = None  # or the last assignment, if later; None: not in the group yet
        batch_s = o.max_batch_ms / 1000
        while not self._stop.is_set():
            self._last_round = time.monotonic()
            self._stop_if_fenced()  # before the batch in hand: the member that fenced this one has it
            left = self._limit_left()
            if left is not None and left <= 0:
                self.report.stopped_by = "max_docs"
                break
            take = o.max_batch_docs if left is None else min(o.max_batch_docs, left)
            now = time.monotonic()
            if len(hand) < take or self._rebalancing:
                # short polls: the stop flag, part rolls and log lines are looked at between them
                timeout = min(max(0.0, deadline - now) if hand and deadline is not None else batch_s, 0.5)
                if self._rebalancing:
                    # held records wait for the new assignment; polls of 0 s would spin the CPU and
                    # give the client no time to rejoin the group
                    timeout = max(timeout, REBALANCE_POLL_S)
                try:
                    records = self._poll(timeout, o.max_batch_docs)
                except UnreadableRecordError as exc:
                    self._unreadable = exc  # the records before it are processed and committed first
                    self.report.stopped_by = "unreadable_record"
                    break
            else:
                records = {}
            if self._apply_rebalance():
                # Idle time counts from the assignment: waiting to join (for a dead member's session
                # to expire, say) is not time without input.
                last_message = time.monotonic()
            if not hand:
                deadline = None
            for tp, recs in records.items():
                state = self._states.setdefault(tp, _PartitionState())
                if state.resume_at is None:
                    state.resume_at = recs[0].offset
                hand.extend(recs)
            now = time.monotonic()
            if records:
                last_message = now
                if deadline is None:
                    deadline = now + batch_s
            if hand and not self._rebalancing and (len(hand) >= take or now >= deadline):
                batch = hand[:take]
                del hand[:take]
                self._process(batch)
                deadline = time.monotonic() + batch_s if hand else None
            self._housekeeping()
            if (o.idle_timeout is not None and not hand and last_message is not None
                    and time.monotonic() - last_message >= o.idle_timeout and not self._rebalancing):
                # No input left is not the same as no topic, nor as a broker that stopped answering.
                if self._caught_up() and self._stop_if_deleted("input", list(o.topics)):
                    self.report.stopped_by = "idle_timeout"
                    break
                last_message = time.monotonic()  # wait another idle period before asking again
        if not self.report.stopped_by:
            self.report.stopped_by = self._stop_reason

    def _poll(self, timeout_s: float, max_records: int) -> dict:
        kafka = _kafka()
        try:
            return self._consumer.poll(timeout_ms=int(timeout_s * 1000),
                                       max_records=1 if self._one_at_a_time else max_records)
        except (kafka.errors.CorruptRecordError, kafka.errors.UnsupportedCodecError) as exc:
            if not self._one_at_a_time:
                # The client drops the records it decoded in this poll before the bad one: read them
                # again one at a time, so that they are processed and the bad record's offset is exact.
                try:
                    if self._reread_from_last_commit():
                        self._one_at_a_time = True
                        return {}
                except kafka.errors.KafkaError as rewind_failed:  # the broker is gone too: stop as before
                    log.warning("could not read again up to the undecodable record: %s", _describe(rewind_failed))
            # Polling again would not skip it: kafka-python 3.0.12 then loops at full CPU, deaf to SIGTERM.
            # Stopping leaves the record where it is; skipping it (or installing a codec) is the operator's call.
            at = ", ".join(f"{tp.topic}/{tp.partition} at offset {self._consumer.position(tp, timeout_ms=0)}"
                           for tp in sorted(self._consumer.assignment()))
            raise UnreadableRecordError(
                f"a record that cannot be decoded ({_describe(exc)}) is next in one of: {at}; the worker stops "
                "rather than skip it (move the group past it with kafka-consumer-groups --reset-offsets)"
            ) from None
        except kafka.errors.KafkaError as exc:
            if _is_fatal(exc):
                raise ConsumeConfigError(f"Kafka refused the worker: {_describe(exc)}") from None
            self._backoff("polling failed", exc)
            return {}

    def _apply_rebalance(self) -> bool:
        """Act on the group's rebalance callbacks since the last poll; True if an assignment came."""
        assigned = False
        for kind, tps in self._listener.take():
            if kind == "revoked":
                self._pending_revoked |= tps
                self._rebalancing = True
                if tps:
                    log.info("rebalance: %d partition(s) revoked, waiting for the new assignment", len(tps))
            elif kind == "lost":
                self._pending_revoked -= tps
                self._drop(tps, "lost (the group evicted this worker)")
            else:  # assigned (eager: the whole new assignment; cooperative: the added partitions)
                gone = self._pending_revoked - tps
                self._pending_revoked = set()
                self._rebalancing = False
                if gone:
                    self._drop(gone, "revoked")
                current = set(self._consumer.assignment())
                # A subscribed topic deleted while the worker runs only shows as an assignment without it.
                self._stop_if_deleted("input", [t for t in self.options.topics
                                                if not any(tp.topic == t for tp in current)])
                for tp in list(self._states):
                    if tp not in current:
                        self._states.pop(tp)
                self.metrics.assigned.set(len(current))
                log.info("rebalance: %d partition(s) assigned: %s", len(current),
                         ", ".join(f"{tp.topic}/{tp.partition}" for tp in sorted(current)) or "none")
                assigned = True
                self._one_at_a_time = False  # an undecodable record met before may now be another worker's
        return assigned

    def _discard_hand(self, tps) -> int:
        """Remove the records of ``tps`` from the hand; returns how many."""
        keys = {(tp.topic, tp.partition) for tp in tps}
        hand = self._hand
        before = len(hand)
        hand[:] = [r for r in hand if (r.topic, r.partition) not in keys]
        return before - len(hand)

    def _drop(self, tps: set, why: str) -> None:
        """Forget the uncommitted work of partitions this worker no longer owns (never commit it)."""
        dropped = self._discard_hand(tps)
        failed_before = bool(self._failed_uncommitted)
        self._failed_uncommitted -= set(tps)
        if failed_before and not self._failed_uncommitted:
            self._failures = 0  # the failed work is another worker's now: a later failure starts afresh
        buffered = 0
        for tp in tps:
            state = self._states.pop(tp, None)
            if state is not None and state.part is not None:
                buffered += state.part.docs
        if dropped or buffered:
            self.report.dropped_on_rebalance += dropped + buffered
            self.metrics.dropped.inc(dropped + buffered)
            log.info("partition(s) %s %s: dropped %d unprocessed and %d processed but uncommitted message(s); "
                     "they are re-read from the last committed offset",
                     ", ".join(f"{tp.topic}/{tp.partition}" for tp in sorted(tps)), why, dropped, buffered)

    # ---- one batch

    def _process(self, hand: list) -> None:
        kafka = _kafka()
        o = self.options
        started = time.monotonic()
        self._batch_stats = [0, 0]
        tps = {}
        for r in hand:
            tps.setdefault(self._tp(r), []).append(r)
        try:
            outcomes = self._annotate(hand)
            self._stop_if_fenced()  # the heartbeat may have learnt it meanwhile: nothing is sent
            messages = self._messages(outcomes)
            if o.exactly_once:
                self._send_transaction(messages, tps)
            else:
                if messages:
                    self._send(messages)
                if o.output_dir:
                    self._buffer(outcomes, tps)
                    self._roll(self._parts_full())
                else:
                    self._commit({tp: recs[-1].offset + 1 for tp, recs in tps.items()},
                                 [r.timestamp for r in hand])
        except (kafka.errors.KafkaError, OutputError, OSError, TimeoutError) as exc:
            self._stop_if_fenced(exc)
            if isinstance(exc, kafka.errors.KafkaTimeoutError):  # what sends to a deleted topic end in
                # asked first: the abort of a transaction that wrote to a deleted topic is never answered
                self._stop_if_deleted("output", [o.output_topic] if o.output_topic else [],
                                      {"dead-letter": [o.dead_letter_topic] if o.dead_letter_topic else []})
            if o.exactly_once or isinstance(exc, kafka.errors.KafkaError):
                self._reset_producer()
            self._rewind(tps)
            self.report.batch_failures += 1
            self.metrics.batch_failures.inc()
            self._backoff(f"batch of {len(hand)} message(s) failed; rewound "
                          f"{len(tps)} partition(s) to their last committed offsets", exc)
            return
        self._count(outcomes, messages)
        self.report.batches += 1
        self.metrics.batches.inc()
        self.metrics.batch_seconds.observe(time.monotonic() - started)

    def _stop_if_fenced(self, exc: BaseException | None = None) -> None:
        """Another worker joined with this --group-instance-id (``exc``, or the heartbeat saw it): this
        one can never commit again, and each retry would write its batch's output once more."""
        if (self._fenced and self._fenced.seen) or isinstance(exc, _kafka().errors.FencedInstanceIdError):
            o = self.options
            raise ConsumeConfigError(
                f"another worker joined group {o.group!r} with this worker's --group-instance-id "
                f"{o.group_instance_id!r}, so the group refuses this one's commits; it stops (give each "
                f"worker its own instance id)") from None

    @staticmethod
    def _tp(record):
        from kafka import TopicPartition

        return TopicPartition(record.topic, record.partition)

    def _annotate(self, hand: list) -> list[_Outcome]:
        o = self.options
        outcomes = []
        for r in hand:
            item = parse_document(r.value, source=f"{r.topic}/{r.partition}", position=r.offset,
                                  id_field=o.id_field, text_field=o.text_field, keep_fields=o.keep_fields,
                                  max_doc_chars=o.max_doc_chars)
            if isinstance(item, Document):
                outcomes.append(_Outcome(r, doc=item))
            else:
                outcomes.append(_Outcome(r, error=item))
        good = [x for x in outcomes if x.doc is not None]
        if not good:
            return outcomes
        try:
            self._annotate_group(good)
        except Exception as exc:  # noqa: BLE001 - isolate the document the model fails on
            log.warning("annotating a batch of %d documents failed (%s); annotating them one by one",
                        len(good), _describe(exc))
            failed = 0
            for x in good:
                try:
                    self._annotate_group([x])
                except Exception as one:  # noqa: BLE001
                    failed += 1
                    x.error = DocumentError(x.doc.source, x.doc.position, x.doc.doc_id,
                                            f"pipeline_error: {_describe(one)}", x.doc.text[:RAW_LIMIT])
                    x.doc = None
            if failed == len(good) > 1:  # not a poison document: the model itself is broken
                raise RuntimeError(f"the model fails on every document ({_describe(exc)})") from exc
        return outcomes

    def _annotate_group(self, group: list[_Outcome]) -> None:
        # ``annotate`` segments the next chunk while the current one is predicted.
        done = 0
        for chunk in self.pipeline.annotate([x.doc for x in group]):
            part = group[done : done + len(chunk.documents)]
            done += len(part)
            per_doc = chunk.records_by_document(self.model, self.options.keep_fields)
            for x, entities in zip(part, per_doc):
                x.entities = entities
            if self.options.output_dir and len(chunk):
                columns = chunk.record_columns(self.model, self.options.keep_fields)
                bounds = np.searchsorted(chunk.doc_index, np.arange(len(part) + 1))  # rows ordered by document
                for i, x in enumerate(part):
                    a, b = int(bounds[i]), int(bounds[i + 1])
                    if b > a:
                        x.rows = {name: values[a:b] for name, values in columns.items()}
            self._batch_stats[0] += chunk.sentences
            self._batch_stats[1] += chunk.tokens

    def _messages(self, outcomes: list[_Outcome]) -> list[tuple]:
        """(topic, key, value, headers, kind) to produce, in input order; oversized outputs fail their document."""
        o = self.options
        out = []
        for x in outcomes:
            r = x.record
            if x.doc is not None and o.output_topic:
                value = json.dumps(
                    {"doc_id": x.doc.doc_id, "model": self.model, "entities": x.entities,
                     "source": {"topic": r.topic, "partition": r.partition, "offset": r.offset}},
                    ensure_ascii=False, separators=(",", ":"), allow_nan=False,
                ).encode("utf-8")
                key = x.doc.doc_id.encode("utf-8")
                size = _record_bytes(key, value, ())
                if size > o.max_message_bytes:
                    x.error = DocumentError(
                        x.doc.source, x.doc.position, x.doc.doc_id,
                        f"oversized: the output message is {size} bytes with Kafka's framing, more than "
                        f"max_message_bytes={o.max_message_bytes}", x.doc.text[:RAW_LIMIT])
                    x.doc = None
                else:
                    out.append((o.output_topic, key, value, None, "output"))
            if x.error is not None:
                log.warning("failed document at %s/%d offset %d%s: %s", r.topic, r.partition, r.offset,
                            f" (id {_cut_for_log(x.error.doc_id)})" if x.error.doc_id else "", x.error.reason)
                if o.dead_letter_topic:
                    out.append(self._dead_letter(x))
        return out

    def _dead_letter(self, x: _Outcome) -> tuple:
        """The dead-letter message of a failed document; it always fits ``max_message_bytes``.

        What gives way, in order, when it would not: the payload is cut, then
        the input's own headers, then our doc-id header, then the key are
        dropped, then the reason is cut, each marked by a header.  A null header value is sent empty
        and a tombstone without a key as an empty value: the producer cannot
        send either as it is.
        """
        o = self.options
        r = x.record
        headers = [(k, b"" if v is None else v) for k, v in (r.headers or [])]
        ours = [("reason", x.error.reason), ("reason-kind", reason_kind(x.error.reason)),
                ("source-topic", r.topic), ("source-partition", str(r.partition)),
                ("source-offset", str(r.offset))]
        if x.error.doc_id is not None:
            ours.append(("doc-id", x.error.doc_id))
        ours = [(_HEADER_PREFIX + k, v.encode("utf-8", errors="backslashreplace")) for k, v in ours]
        key, value = r.key, r.value

        def fits(payload) -> bool:
            return _record_bytes(key, payload, headers + ours) <= o.max_message_bytes

        if not fits(value):
            if value:
                ours.append((_HEADER_PREFIX + "payload-truncated", str(len(value)).encode()))
            if not fits(b"") and headers:
                ours.append((_HEADER_PREFIX + "headers-dropped", str(len(headers)).encode()))
                headers = []  # the input's own headers leave no room for any payload
            if not fits(b"") and x.error.doc_id is not None:
                ours = [(k, v) for k, v in ours if k != _HEADER_PREFIX + "doc-id"]
                ours.append((_HEADER_PREFIX + "doc-id-dropped", str(len(x.error.doc_id)).encode()))
            if not fits(b"") and key:
                ours.append((_HEADER_PREFIX + "key-dropped", str(len(key)).encode()))
                key = None
            if not fits(b""):
                reason = ours[0][1]
                ours.append((_HEADER_PREFIX + "reason-truncated", str(len(reason)).encode()))
                excess = _record_bytes(key, b"", headers + ours) - o.max_message_bytes
                ours[0] = (ours[0][0], reason[:len(reason) - excess].decode("utf-8", errors="ignore").encode("utf-8"))
            if value:
                keep = max(0, len(value) - (_record_bytes(key, value, headers + ours) - o.max_message_bytes))
                value = value[:keep]
                log.error("dead-letter payload of %s/%d offset %d cut from %d to %d bytes to fit "
                          "max_message_bytes", r.topic, r.partition, r.offset, len(r.value), keep)
        if key is None and value is None:
            value = b""
        return (o.dead_letter_topic, key, value, headers + ours, "dead_letter")

    def _send(self, messages: list[tuple]) -> None:
        kafka = _kafka()
        if self._producer is None:
            self._producer = self._make_producer()
        futures = [self._producer.send(topic, key=key, value=value, headers=headers)
                   for topic, key, value, headers, _ in messages]
        self._flush(len(futures))
        for f in futures:
            if not f.is_done:
                raise kafka.errors.KafkaTimeoutError("output not acknowledged in time")
            if f.failed():
                raise f.exception

    def _flush(self, count: int) -> None:
        """Wait until every message sent is acknowledged or failed: at most ``flush_timeout_s``,
        and at most a few more seconds once the worker is asked to stop."""
        kafka = _kafka()
        started = time.monotonic()
        give_up = started + self.options.flush_timeout_s
        warned = False
        while True:
            try:
                self._producer.flush(timeout=0.5)
                return
            except kafka.errors.KafkaTimeoutError:
                now = self._last_round = time.monotonic()  # waiting on the broker is not hanging
                if self._stop.is_set():
                    give_up = min(give_up, now + STOP_GRACE_S)
                if now >= give_up:
                    raise kafka.errors.KafkaTimeoutError(
                        f"{count} message(s) not acknowledged after {now - started:.0f} s") from None
                if not warned and now - started > 5:
                    log.warning("waiting for Kafka to acknowledge %d message(s)...", count)
                    warned = True

    def _send_transaction(self, messages: list[tuple], tps: dict) -> None:
        from kafka.structs import OffsetAndMetadata

        if self._producer is None:
            self._producer = self._make_producer()
        producer = self._producer
        producer.begin_transaction()
        self._send(messages)
        offsets = {tp: OffsetAndMetadata(recs[-1].offset + 1, "", -1) for tp, recs in tps.items()}
        group = self._consumer.group_metadata()
        self._await_broker(lambda: producer.send_offsets_to_transaction(offsets, group), "the transaction's offsets")
        self._await_broker(producer.commit_transaction, "the transaction's commit")
        self._committed(tps.keys(), [r.timestamp for recs in tps.values() for r in recs])

    def _await_broker(self, call, what: str, limit_s: float | None = None):
        """Run a kafka-python call that may wait for the broker without a timeout (a transaction's
        offsets, commit or abort) in a thread of its own, and return its result, so that a stop
        request is still honoured during a broker outage: the wait gives up with KafkaTimeoutError
        ``STOP_GRACE_S`` after the stop (or after the wait began, if later), or after ``limit_s``.
        A transaction's input offsets travel in it, so one left open is aborted by the broker (or by
        the next worker with the same transactional id) and its documents are read again: nothing is
        lost or doubled."""
        kafka = _kafka()
        done = threading.Event()
        outcome: list = []
        failure: list[BaseException] = []

        def target() -> None:
            try:
                outcome.append(call())
            except BaseException as exc:  # noqa: BLE001 - raised again in the worker's thread
                failure.append(exc)
            finally:
                done.set()

        threading.Thread(target=target, name="nerbatch-broker-call", daemon=True).start()
        started = time.monotonic()
        while not done.wait(0.5):
            now = time.monotonic()
            self._last_round = now  # waiting on the broker is not hanging: /healthz stays 200
            if (limit_s is not None and now - started >= limit_s) or (
                    self._stop.is_set() and now >= max(self._stop_at, started) + STOP_GRACE_S):
                raise kafka.errors.KafkaTimeoutError(f"{what} not answered by the broker after {now - started:.0f} s")
        if failure:
            raise failure[0]
        return outcome[0]

    def _reset_producer(self) -> None:
        """Abort the open transaction, or drop a producer that may hold unsent or unfinished work."""
        if self._producer is None:
            return
        if self.options.exactly_once:
            try:
                # Stopping, the flush or commit before has used the broker's grace: an abort that is not
                # answered at once is left to the broker, which aborts the open transaction itself.
                self._await_broker(self._producer.abort_transaction, "the transaction's abort",
                                   limit_s=1.0 if self._stop.is_set() else None)
                return
            except Exception as exc:  # noqa: BLE001 - fatal producer state: start a new one
                log.warning("aborting the transaction failed (%s); restarting the producer", _describe(exc))
        _close_producer(self._producer, timeout=2)
        self._producer = None

    def _reread_from_last_commit(self) -> bool:
        """Seek every assigned partition back to its first uncommitted record (dropping uncommitted work).

        False, and nothing done, when a partition that received nothing since the last commit is at that
        record already (a worker restarted after stopping at the bad record): a seek to where it is would
        leave the bad record in the client's buffer, where the next poll loops for good (kafka-python
        3.0.12), and it has nothing before the bad record to read again. The worker then stops at once;
        the records in hand are processed and committed first all the same.
        """
        assigned = set(self._consumer.assignment())
        fresh = {tp for tp in assigned if getattr(self._states.get(tp), "resume_at", None) is None}
        starts = {}
        for tp in fresh:  # nothing received since the last commit: that is where reading resumed
            committed = self._consumer.committed(tp)
            if committed is None and self.options.auto_offset_reset == "earliest":
                committed = self._consumer.beginning_offsets([tp])[tp]
            if committed is None or committed == self._consumer.position(tp, timeout_ms=0):
                return False
            starts[tp] = committed
        self._rewind(assigned - fresh)
        for tp, start in starts.items():
            self._consumer.seek(tp, start)
        return True

    def _rewind(self, tps) -> None:
        """Send partitions back to their last committed offset, dropping their uncommitted work (on a failure)."""
        self._failed_uncommitted.update(tps)
        assigned = set(self._consumer.assignment()) if self._consumer is not None else set()
        self._discard_hand(tps)  # re-read after the seek
        for tp in tps:
            state = self._states.get(tp)
            if state is None:
                continue
            if state.resume_at is not None and tp in assigned:
                self._consumer.seek(tp, state.resume_at)
            state.resume_at = None
            state.part = None

    def _commit(self, offsets: dict, timestamps: list | None = None, metadata: dict | None = None) -> None:
        from kafka.structs import OffsetAndMetadata

        if not offsets:
            return
        metadata = metadata or {}
        self._consumer.commit({tp: OffsetAndMetadata(off, metadata.get(tp, ""), -1) for tp, off in offsets.items()},
                              timeout_ms=self._commit_timeout_ms())
        self._committed(offsets.keys(), timestamps)

    def _commit_timeout_ms(self) -> int:
        """``commit_timeout_ms``; once the worker is asked to stop, at most the stop's grace for the broker."""
        if self._stop.is_set():
            return min(self.options.commit_timeout_ms, int(STOP_GRACE_S * 1000))
        return self.options.commit_timeout_ms

    def _committed(self, tps, timestamps) -> None:
        self._failures = 0  # only a commit ends a run of failures: a batch that only buffers does not
        tps = set(tps)
        self._failed_uncommitted -= tps
        first_left: dict = {}
        for r in self._hand:  # records polled after the committed ones
            tp = self._tp(r)
            if tp in tps and tp not in first_left:
                first_left[tp] = r.offset
        for tp in tps:
            state = self._states.get(tp)
            if state is not None:
                state.resume_at = first_left.get(tp)
                state.part = None
        self.report.commits += 1
        self.metrics.commits.inc()
        if timestamps:
            now_ms = time.time() * 1000
            for ts in timestamps:
                if ts is not None and ts > 0:
                    self.metrics.latency.observe(max(0.0, now_ms - ts) / 1000)

    def _count(self, outcomes: list[_Outcome], messages: list[tuple]) -> None:
        ok = sum(1 for x in outcomes if x.doc is not None)
        failed = len(outcomes) - ok
        entities = sum(len(x.entities or ()) for x in outcomes if x.doc is not None)
        sentences, tokens = self._batch_stats
        produced = sum(1 for m in messages if m[4] == "output")
        dead = len(messages) - produced
        rep = self.report
        rep.docs_in += len(outcomes)
        rep.docs_ok += ok
        rep.docs_failed += failed
        rep.produced += produced
        rep.dead_lettered += dead
        rep.entities += entities
        rep.sentences += sentences
        rep.tokens += tokens
        m = self.metrics
        m.consumed.inc(len(outcomes))
        m.annotated.inc(ok)
        m.produced.inc(produced)
        m.dead_lettered.inc(dead)
        m.tokens.inc(tokens)
        m.entities.inc(entities)
        for x in outcomes:
            if x.error is not None:
                m.failed.labels(reason_kind(x.error.reason)).inc()

    # ---- parquet parts

    def _buffer(self, outcomes: list[_Outcome], tps: dict) -> None:
        now = time.monotonic()
        by_tp: dict = {}
        for x in outcomes:
            by_tp.setdefault(self._tp(x.record), []).append(x)
        for tp, xs in by_tp.items():
            state = self._states.setdefault(tp, _PartitionState())
            if state.part is None:
                state.part = _Part(first_offset=xs[0].record.offset, last_offset=xs[-1].record.offset, opened=now)
            part = state.part
            part.last_offset = xs[-1].record.offset
            part.docs += len(xs)
            part.timestamps.extend(x.record.timestamp for x in xs)
            columns: dict[str, list] = {name: [] for name in self.schema.names}
            for x in xs:
                if x.doc is not None and x.rows:
                    for name, values in x.rows.items():
                        columns[name].extend(values)
                elif x.error is not None:
                    part.errors.append(x.error)
                if self.options.outcomes and x.doc is not None:
                    part.annotated.append(_Annotated(x.doc.position, x.doc.doc_id,
                                                     len(x.rows["doc_id"]) if x.rows else 0))
            n = len(columns["doc_id"])
            if n:
                part.tables.append(pa.Table.from_pydict(columns, schema=self.schema))
                part.rows += n

    def _parts_full(self) -> list:
        """Partitions whose part is full; all of them once the parts together hold ``part_max_rows``
        documents, so that memory is bounded however many partitions a worker has."""
        limit = self.options.part_max_rows
        open_parts = {tp: s.part for tp, s in self._states.items() if s.part is not None}
        if sum(part.docs for part in open_parts.values()) >= limit:
            return list(open_parts)
        return [tp for tp, part in open_parts.items() if part.rows >= limit]

    def _roll(self, tps) -> None:
        """Write the parts of ``tps`` into place, then commit their offsets."""
        from kafka.structs import OffsetAndMetadata

        o = self.options
        parts = {tp: self._states[tp].part for tp in tps if tp in self._states and self._states[tp].part}
        if not parts:
            return
        # Still these partitions' owner? A worker the group has moved on from (a batch that outlasted
        # max.poll.interval.ms, a paused process) would put parts beside the new owner's until its own
        # commit failed. Committing the offsets already committed fails (CommitFailedError) for such a
        # worker before it writes anything; one paused after this check removes its parts at that commit.
        self._consumer.commit({tp: OffsetAndMetadata(part.first_offset, "", -1) for tp, part in parts.items()},
                              timeout_ms=self._commit_timeout_ms())
        offsets, timestamps, written = {}, [], {}  # written: tp -> (writer, part, errors, outcomes paths)
        try:
            for tp, part in parts.items():
                writer = secrets.token_hex(4)
                paths = tuple(
                    os.path.join(o.output_dir, part_name(tp.topic, tp.partition, part.first_offset, writer, kind))
                    for kind in ("part", "errors", "outcomes"))
                written[tp] = (writer, *paths)  # before writing: a failure removes what the write left
                self._write_part(tp, part, *paths)
                offsets[tp] = part.last_offset + 1
                timestamps.extend(part.timestamps)
        except BaseException:
            _remove_parts(written.values())  # nothing was committed: the retry writes them all again
            raise
        try:
            # Each partition's commit names the writer of its part, so that a refusal can be told from a
            # commit the broker applied before it refused a retry of it.
            self._commit(offsets, timestamps, {tp: writer for tp, (writer, *_) in written.items()})
        except _commit_refusals() as exc:
            # The group moved these partitions on while their parts were written (a paused process): the
            # new owner writes these offsets, unless this commit was applied after all. Not on a timeout.
            applied = self._applied_writers(written)
            stale = {tp: paths for tp, paths in written.items() if paths[0] not in applied}
            log.warning("the group refused the commit of %d part(s) (%s); removing the %d not committed",
                        len(written), _describe(exc), len(stale))
            _remove_parts(stale.values())
            raise
        self._remove_superseded({tp: (parts[tp], writer) for tp, (writer, *_) in written.items()})
        self.report.parts += len(written)
        self.report.part_paths.extend(path for _, path, *_ in written.values())
        self.metrics.parts.inc(len(written))

    def _applied_writers(self, written: dict) -> set:
        """The writers whose commit the group holds; all of them when it cannot be asked."""
        try:
            return {getattr(self._consumer.committed(tp, metadata=True, timeout_ms=self._commit_timeout_ms()),
                            "metadata", None) for tp in written}
        except Exception:  # noqa: BLE001 - unknown: keep every file (a duplicate at worst)
            return {writer for writer, *_ in written.values()}

    def _remove_superseded(self, committed: dict) -> None:
        """Remove the files another writer left starting inside the offsets just committed: a crash
        before its commit, a part redone after a failure, a paused worker's part. Files of committed
        offsets start before them, so none is touched."""
        try:
            names = os.listdir(self.options.output_dir)
        except OSError as exc:
            log.warning("could not list %s to remove superseded parts: %s", self.options.output_dir, exc)
            return
        for tp, (part, writer) in committed.items():
            pattern = _part_files(tp.topic, tp.partition)
            for name in names:
                match = pattern.fullmatch(name)
                if match and match[2] != writer and part.first_offset <= int(match[1]) <= part.last_offset:
                    try:
                        os.remove(os.path.join(self.options.output_dir, name))
                    except FileNotFoundError:
                        pass
                    except OSError as exc:
                        log.warning("could not remove the superseded %s: %s", name, exc)

    def _write_part(self, tp, part: _Part, path: str, errors_path: str, outcomes_path: str) -> None:
        from nerbatch.sinks import ParquetSink, open_error_sink

        o = self.options
        if part.errors:
            with open_error_sink(errors_path) as sink:
                sink.write_records(error_record(e) for e in part.errors)
        metadata = {
            "model": self.model, "group": o.group, "topic": tp.topic, "partition": str(tp.partition),
            "first_offset": str(part.first_offset), "last_offset": str(part.last_offset),
            "documents": str(part.docs), "failed": str(len(part.errors)),
            "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "nerbatch_version": __version__,
        }
        if o.outcomes:
            counts = [a.entities for a in part.annotated]
            with ParquetSink(outcomes_path, outcome_arrow_schema(), metadata) as sink:
                sink.write(outcome_columns(f"{tp.topic}/{tp.partition}", part.annotated, counts, part.errors,
                                           self.model))
        with ParquetSink(path, self.schema, metadata) as sink:
            for table in part.tables:
                sink.write_table(table)

    def _roll_due(self) -> None:
        kafka = _kafka()
        now = time.monotonic()
        full = set(self._parts_full())
        due = [tp for tp, s in self._states.items()
               if s.part is not None and (tp in full or now - s.part.opened >= self.options.part_max_seconds)]
        if not due:
            return
        try:
            self._roll(due)
        except (kafka.errors.KafkaError, OutputError, OSError, TimeoutError) as exc:
            self._stop_if_fenced(exc)
            self._rewind(due)
            self.report.batch_failures += 1
            self.metrics.batch_failures.inc()
            self._backoff(f"writing or committing {len(due)} part(s) failed; rewound their partitions "
                          "to the last committed offsets", exc)

    # ---- housekeeping

    def _housekeeping(self) -> None:
        if self.options.output_dir and not self._rebalancing:
            self._roll_due()
        now = time.monotonic()
        if now - self._last_lag >= 1.0:  # the gauge follows a backlog between progress lines
            self._last_lag = now
            ask_broker = now - self._last_ends >= LAG_ENDS_S
            if ask_broker:
                self._last_ends = now
            self._set_lag_gauge(*self._left(ask_broker, uncommitted=True))
        if now - self._last_log >= self.options.log_interval:
            self._log_progress(now)
        if now - self._last_topic_check >= TOPIC_CHECK_S:
            # Not only after rebalances: a deleted topic makes the group rebalance only once the
            # member that computed the assignment refreshes its metadata, which an idle one does
            # every metadata_max_age_ms (5 minutes).
            self._last_topic_check = now
            self._stop_if_deleted("input", list(self.options.topics))

    def _caught_up(self) -> bool:
        """Nothing left to read in the assigned partitions, by the broker's end offsets.

        A partition whose end or position is not known yet (just assigned, not fetched from, and the
        broker did not answer) is not caught up: counting it as 0 left ended runs with it unread.
        """
        lag, unknown = self._left(ask_broker=True, uncommitted=False)
        return lag == 0 and unknown == 0

    def lag(self, ask_broker: bool = False, uncommitted: bool = True) -> int:
        """Messages between the first one this worker has still to process and the end of its
        assigned partitions: the ends its last fetches saw, or with ``ask_broker`` the broker's own
        (one request; the fetched ones when it does not answer within a second).

        The fetch position, not the last record seen, where no polled record waits in hand: it also
        passes the transaction markers (and aborted records) of transactional input, which no poll
        returns. Records in hand and, with ``uncommitted``, processed work not committed yet count
        as left: the next run reads them.  Partitions whose end or position is not known yet count 0.
        """
        return self._left(ask_broker, uncommitted)[0]

    def _left(self, ask_broker: bool, uncommitted: bool) -> tuple[int, int]:
        """``lag``'s messages left, and how many assigned partitions it could not count (end or
        position not known yet)."""
        total = unknown = 0
        if self._consumer is None:
            return 0, 0
        first_left: dict = {}  # work not committed yet (an open or failed part), else records in hand
        if uncommitted:
            first_left = {tp: s.resume_at for tp, s in self._states.items() if s.resume_at is not None}
        for record in self._hand:
            first_left.setdefault(self._tp(record), record.offset)
        ends: dict = {}
        if ask_broker:
            with contextlib.suppress(Exception):
                ends = self._consumer.end_offsets(list(self._consumer.assignment()), timeout_ms=1000)
                self._ends.update(ends)
        for tp in self._consumer.assignment():
            try:
                # The broker's answer is the end a read_committed reader can reach; a fetch's high
                # watermark counts an open transaction's records too, so it comes second, and the
                # stored answer only for a partition not fetched from yet.
                fetched = self._consumer.highwater(tp)
                high = ends.get(tp, fetched if fetched is not None else self._ends.get(tp))
                position = self._consumer.position(tp, timeout_ms=0)
            except Exception:  # noqa: BLE001 - partition just revoked
                continue
            if high is None or position is None:
                unknown += 1
            else:
                total += max(0, high - min(position, first_left.get(tp, position)))
        return total, unknown

    def _set_lag_gauge(self, lag: int, unknown: int) -> None:
        if not unknown:  # a partition not counted yet would show the backlog smaller than it is
            self.metrics.lag.set(lag)

    def _log_progress(self, now: float) -> None:
        rep = self.report
        elapsed = max(1e-9, now - self._last_log)
        docs0, tokens0 = self._last_log_counts
        lag, unknown = self._left(ask_broker=True, uncommitted=True)
        self._set_lag_gauge(lag, unknown)
        log.info("consumed=%d produced=%d dead_lettered=%d failed=%d lag=%d docs/s=%.1f tokens/s=%.0f "
                 "batches=%d retries=%d", rep.docs_in, rep.produced, rep.dead_lettered, rep.docs_failed, lag,
                 (rep.docs_in - docs0) / elapsed, (rep.tokens - tokens0) / elapsed, rep.batches,
                 rep.batch_failures)
        self._last_log = now
        self._last_log_counts = (rep.docs_in, rep.tokens)

    # ---- stopping

    def _drain(self) -> None:
        """Finish the messages in hand, write the open parts and commit everything."""
        if self._consumer is None:
            return
        if self._rebalancing and self._pending_revoked:
            self._drop(self._pending_revoked, "revoked while stopping")
        hand = self._hand
        while hand:
            left = self._limit_left()
            if left is not None and left <= 0:
                break  # beyond max_docs: left uncommitted for the next run
            take = self.options.max_batch_docs if left is None else min(self.options.max_batch_docs, left)
            batch = hand[:take]
            del hand[:take]
            failures = self.report.batch_failures
            self._process(batch)
            if self.report.batch_failures != failures:
                break  # rewound: the next run redoes it
        if self.options.output_dir:
            kafka = _kafka()
            pending = [tp for tp, s in self._states.items() if s.part is not None]
            try:
                self._roll(pending)
            except (kafka.errors.KafkaError, OutputError, OSError, TimeoutError) as exc:
                self.report.unfinished = True
                log.warning("could not write or commit %d part(s) while stopping (%s); they are redone "
                            "from the last committed offsets", len(pending), _describe(exc))
        # Work rewound after a failure and not committed since (counted by max_docs) waits for the next
        # run; work of partitions the group has moved is their new owner's.
        self.report.unfinished = self.report.unfinished or bool(self._failed_uncommitted)
        self._log_progress(time.monotonic())


def report_dict(report: ConsumeReport) -> dict:
    """The report as JSON-ready data."""
    return asdict(report)
