"""Would the rest of a document settle the entity types a model gets wrong?

The corpus keeps its articles' sentences in order, so the sentences around a
test sentence stand in for its document. A bundle tags every sentence; then
each test sentence's entities are revised from what the model found in its
neighbours (within ``--window`` sentences either side, document boundaries
being unknown):

- relabel: an entity whose exact text the neighbours tag with another type at
  least ``--min-votes`` times, and more often than with its own, takes that type;
- add: an untagged, capitalised run of words that the neighbours tag as an
  entity at least ``--min-votes`` times becomes that entity.

Neighbours from the test part only is the fair reading. Neighbours from the
whole corpus include training sentences, whose labels the bundle has learnt,
so that reading is an upper bound of what document context can give this way.

    python benchmarks/document_consistency.py --data ../shared/data/ner_dataset.csv.zip
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path

from nerbatch.bundle import load_bundle
from nerbatch.corpus import protocol_split, read_corpus
from nerbatch.decode import iob2_spans
from nerbatch.errors import NerbatchError
from nerbatch.metrics import entity_scores


def entity_texts(words: list[str], tags: list[str]) -> list[tuple[str, int, int, tuple[str, ...]]]:
    return [(s.label, s.start, s.end, tuple(words[s.start:s.end])) for s in iob2_spans(tags)]


def set_entity(tags: list[str], start: int, end: int, label: str) -> None:
    tags[start] = f"B-{label}"
    for k in range(start + 1, end):
        tags[k] = f"I-{label}"


def revise(words, tags, neighbour_entities, min_votes: int, relabel: bool, add: bool) -> tuple[list[str], int]:
    votes: dict[tuple[str, ...], Counter] = defaultdict(Counter)
    for entities in neighbour_entities:
        for label, _, _, text in entities:
            votes[text][label] += 1
    revised = list(tags)
    changes = 0
    if relabel:
        for label, start, end, text in entity_texts(words, tags):
            if text in votes:
                top, count = votes[text].most_common(1)[0]
                if top != label and count >= min_votes and count > votes[text][label]:
                    set_entity(revised, start, end, top)
                    changes += 1
    if add:
        for text, counts in votes.items():
            top, count = counts.most_common(1)[0]
            if count < min_votes or not text[0][:1].isupper():
                continue
            n = len(text)
            for start in range(len(words) - n + 1):
                end = start + n
                if (tuple(words[start:end]) == text and all(t == "O" for t in revised[start:end])
                        and (end == len(words) or not revised[end].startswith("I-"))):
                    set_entity(revised, start, end, top)
                    changes += 1
    return revised, changes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/ner_dataset.csv.zip")
    parser.add_argument("--model", default=None, help="bundle directory (default: the shipped model)")
    parser.add_argument("--window", type=int, nargs="+", default=[3, 10])
    parser.add_argument("--min-votes", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()

    corpus = read_corpus(args.data)
    bundle = load_bundle(args.model)
    predicted = bundle.tagger().tag_strings(corpus.words)
    _, test_idx = protocol_split(len(corpus))
    in_test = set(test_idx.tolist())
    entities = [entity_texts(w, t) for w, t in zip(corpus.words, predicted)]
    gold = [corpus.tags[i] for i in test_idx]

    base = entity_scores(gold, [predicted[i] for i in test_idx])
    print(f"{bundle.name}: test micro F1 {base['micro']['f1']:.4f} as tagged sentence by sentence")
    print(f"{'neighbours':<12}{'window':>7}{'votes':>6}  {'rule':<14}{'changes':>8}{'micro F1':>10}{'per':>7}{'org':>7}{'geo':>7}")
    for pool in ("test part", "all"):
        for window in args.window:
            for min_votes in args.min_votes:
                for relabel, add in ((True, False), (False, True), (True, True)):
                    revised, changes = [], 0
                    for i in test_idx:
                        around = [j for j in range(i - window, i + window + 1)
                                  if j != i and 0 <= j < len(corpus) and (pool == "all" or j in in_test)]
                        tags, n = revise(corpus.words[i], predicted[i], [entities[j] for j in around],
                                         min_votes, relabel, add)
                        revised.append(tags)
                        changes += n
                    scores = entity_scores(gold, revised)
                    rule = " + ".join(name for name, on in (("relabel", relabel), ("add", add)) if on)
                    by_type = scores["per_type"]
                    print(f"{pool:<12}{window:>7}{min_votes:>6}  {rule:<14}{changes:>8}{scores['micro']['f1']:>10.4f}"
                          f"{by_type['per']['f1']:>7.3f}{by_type['org']['f1']:>7.3f}{by_type['geo']['f1']:>7.3f}")


if __name__ == "__main__":
    try:
        main()
    except NerbatchError as exc:  # a missing corpus or bundle: one line, as from the CLI
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
