"""What a run over many small files costs against the same documents in one file.

Writes ``--files`` JSONL files of one news-sized document each (GMB sentences joined back into prose) and
one file holding the same documents, then runs ``run_job`` on each with one loaded model, alternating for
``--rounds`` rounds, and prints each run's seconds, the extra milliseconds per file and the records'
equality.

    python benchmarks/many_files.py --files 2000
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from tokenizer_agreement import detokenize  # noqa: E402

from nerbatch.bundle import default_model_path, load_bundle  # noqa: E402
from nerbatch.corpus import read_corpus  # noqa: E402
from nerbatch.errors import NerbatchError  # noqa: E402
from nerbatch.pipeline import NerPipeline  # noqa: E402
from nerbatch.runner import RunOptions, run_job  # noqa: E402


def write_inputs(data: str, folder: Path, files: int, sentences_per_doc: int) -> None:
    corpus = read_corpus(data)
    sentences = [detokenize(words)[0] for words in corpus.words]
    (folder / "many").mkdir()
    lines = []
    for n in range(files):
        first = n * sentences_per_doc % len(sentences)
        text = " ".join(sentences[first : first + sentences_per_doc])
        lines.append(json.dumps({"id": f"doc-{n}", "text": text}) + "\n")
        (folder / "many" / f"doc-{n:06d}.jsonl").write_text(lines[-1], encoding="utf-8")
    (folder / "one.jsonl").write_text("".join(lines), encoding="utf-8")


def timed_run(inputs: str, output: Path, pipeline: NerPipeline) -> tuple[float, int]:
    started = time.perf_counter()
    report = run_job(RunOptions(inputs=[inputs], output=str(output)), pipeline)
    return time.perf_counter() - started, report.tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/ner_dataset.csv.zip")
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--sentences-per-doc", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default=str(default_model_path()))
    args = parser.parse_args()
    if args.files < 1 or args.sentences_per_doc < 1 or args.rounds < 1:
        parser.error("--files, --sentences-per-doc and --rounds must be positive")

    folder = Path(tempfile.mkdtemp(prefix="nerbatch-many-"))
    try:
        write_inputs(args.data, folder, args.files, args.sentences_per_doc)
        pipeline = NerPipeline(load_bundle(args.model))
        timed_run(str(folder / "one.jsonl"), folder / "warm-up.jsonl", pipeline)  # traces the model's graph
        seconds = {"one file": [], "many files": []}
        for _ in range(args.rounds):
            one, tokens = timed_run(str(folder / "one.jsonl"), folder / "one-out.jsonl", pipeline)
            many, many_tokens = timed_run(str(folder / "many"), folder / "many-out.jsonl", pipeline)
            assert tokens == many_tokens
            seconds["one file"].append(one)
            seconds["many files"].append(many)
        same = (folder / "one-out.jsonl").read_bytes() == (folder / "many-out.jsonl").read_bytes()
        one, many = min(seconds["one file"]), min(seconds["many files"])
        print(f"{args.files} documents of {args.sentences_per_doc} sentences, {tokens} tokens; best of "
              f"{args.rounds} rounds")
        for name, runs in seconds.items():
            print(f"  {name:<10} {min(runs):7.2f} s   (rounds: {', '.join(f'{s:.2f}' for s in runs)})")
        print(f"  extra per file: {(many - one) / args.files * 1000:.1f} ms; many/one: {many / one:.2f}x; "
              f"same records: {same}")
    except NerbatchError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
