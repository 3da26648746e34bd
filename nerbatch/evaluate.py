"""The fixed evaluation protocol.

80/20 split of the corpus sentences with ``train_test_split(test_size=0.2,
random_state=1)``; every token of every test sentence is scored (long
sentences are windowed and merged, never truncated); the score is entity-level
micro F1 with exact span and type match on IOB2, plus per-type figures.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

from nerbatch.corpus import Corpus, CorpusError, file_name, file_sha256, protocol_split, read_corpus
from nerbatch.metrics import entity_scores

PROTOCOL = {
    "split": "sklearn train_test_split over sentences in file order, test_size=0.2, random_state=1",
    "validation": "taken from the training part only",
    "score": "entity-level micro F1, exact span and type match, IOB2 (stray I- opens an entity)",
    "coverage": "every token of every test sentence; sentences longer than max_len windowed and merged",
}


def score_corpus(tagger, corpus: Corpus, types: set[str] = frozenset()) -> dict:
    """Scores of ``tagger`` on ``corpus``, with a row for each of the model's types and ``types``."""
    started = time.perf_counter()
    predicted = tagger.tag_strings(corpus.words)
    seconds = time.perf_counter() - started
    scores = entity_scores(corpus.tags, predicted, types={tag[2:] for tag in tagger.tags if tag != "O"} | types)
    scores["sentences"] = len(corpus)
    scores["tokens"] = corpus.n_tokens
    scores["seconds"] = round(seconds, 3)
    scores["tokens_per_s"] = round(corpus.n_tokens / seconds, 1) if seconds else None
    return scores


def test_part(corpus: Corpus) -> Corpus:
    _, test = protocol_split(len(corpus), corpus.source)
    return corpus.subset(test)


def evaluate_bundle(bundle, data_path: str | Path, batch_size: int = 256) -> dict:
    """Score a loaded bundle on the protocol's test split of ``data_path``."""
    corpus = read_corpus(data_path)
    known = {tag[2:] for tag in bundle.tags if tag != "O"}
    types = set(corpus.entity_types())
    if not known & types:
        raise CorpusError(f"{data_path}: its entity types ({', '.join(sorted(types)) or 'none'}) and the "
                          f"model's ({', '.join(sorted(known))}) have none in common; there is nothing to score")
    scores = score_corpus(bundle.tagger(batch_size=batch_size), test_part(corpus), types)
    data = {"file": file_name(data_path), "sha256": file_sha256(data_path), "sentences_sha256": corpus.sentences_sha256()}
    trained_on = bundle.metrics.get("data") if isinstance(bundle.metrics, dict) else None
    if isinstance(trained_on, dict) and isinstance(trained_on.get("sha256"), str):
        # Another file's test split may hold sentences the model trained on (the same corpus in another
        # order scores far above the model's true figures), so the report says which file trained it.
        # The same sentences in another container (unzipped, re-zipped) are the same corpus.
        data["trained_on"] = {k: trained_on[k] for k in ("file", "sha256", "sentences_sha256") if k in trained_on}
        data["same_as_training"] = (trained_on["sha256"] == data["sha256"]
                                    or trained_on.get("sentences_sha256") == data["sentences_sha256"])
    return {
        "model": bundle.name,
        "protocol": PROTOCOL,
        "data": data,
        "types_unknown_to_model": sorted(types - known),  # scored, and never found
        "test": scores,
    }


def library_versions() -> dict:
    import numpy

    from nerbatch import __version__
    from nerbatch.backend import keras

    k = keras()
    versions = {
        "nerbatch": __version__,
        "keras": k.__version__,
        "keras_backend": k.backend.backend(),
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }
    if versions["keras_backend"] == "tensorflow":
        import tensorflow

        versions["tensorflow"] = tensorflow.__version__
    return versions
