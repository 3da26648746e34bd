"""End-to-end throughput and memory of ``nerbatch run`` on real news text.

Builds JSONL corpora of the requested sizes from the GMB corpus's sentences
(joined back into prose, grouped into news-sized documents), runs the real CLI
(``python -m nerbatch run``) on each, side by side in one invocation, and prints
docs/s and tokens/s (model loading not included) and peak RSS of each run, plus
the RSS difference between the smallest and largest input (the job streams, so
it should stay flat).

    python benchmarks/run_throughput.py --sizes-mb 10 200
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from tokenizer_agreement import detokenize  # noqa: E402

from nerbatch.corpus import read_corpus  # noqa: E402
from nerbatch.errors import NerbatchError  # noqa: E402


def build_corpus(data: str, path: Path, size_mb: float, sentences_per_doc: int = 12) -> int:
    """Write at least ``size_mb`` MB of documents; returns the document count."""
    corpus = read_corpus(data)
    sentences = [detokenize(words)[0] for words in corpus.words]
    target = size_mb * 1_000_000
    written = docs = 0
    with open(path, "w", encoding="utf-8") as handle:
        while written < target:
            for first in range(0, len(sentences), sentences_per_doc):
                text = " ".join(sentences[first : first + sentences_per_doc])
                line = json.dumps({"id": f"doc-{docs}", "title": f"story {docs}", "text": text}) + "\n"
                handle.write(line)
                written += len(line.encode("utf-8"))
                docs += 1
                if written >= target:
                    break
    return docs


def run_once(inputs: Path, output: Path, model: str | None, batch_size: int) -> dict:
    report = output.with_suffix(".report.json")
    command = [sys.executable, "-m", "nerbatch", "run", "-i", str(inputs), "-o", str(output), "-q",
               "--report", str(report), "--batch-size", str(batch_size), "--keep-fields", "title"]
    if model:
        command += ["--model", model]
    started = time.perf_counter()
    # ru_maxrss of RUSAGE_CHILDREN is the peak of the largest child so far, so each
    # size runs in its own fresh interpreter that reports its child's peak.
    probe = (
        "import resource, subprocess, sys, json;"
        "rc = subprocess.call(sys.argv[1:]);"
        "print(json.dumps({'rc': rc, 'peak_rss_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))"
    )
    result = subprocess.run([sys.executable, "-c", probe, *command], capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(result.stderr)
    probe_out = json.loads(result.stdout.strip().splitlines()[-1])
    if probe_out["rc"] != 0:
        raise SystemExit(f"nerbatch run failed with exit code {probe_out['rc']}: {result.stderr}")
    stats = json.loads(report.read_text())
    return {
        "input_mb": round(inputs.stat().st_size / 1e6, 1),
        "docs": stats["docs_in"],
        "tokens": stats["tokens"],
        "entities": stats["entities"],
        "wall_s": round(wall, 1),
        "job_s": stats["seconds"],
        "model_load_s": stats["model_load_seconds"],
        "docs_per_s": round(stats["docs_in"] / (stats["seconds"] - stats["model_load_seconds"]), 1),
        "tokens_per_s": round(stats["tokens_per_s"]),
        "peak_rss_mb": round(probe_out["peak_rss_mb"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/ner_dataset.csv.zip")
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[10, 200])
    parser.add_argument("--model", default=None, help="bundle (default: the shipped model)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workdir", type=Path, default=None, help="keep inputs and outputs here (default: a "
                        "temporary folder, removed at the end)")
    args = parser.parse_args()
    if not all(0 < size < math.inf for size in args.sizes_mb) or args.batch_size < 1:
        parser.error("--sizes-mb and --batch-size must be positive (and sizes finite)")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="nerbatch-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for size in args.sizes_mb:
            inputs = workdir / f"news-{size:g}mb.jsonl"
            if not inputs.exists():
                build_corpus(args.data, inputs, size)
            row = run_once(inputs, workdir / f"entities-{size:g}mb.parquet", args.model, args.batch_size)
            results.append(row)
            print(json.dumps(row), flush=True)
    except NerbatchError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"cpu cores: {os.cpu_count()}")
    print(f"{'input MB':>9} {'docs':>8} {'tokens':>10} {'docs/s':>8} {'tokens/s':>9} {'peak RSS MB':>12}")
    for r in results:
        print(f"{r['input_mb']:>9} {r['docs']:>8} {r['tokens']:>10} {r['docs_per_s']:>8} {r['tokens_per_s']:>9} "
              f"{r['peak_rss_mb']:>12}")
    if len(results) > 1:
        print(f"peak RSS growth from {results[0]['input_mb']} MB to {results[-1]['input_mb']} MB input: "
              f"{results[-1]['peak_rss_mb'] - results[0]['peak_rss_mb']:+.1f} MB")


if __name__ == "__main__":
    main()
