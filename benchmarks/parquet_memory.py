"""Peak memory of reading parquet documents, by row-group size.

Writes one parquet file of news-sized documents (GMB sentences joined into prose) as
many small row groups and the same rows as one row group, then reads every document
of each with :func:`nerbatch.documents.read_documents` in a fresh process and prints
its peak RSS, side by side in one invocation. The reader streams pages, so the two
should stay close whatever the file's size.

    python benchmarks/parquet_memory.py --rows 100000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from tokenizer_agreement import detokenize  # noqa: E402

from nerbatch.corpus import read_corpus  # noqa: E402
from nerbatch.errors import NerbatchError  # noqa: E402

# VmHWM, not ru_maxrss: Linux carries ru_maxrss over an exec, so the child would report this
# process's own peak (the texts it built).
READ = """
import re, sys
from nerbatch.documents import read_documents
docs = sum(1 for _ in read_documents(sys.argv[1]))
with open("/proc/self/status") as status:
    print(docs, re.search(r"VmHWM:\\s+(\\d+) kB", status.read())[1])
"""


def write_files(data: str, folder: Path, rows: int, doc_sentences: int) -> tuple[Path, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sentences = [detokenize(words)[0] for words in read_corpus(data).words]
    texts = [" ".join(sentences[(i * doc_sentences + k) % len(sentences)] for k in range(doc_sentences))
             for i in range(rows)]
    table = pa.table({"id": [f"d{i}" for i in range(rows)], "text": texts})
    many, one = folder / "many-row-groups.parquet", folder / "one-row-group.parquet"
    pq.write_table(table, many, row_group_size=max(1, rows // 100))
    pq.write_table(table, one, row_group_size=rows)
    return many, one


def peak_rss_kb(path: Path) -> tuple[int, int]:
    done = subprocess.run([sys.executable, "-c", READ, str(path)], capture_output=True, text=True, check=True)
    docs, rss = done.stdout.split()
    return int(docs), int(rss)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/ner_dataset.csv.zip")
    parser.add_argument("--rows", type=int, default=100_000, help="documents in each file")
    parser.add_argument("--doc-sentences", type=int, default=12, help="sentences per document")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nerbatch-parquet-memory-") as scratch:
        try:
            many, one = write_files(args.data, Path(scratch), args.rows, args.doc_sentences)
        except NerbatchError as exc:
            parser.exit(2, f"{Path(__file__).name}: error: {exc}\n")
        print(f"{args.rows:,} documents, {os.path.getsize(one) / 1e6:,.0f} MB as one row group")
        figures = {}
        for label, path in (("100 row groups", many), ("1 row group", one)):
            docs, rss = peak_rss_kb(path)
            figures[label] = rss
            print(f"  {label:<15} {docs:,} documents read, peak RSS {rss / 1024:,.0f} MiB")
        print(f"  one row group / 100 row groups: {figures['1 row group'] / figures['100 row groups']:.2f}x peak RSS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
