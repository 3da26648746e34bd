"""How well an entity's ``score`` predicts that the entity is right.

Tags sentences the bundle never trained on with each bundle: the validation
part (10 % of the protocol's training part), or the test split for a bundle
refitted on the whole training part. Bins the predicted entities by score: in a bin of
scores near 0.8, about 80 % of the entities should match a gold entity exactly.
Prints the precision per bin and the expected calibration error (ECE: the
entity-weighted mean gap between score and precision), for the score nerbatch
writes (mean marginal probability of the entity's tags) and, beside it, the
mean per-token softmax probability of the same tags.

    python benchmarks/score_calibration.py --data ../shared/data/ner_dataset.csv.zip nerbatch/models/default
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from nerbatch.bundle import load_bundle
from nerbatch.corpus import read_corpus
from nerbatch.decode import iob2_spans
from nerbatch.errors import NerbatchError
from nerbatch.train import TrainSettings, protocol_parts

BINS = 10


def calibration(scores: np.ndarray, correct: np.ndarray) -> tuple[float, list[str]]:
    bins = np.minimum((scores * BINS).astype(int), BINS - 1)
    ece, cells = 0.0, []
    for k in range(BINS):
        inside = bins == k
        if inside.any():
            ece += inside.mean() * abs(scores[inside].mean() - correct[inside].mean())
            cells.append(f"[{k / BINS:.1f},{(k + 1) / BINS:.1f}) {correct[inside].mean():.2f} (n={inside.sum()})")
    return ece, cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", nargs="+", help="bundle directories")
    parser.add_argument("--data", default="../shared/data/ner_dataset.csv.zip")
    args = parser.parse_args()

    _, validation, test = protocol_parts(read_corpus(args.data), TrainSettings())
    for path in args.bundles:
        bundle = load_bundle(path)
        refitted = bundle.metrics.get("training", {}).get("settings", {}).get("refit", False)
        part_name, part = ("test", test) if refitted else ("validation", validation)
        tagger = bundle.tagger()
        probabilities = tagger.tag_probabilities(part.words)
        written, softmax, correct = [], [], []
        for gold, probs, tagged in zip(part.tags, probabilities, tagger.decode(probabilities)):
            gold_spans = set(iob2_spans(gold))
            for span in iob2_spans([bundle.tags[i] for i in tagged.tag_ids]):
                rows = np.arange(span.start, span.end)
                written.append(tagged.tag_probs[rows].mean())
                softmax.append(probs[rows, tagged.tag_ids[rows]].mean())
                correct.append(span in gold_spans)
        correct = np.asarray(correct, dtype=float)
        print(f"{bundle.name}: {len(correct)} predicted entities on the {part_name} part, precision {correct.mean():.3f}")
        for label, scores in (("score written", written), ("token softmax", softmax)):
            ece, cells = calibration(np.asarray(scores), correct)
            print(f"  {label}: mean {np.mean(scores):.3f}, ECE {ece:.3f}")
            print("    precision by score: " + "; ".join(cells))


if __name__ == "__main__":
    try:
        main()
    except NerbatchError as exc:  # a missing corpus or bundle: one line, as from the CLI
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
