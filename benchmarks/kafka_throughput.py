"""Throughput and latency of the Kafka worker (``nerbatch consume``) next to ``nerbatch run``.

One model load, one corpus of real text, three measurements:

1. ``nerbatch run`` (the library behind it, :func:`nerbatch.runner.run_job`)
   on the corpus as a JSONL file: docs/s and tokens/s.
2. Through the broker: the corpus is first produced to an input topic (a
   backlog), then a worker (:class:`nerbatch.consumer.Worker`, what
   ``nerbatch consume`` runs) drains it to an output topic.  Sustained docs/s
   and tokens/s are counted from the moment its partitions are assigned to the
   moment the last offset is committed; the ratio to (1) is printed.
3. Latency at a fixed input rate: with the worker caught up, documents are
   produced at ``--rate`` docs/s for ``--latency-seconds``; a reader of the
   output topic stamps every output message on arrival.  Latency is arrival
   time minus send time of the input (one clock, one process), p50/p99.  It
   includes the micro-batch wait (``--max-batch-ms``).  This worker is
   ``nerbatch consume`` itself, in its own process, and its resident memory is
   sampled meanwhile, so a long run (``--only-latency --latency-seconds
   3600``) is a soak: documents repeat under new ids, and the figures show
   whether the worker's memory grows while it runs.

The corpus is the GMB corpus (``ner_dataset.csv.zip``) detokenised into news
prose, ``--sentences-per-doc`` sentences per document, or any UTF-8 text file
(one document per paragraph, i.e. per block of non-blank lines).

The broker is ``$NERBATCH_KAFKA_BOOTSTRAP`` when set, else one started with
``scripts/kafka.sh start`` (and stopped at the end).  Topics are created with
``--partitions`` partitions and deleted afterwards.

    python benchmarks/kafka_throughput.py --model path/to/bundle [--docs 4000]
        [--corpus ../shared/data/ner_dataset.csv.zip] [--rate 20] [--latency-seconds 30]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO.parent / "shared" / "data" / "ner_dataset.csv.zip"


# --------------------------------------------------------------------------- corpus


def _detok(words: list[str]) -> str:
    text = " ".join(words)
    text = re.sub(r" (n't|'s|'re|'ve|'ll|'d|'m)\b", r"\1", text)
    text = re.sub(r" ([.,;:!?%)\]])", r"\1", text)
    return re.sub(r"([(\[$]) ", r"\1", text)


def load_documents(corpus: Path, n: int, sentences_per_doc: int) -> list[dict]:
    """``n`` documents ``{"id", "text"}`` of real text (repeating the corpus if it is short)."""
    if corpus.suffix in (".zip", ".csv"):
        from nerbatch.corpus import read_corpus

        sentences = [_detok(words) for words in read_corpus(corpus).words]
        texts = [" ".join(sentences[i:i + sentences_per_doc]) for i in range(0, len(sentences), sentences_per_doc)]
    else:
        raw = corpus.read_text(encoding="utf-8")
        texts = [" ".join(p.split()) for p in re.split(r"\n\s*\n", raw) if p.strip()]
    if not texts:
        raise SystemExit(f"no text in {corpus}")
    return [{"id": f"bench-{i:07d}", "text": texts[i % len(texts)]} for i in range(n)]


# --------------------------------------------------------------------------- broker


def broker() -> tuple[str, bool]:
    """(bootstrap, started here)."""
    env = os.environ.get("NERBATCH_KAFKA_BOOTSTRAP", "").strip()
    if env:
        return env, False
    script = REPO / "scripts" / "kafka.sh"
    start = subprocess.run(["bash", str(script), "start"], cwd=REPO, capture_output=True, text=True)
    if start.returncode != 0:
        raise SystemExit("scripts/kafka.sh start failed:\n" + start.stdout + start.stderr)
    out = subprocess.run(["bash", str(script), "env"], cwd=REPO, capture_output=True, text=True).stdout
    match = re.search(r"NERBATCH_KAFKA_BOOTSTRAP=(\S+)", out)
    if not match:
        raise SystemExit("scripts/kafka.sh env gave no address")
    return match.group(1), "already started" not in start.stdout


def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics({n: {"num_partitions": partitions, "replication_factor": 1} for n in names},
                            timeout_ms=30_000)
        admin.wait_for_topics(names, timeout_ms=30_000)
    finally:
        admin.close()


def delete_topics(bootstrap: str, names: list[str]) -> None:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.delete_topics(names, timeout_ms=30_000, raise_errors=False)
    except Exception as exc:  # noqa: BLE001 - best effort
        print(f"could not delete topics {names}: {exc}", file=sys.stderr)
    finally:
        admin.close()


def produce_all(bootstrap: str, topic: str, docs: list[dict]) -> float:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=10,
                             batch_size=256 * 1024)
    started = time.perf_counter()
    try:
        for d in docs:
            producer.send(topic, key=d["id"].encode(), value=json.dumps(d).encode())
        producer.flush(timeout=120)
    finally:
        producer.close(timeout=30)
    return time.perf_counter() - started


# --------------------------------------------------------------------------- measurements


def measure_run(pipeline, docs: list[dict], folder: Path) -> dict:
    from nerbatch.runner import RunOptions, run_job

    path = folder / "corpus.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for d in docs:
            handle.write(json.dumps(d) + "\n")
    started = time.perf_counter()
    report = run_job(RunOptions(inputs=[str(path)], output=str(folder / "run-out.parquet")), pipeline)
    seconds = time.perf_counter() - started
    return {"docs": report.docs_in, "tokens": report.tokens, "seconds": round(seconds, 2),
            "docs_per_s": round(report.docs_in / seconds, 1), "tokens_per_s": round(report.tokens / seconds)}


def _start(worker):
    box: dict = {}

    def target():
        try:
            box["report"] = worker.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, box


def _wait_assigned(worker, timeout: float = 120) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        consumer = worker._consumer
        if worker.running.is_set() and consumer is not None and consumer.assignment() and not worker._rebalancing:
            return time.perf_counter()
        time.sleep(0.01)
    raise SystemExit("the worker got no partitions")


def _stop(worker, thread, box) -> None:
    worker.stop()
    thread.join(120)
    if "error" in box:
        raise box["error"]


def measure_worker(pipeline, bootstrap: str, docs: list[dict], args, run_id: str) -> dict:
    from nerbatch.consumer import ConsumeOptions, Worker

    source, out, dlq = f"bench-in-{run_id}", f"bench-out-{run_id}", f"bench-dlq-{run_id}"
    create_topics(bootstrap, [source, out, dlq], args.partitions)
    try:
        produce_s = produce_all(bootstrap, source, docs)
        options = ConsumeOptions(bootstrap_servers=bootstrap, topics=(source,), group=f"bench-{run_id}",
                                 output_topic=out, dead_letter_topic=dlq, max_batch_docs=args.max_batch_docs,
                                 max_batch_ms=args.max_batch_ms, exactly_once=args.exactly_once,
                                 log_interval=10.0)
        worker = Worker(options, pipeline)
        thread, box = _start(worker)
        started = _wait_assigned(worker)
        while worker.report.docs_in < len(docs):
            if not thread.is_alive():
                raise SystemExit(f"worker stopped early: {box}")
            time.sleep(0.01)
        seconds = time.perf_counter() - started
        _stop(worker, thread, box)
        rep = worker.report
        return {"docs": rep.docs_in, "tokens": rep.tokens, "seconds": round(seconds, 2),
                "docs_per_s": round(rep.docs_in / seconds, 1), "tokens_per_s": round(rep.tokens / seconds),
                "batches": rep.batches, "produce_backlog_s": round(produce_s, 2)}
    finally:
        delete_topics(bootstrap, [source, out, dlq])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _metric(port: int, name: str) -> float | None:
    """One sample of the worker's Prometheus endpoint, or None while it is not serving."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    match = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(match.group(1)) if match else None


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure_latency(bootstrap: str, docs: list[dict], args, run_id: str, folder: Path) -> dict:
    """The fixed-rate run, against ``nerbatch consume`` in its own process, as users run it: its
    resident memory is the worker's alone, not this script's bookkeeping."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    source, out, dlq = f"lat-in-{run_id}", f"lat-out-{run_id}", f"lat-dlq-{run_id}"
    create_topics(bootstrap, [source, out, dlq], args.partitions)
    n = int(args.rate * args.latency_seconds)
    sent: dict[str, float] = {}
    arrived: dict[str, float] = {}
    rss: list[tuple[float, float]] = []  # (seconds since the rate started, resident MiB of the worker)
    port = _free_port()
    command = [sys.executable, "-m", "nerbatch", "consume", "--bootstrap-servers", bootstrap, "--topic", source,
               "--group", f"lat-{run_id}", "--output-topic", out, "--dead-letter-topic", dlq,
               "--max-batch-docs", str(args.max_batch_docs), "--max-batch-ms", str(args.max_batch_ms),
               "--batch-size", str(args.batch_size), "--metrics-port", str(port), "--log-interval", "60",
               "--report", str(folder / "worker-report.json"), "--log-level", "WARNING",
               *(["--model", args.model] if args.model else []), *(["--exactly-once"] if args.exactly_once else [])]
    log_path = folder / "worker.log"
    worker = None
    try:
        with open(log_path, "w") as worker_log:
            worker = subprocess.Popen(command, stdout=worker_log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while (_metric(port, "nerbatch_consume_assigned_partitions") or 0) < args.partitions:
            if worker.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the worker got no partitions; its log:\n{log_path.read_text()}")
            time.sleep(0.2)

        reader = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100,
                               isolation_level="read_committed" if args.exactly_once else "read_uncommitted")
        tps = [TopicPartition(out, p) for p in range(args.partitions)]
        reader.assign(tps)
        reader.seek_to_beginning(*tps)
        stop_reading = threading.Event()

        def read():
            while not stop_reading.is_set():
                for batch in reader.poll(timeout_ms=100).values():
                    now = time.time()
                    for r in batch:
                        arrived.setdefault(r.key.decode(), now)

        reading = threading.Thread(target=read, daemon=True)
        reading.start()
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=0)
        # One document through first: the worker's first batch traces the model's graph.
        warm = {**docs[0], "id": "warm-up"}
        producer.send(source, key=b"warm-up", value=json.dumps(warm).encode())
        producer.flush(timeout=60)
        deadline = time.monotonic() + 120
        while "warm-up" not in arrived and time.monotonic() < deadline:
            time.sleep(0.05)
        t0 = time.time()

        def sample():
            while not stop_reading.is_set():
                rss.append((time.time() - t0, _rss_mib(worker.pid)))
                stop_reading.wait(args.rss_interval)

        sampling = threading.Thread(target=sample, daemon=True)
        sampling.start()
        for i in range(n):
            d = docs[i % len(docs)]
            doc_id = d["id"] if i < len(docs) else f"{d['id']}-r{i // len(docs)}"
            delay = t0 + i / args.rate - time.time()
            if delay > 0:
                time.sleep(delay)
            sent[doc_id] = time.time()
            producer.send(source, key=doc_id.encode(), value=json.dumps({**d, "id": doc_id}).encode())
        producer.flush(timeout=60)
        producer.close(timeout=30)
        deadline = time.time() + 120
        while len(sent.keys() - arrived.keys()) and time.time() < deadline:
            time.sleep(0.1)
        stop_reading.set()
        reading.join(10)
        sampling.join(10)
        reader.close()
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(120)
        if code != 0:
            raise SystemExit(f"the worker exited {code}; its log:\n{log_path.read_text()}")
    finally:
        if worker is not None and worker.poll() is None:
            worker.kill()
        delete_topics(bootstrap, [source, out, dlq])
    lat = np.array([arrived[k] - sent[k] for k in sent if k in arrived]) * 1000
    t, mib = np.array(rss).T if rss else (np.zeros(0), np.zeros(0))
    settled = t >= 0.1 * args.latency_seconds  # after the first tenth: caches and buffers warm
    slope = np.polyfit(t[settled], mib[settled], 1)[0] * 3600 if settled.sum() >= 3 else None
    return {"rate_docs_per_s": args.rate, "docs": n, "received": int(len(lat)),
            "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 1) if len(lat) else None,
            "max_ms": round(float(lat.max()), 1) if len(lat) else None,
            "rss_mib_settled": round(float(mib[settled][0]), 1) if settled.any() else None,
            "rss_mib_end": round(float(mib[-1]), 1) if len(mib) else None,
            "rss_mib_peak": round(float(mib.max()), 1) if len(mib) else None,
            "rss_growth_mib_per_hour": round(float(slope), 1) if slope is not None else None,
            "rss_samples": len(mib),
            "rss_series": [[round(a, 1), round(b, 1)] for a, b in rss]}


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="bundle directory (default: the shipped model)")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS,
                        help="ner_dataset.csv(.zip) or a UTF-8 text file (one document per paragraph)")
    parser.add_argument("--docs", type=int, default=4000, help="documents for the throughput runs")
    parser.add_argument("--sentences-per-doc", type=int, default=8)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--max-batch-docs", type=int, default=256)
    parser.add_argument("--max-batch-ms", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=256, help="prediction batch size (windows)")
    parser.add_argument("--rate", type=float, default=20.0, help="input docs/s of the latency run")
    parser.add_argument("--latency-seconds", type=float, default=30.0)
    parser.add_argument("--rss-interval", type=float, default=5.0, help="seconds between memory samples")
    parser.add_argument("--only-latency", action="store_true",
                        help="skip the throughput runs: only the fixed-rate run (a soak when long)")
    parser.add_argument("--exactly-once", action="store_true", help="run the worker with transactions")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)

    from nerbatch.bundle import load_bundle
    from nerbatch.documents import Document
    from nerbatch.pipeline import NerPipeline

    docs = load_documents(args.corpus, args.docs, args.sentences_per_doc)
    bundle = load_bundle(args.model)
    bootstrap, started_here = broker()
    run_id = uuid.uuid4().hex[:8]
    results: dict = {"model": bundle.name, "corpus": str(args.corpus), "docs": len(docs),
                     "mean_chars_per_doc": round(sum(len(d["text"]) for d in docs) / len(docs)),
                     "mode": "exactly-once" if args.exactly_once else "at-least-once",
                     "max_batch_docs": args.max_batch_docs, "max_batch_ms": args.max_batch_ms,
                     "partitions": args.partitions, "cpus": os.cpu_count(), "load_avg": os.getloadavg()}
    try:
        if not args.only_latency:
            pipeline = NerPipeline(bundle, batch_size=args.batch_size)
            pipeline.annotate_all([Document(d["id"], d["text"], {}, "warm-up", 0) for d in docs[:64]])  # trace once
            with tempfile.TemporaryDirectory() as tmp:
                results["run"] = measure_run(pipeline, docs, Path(tmp))
            results["consume"] = measure_worker(pipeline, bootstrap, docs, args, run_id)
            results["consume_vs_run"] = round(results["consume"]["docs_per_s"] / results["run"]["docs_per_s"], 3)
        with tempfile.TemporaryDirectory() as tmp:
            results["latency"] = measure_latency(bootstrap, docs, args, run_id, Path(tmp))
    finally:
        if started_here:
            subprocess.run(["bash", str(REPO / "scripts" / "kafka.sh"), "stop"], cwd=REPO, capture_output=True)

    lat = results["latency"]
    print(f"model {results['model']}, {results['docs']} docs of ~{results['mean_chars_per_doc']} chars, "
          f"{results['mode']}, batches of <= {args.max_batch_docs} docs / {args.max_batch_ms} ms, "
          f"{args.partitions} partitions, {results['cpus']} CPUs (load {results['load_avg'][0]:.1f})")
    if not args.only_latency:
        r, c = results["run"], results["consume"]
        print(f"nerbatch run      : {r['docs_per_s']:>8.1f} docs/s {r['tokens_per_s']:>9,} tokens/s ({r['seconds']} s)")
        print(f"nerbatch consume  : {c['docs_per_s']:>8.1f} docs/s {c['tokens_per_s']:>9,} tokens/s ({c['seconds']} s, "
              f"{c['batches']} batches) = {results['consume_vs_run']:.2f} x run")
    print(f"latency at {lat['rate_docs_per_s']:g} docs/s for {args.latency_seconds:g} s: p50 {lat['p50_ms']} ms, "
          f"p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms ({lat['received']}/{lat['docs']} received)")
    print(f"resident memory: {lat['rss_mib_settled']} MiB after the first tenth, {lat['rss_mib_end']} MiB at the end, "
          f"peak {lat['rss_mib_peak']} MiB; trend {lat['rss_growth_mib_per_hour']} MiB/hour ({lat['rss_samples']} samples)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
