"""Shared fixtures: the committed GMB sample and a tiny bundle trained on it."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
GMB_SAMPLE = FIXTURES / "gmb_sample.csv"
FULL_CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ner_dataset.csv.zip"


@pytest.fixture(scope="session")
def gmb_sample() -> Path:
    return GMB_SAMPLE


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A real default-arch bundle: 8 epochs on the committed sample's training part.

    432 sentences give few updates, so the learning rate is 5x the default's.
    """
    from nerbatch.train import TrainSettings, train

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    settings = TrainSettings.for_arch("default", epochs=8, patience=8, seed=3, learning_rate=0.005)
    train(GMB_SAMPLE, out, settings, verbose=0)
    return out


@pytest.fixture(scope="session")
def full_corpus() -> Path:
    if not FULL_CORPUS.is_file():
        pytest.skip(f"full corpus not found at {FULL_CORPUS}")
    return FULL_CORPUS


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_bundle):
    from nerbatch.bundle import load_bundle
    from nerbatch.pipeline import NerPipeline

    return NerPipeline(load_bundle(tiny_bundle), batch_size=64, chunk_sentences=64)


@pytest.fixture(scope="session")
def default_pipeline():
    """The model shipped inside the package."""
    from nerbatch.bundle import load_bundle
    from nerbatch.pipeline import NerPipeline

    return NerPipeline(load_bundle(None))


@pytest.fixture(scope="session")
def news_documents() -> list[dict]:
    import json

    path = Path(__file__).resolve().parents[1] / "examples" / "news.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
