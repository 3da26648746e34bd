"""Vocabularies with reserved ids, and the per-token features the models read.

Id 0 is padding and id 1 the unknown word, for words and characters alike, so
padding never collides with a real word and unseen words never raise.
Lookups go through ``pandas.Index.get_indexer`` (a C hash lookup) over the
unique words of a batch, so no per-token Python work is done.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

PAD_ID = 0
UNK_ID = 1
PAD_TOKEN = "<pad>"
UNK_TOKEN = "<unk>"

# Word shape classes; 0 is padding.
CASING_CLASSES = (
    "<pad>", "lower", "title", "upper", "mixed", "numeric", "has_digit", "punct", "other",
)
_DIGITS = re.compile(r"\d")
_PUNCT = re.compile(r"^[^\w\s]+$")
# Default-ignorable characters a token can hold: soft hyphen, grapheme joiner, zero-width (non-)joiners
# and marks, word joiner and invisible operators, variation selectors, BOM, tag characters.
_INVISIBLE = re.compile("[\u00ad\u034f\u200b-\u200f\u2060-\u2064\ufe00-\ufe0f\ufeff\U000e0000-\U000e0fff]")
_NFC_LIMIT = 1024  # characters of a word put into NFC
# Typographic apostrophes and hyphens as the corpus writes them (ASCII): most news text has
# "d\u2019Ivoire" and "Hewlett\u2010Packard" where the corpus has "d'Ivoire" and "Hewlett-Packard".
# An acute accent or a prime typed for one ("Britain\u00b4s", "Yar\u2032Adua") reads as one too.
_TYPOGRAPHIC = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201b": "'", "\u02bc": "'", "\u00b4": "'",
                              "\u2032": "'", "\u2010": "-", "\u2011": "-"})
# Ligatures (PDF text: "\ufb01ve") and full-width ASCII (East Asian input: "\uff0c", "\uff08") read as
# their plain letters and punctuation, as NFKC gives them; NFKC as a whole would change far more.
_COMPATIBLE = re.compile("[\ufb00-\ufb06\uff01-\uff5e]+")


def normalize_word(word: str, lowercase: bool) -> str:
    """The vocabulary key of a word: composed (NFC), optionally lowercased, digits folded to 0."""
    key = _DIGITS.sub("0", composed(word))
    return key.lower() if lowercase else key


def composed(word: str) -> str:
    """The NFC form without invisible characters: "Se\u0301gole\u0300ne" (as macOS file names and some
    editors write it) reads as "Ségolène", the form the corpus and the vocabulary hold, and a soft
    hyphen or zero-width joiner left by HTML ("Pal\u00adestinian") does not make a known word unknown.
    A word of invisible characters only keeps them. Typographic apostrophes and hyphens read as the
    corpus's ASCII ones, ligatures and full-width ASCII as their plain forms."""
    if word.isascii():
        return word
    visible = _INVISIBLE.sub("", word) or word
    if _COMPATIBLE.search(visible):
        visible = _COMPATIBLE.sub(lambda m: unicodedata.normalize("NFKC", m.group()), visible)
    if len(visible) > _NFC_LIMIT:  # CPython orders a run of combining marks by insertion: quadratic in its
        return visible.translate(_TYPOGRAPHIC)  # length; a word this long is unknown to every vocabulary anyway
    return unicodedata.normalize("NFC", visible).translate(_TYPOGRAPHIC)


def casing_class(word: str) -> int:
    if word.isdigit():
        return 5
    if any(ch.isdigit() for ch in word):
        return 6
    if _PUNCT.match(word):
        return 7
    if word.islower():
        return 1
    if word.isupper():
        return 3
    if word[:1].isupper() and (len(word) == 1 or word[1:].islower()):
        return 2
    if any(ch.isupper() for ch in word) and any(ch.islower() for ch in word):
        return 4
    return 8


@dataclass
class Vocabulary:
    """An id for every known item; ids 0 and 1 are padding and unknown."""

    items: list[str]
    _index: pd.Index = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.items[:2] != [PAD_TOKEN, UNK_TOKEN]:
            raise ValueError("vocabulary must start with the padding and unknown tokens")
        self._index = pd.Index(self.items)

    @classmethod
    def build(cls, items: Iterable[str], min_freq: int = 1) -> "Vocabulary":
        counts = Counter(items)
        kept = sorted((item for item, n in counts.items() if n >= min_freq), key=lambda i: (-counts[i], i))
        return cls([PAD_TOKEN, UNK_TOKEN, *(i for i in kept if i not in (PAD_TOKEN, UNK_TOKEN))])

    def __len__(self) -> int:
        return len(self.items)

    def lookup(self, keys: Sequence[str] | np.ndarray) -> np.ndarray:
        ids = self._index.get_indexer(keys)
        ids[ids <= PAD_ID] = UNK_ID  # a real token spelt "<pad>" is unknown, never padding
        return ids.astype(np.int32)


@dataclass(frozen=True)
class TagSet:
    """IOB2 tags; ``O`` is id 0."""

    tags: list[str]

    @classmethod
    def build(cls, tag_sequences: Iterable[Sequence[str]]) -> "TagSet":
        seen = {tag for seq in tag_sequences for tag in seq}
        seen.discard("O")
        ordered = sorted(seen, key=lambda t: (t[2:], t[0]))
        return cls(["O", *ordered])

    def __len__(self) -> int:
        return len(self.tags)

    def encode(self, tags: Sequence[str]) -> np.ndarray:
        index = {t: i for i, t in enumerate(self.tags)}
        return np.array([index[t] for t in tags], dtype=np.int32)


@dataclass
class FeatureEncoder:
    """Turns token strings into the model's inputs (words, chars, casing).

    Features are computed once per distinct word and kept in a cache bounded in
    words and in characters (text full of unique long tokens, such as URLs with
    tracking ids, must not grow a long-running worker), so a batch costs one
    dictionary lookup per token plus the work for words not seen before.
    """

    words: Vocabulary
    chars: Vocabulary | None  # None: no character input
    lowercase: bool
    max_word_len: int = 16
    casing: bool = True  # emit the word-shape input
    cache_size: int = 500_000
    cache_chars: int = 16_000_000
    _rows: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _cached_chars: int = field(default=0, init=False, repr=False)
    _table: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False)
    # Taggers of one bundle share this encoder, and pipelines may run in several threads.
    _cache_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def unique_features(self, unique_words: Sequence[str]) -> dict[str, np.ndarray]:
        """Features of distinct words; callers index them back to tokens."""
        unique_words = [composed(w) for w in unique_words]
        keys = [normalize_word(w, self.lowercase) for w in unique_words]
        out = {"words": self.words.lookup(keys)}
        if self.casing:
            out["casing"] = np.fromiter((casing_class(w) for w in unique_words), np.int32, len(unique_words))
        if self.chars is not None:
            out["chars"] = self._char_ids(unique_words)
        return out

    def _feature_rows(self, tokens: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Row of each token in the feature table, adding unseen words to it."""
        with self._cache_lock:
            if len(self._rows) > self.cache_size or self._cached_chars > self.cache_chars:
                self._rows, self._table, self._cached_chars = {}, {}, 0
            rows = self._rows
            missing = list(dict.fromkeys(w for w in tokens if w not in rows))
            self._cached_chars += sum(map(len, missing))
            if missing or not self._table:
                fresh = self.unique_features(missing)
                base = len(rows)
                rows.update((w, base + i) for i, w in enumerate(missing))
                self._table = fresh if not self._table else {
                    name: np.concatenate([self._table[name], fresh[name]]) for name in fresh
                }
            return np.fromiter((rows[w] for w in tokens), np.int64, len(tokens)), self._table

    def _char_ids(self, unique_words: Sequence[str]) -> np.ndarray:
        width = self.max_word_len
        half = width // 2
        # Long words keep their prefix and suffix: both carry the signal.
        clipped = [w if len(w) <= width else w[:half] + w[-half:] for w in unique_words]
        lengths = np.fromiter((len(w) for w in clipped), np.int64, len(clipped))
        flat = self.chars.lookup(list("".join(clipped)))
        ids = np.zeros((len(clipped), width), dtype=np.int32)
        rows = np.repeat(np.arange(len(clipped)), lengths)
        cols = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        ids[rows, cols] = flat
        return ids

    def encode_batch(self, token_lists: Sequence[Sequence[str]], width: int) -> dict[str, np.ndarray]:
        """Pad a batch of token windows (each at most ``width`` long) into model inputs."""
        lengths = np.fromiter((len(t) for t in token_lists), np.int64, len(token_lists))
        tokens = [w for window in token_lists for w in window]
        mask = np.arange(width)[None, :] < lengths[:, None]
        rows, table = self._feature_rows(tokens)
        inputs: dict[str, np.ndarray] = {}
        for name, values in table.items():
            padded = np.zeros((len(token_lists), width, *values.shape[1:]), dtype=np.int32)
            padded[mask] = values[rows]
            inputs[name] = padded
        return inputs
