"""Prediction throughput of model bundles, side by side on the same sentences.

Tags the protocol's test sentences with each bundle (windowing, length buckets,
batch 256, decoding included), alternating the bundles over several rounds so
that machine noise hits them alike, and prints real (unpadded) tokens/s per
bundle and the ratio to the first one.

    python benchmarks/model_throughput.py --data ../shared/data/ner_dataset.csv.zip \
        seed=/path/to/seed-bundle default=nerbatch/models/default
"""

from __future__ import annotations

import argparse
import statistics
import time

from nerbatch.bundle import load_bundle
from nerbatch.corpus import read_corpus
from nerbatch.errors import NerbatchError
from nerbatch.evaluate import test_part


def _named_bundle(spec: str) -> tuple[str, str]:
    name, _, path = spec.partition("=")
    if not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {spec!r}")
    return name, path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="+", type=_named_bundle, help="NAME=PATH, the first is the reference")
    parser.add_argument("--data", default="../shared/data/ner_dataset.csv.zip")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    names = [name for name, _ in args.bundles]
    if len(set(names)) < len(names):
        parser.error(f"bundle names must differ, got {', '.join(names)}")
    if args.rounds < 1 or args.batch_size < 1:
        parser.error("--rounds and --batch-size must be positive")

    try:
        sentences = test_part(read_corpus(args.data)).words
        taggers = {name: load_bundle(path).tagger(batch_size=args.batch_size) for name, path in args.bundles}
    except NerbatchError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    tokens = sum(len(s) for s in sentences)
    for tagger in taggers.values():
        tagger.tag(sentences[:512])  # warm-up: trace the predict function per bucket
    rates: dict[str, list[float]] = {name: [] for name in taggers}
    for _ in range(args.rounds):
        for name, tagger in taggers.items():
            started = time.perf_counter()
            tagger.tag(sentences)
            rates[name].append(tokens / (time.perf_counter() - started))
    reference = statistics.median(rates[next(iter(rates))])
    print(f"{len(sentences)} sentences, {tokens} tokens, batch {args.batch_size}, {args.rounds} rounds (median)")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"{name:>12}: {median:>9,.0f} tokens/s  ratio {median / reference:.2f}  "
              f"(rounds: {', '.join(f'{v:,.0f}' for v in values)})")


if __name__ == "__main__":
    main()
