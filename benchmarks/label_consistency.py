"""How consistently the corpus labels the same text: a rough ceiling for any model.

Test sentences of the fixed protocol that also occur word for word in the
training part are tagged with the training part's most common labelling of
that sentence, and scored like a model. A model that tags such a sentence the
way its training copy was tagged cannot score higher on it than this.

    python benchmarks/label_consistency.py --data ../shared/data/ner_dataset.csv.zip
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path

from nerbatch.corpus import protocol_split, read_corpus
from nerbatch.errors import NerbatchError
from nerbatch.metrics import entity_scores, format_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/ner_dataset.csv.zip")
    args = parser.parse_args()

    corpus = read_corpus(args.data)
    train_idx, test_idx = protocol_split(len(corpus))
    labellings: dict[tuple[str, ...], Counter] = defaultdict(Counter)
    for i in train_idx:
        labellings[tuple(corpus.words[i])][tuple(corpus.tags[i])] += 1
    gold, copied = [], []
    for i in test_idx:
        seen = labellings.get(tuple(corpus.words[i]))
        if seen:
            gold.append(corpus.tags[i])
            copied.append(list(seen.most_common(1)[0][0]))
    entities = sum(1 for tags in gold for t in tags if t.startswith("B-"))
    print(f"{len(gold)} of {len(test_idx)} test sentences occur word for word in the training part "
          f"({entities} gold entities); their training labelling scored against their test labelling:")
    print(format_table(entity_scores(gold, copied)))


if __name__ == "__main__":
    try:
        main()
    except NerbatchError as exc:  # a missing corpus or bundle: one line, as from the CLI
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
