"""Batched tagging of tokenised sentences with a loaded model.

Sentences are cut into windows (``nerbatch.windows``), the windows sorted by
length and padded only to the smallest length bucket that holds each batch, so
little compute goes to padding and the compiled predict function sees a handful
of fixed shapes. Probabilities are merged back per sentence, then decoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from nerbatch import backend
from nerbatch.decode import constrained_viterbi, tag_marginals
from nerbatch.truecase import Truecaser
from nerbatch.vocab import FeatureEncoder
from nerbatch.windows import DEFAULT_OVERLAP, plan_windows


# Bounds of one decoding chunk: its arrays are rows x longest sentence x tags, several times over.
DECODE_ROWS = 1024
DECODE_CELLS = 1 << 16


@dataclass(frozen=True, slots=True)
class TaggedSentence:
    tag_ids: np.ndarray  # int32 [n_tokens]
    tag_probs: np.ndarray  # float32 [n_tokens], probability of the chosen tag (its marginal, with Viterbi)


def length_buckets(max_len: int) -> tuple[int, ...]:
    """Widths a batch is padded to: powers of two from 16, then ``max_len``, so a large ``max_len``
    costs only what the longest window of a batch needs (and a few shapes more for the backend)."""
    return tuple([16 << k for k in range(max(max_len, 16).bit_length()) if 16 << k < max_len] + [max_len])


def padded_rows(n: int, batch_size: int) -> int:
    """Rows a batch of ``n`` windows is padded to (with empty windows).

    Every new input shape costs the backend memory it keeps (traced functions,
    kernel caches), so a long-running worker fed batches of every size would
    grow without end; rounding to powers of two up to 32, then to multiples
    of 32, leaves a dozen shapes per length bucket.
    """
    rows = 1 << (n - 1).bit_length() if n > 1 else 1
    if rows > 32:
        rows = -(-n // 32) * 32
    return min(rows, max(batch_size, n))


class Tagger:
    """Tags sentences with a Keras model; shared by evaluation and the jobs."""

    def __init__(
        self,
        model,
        encoder: FeatureEncoder,
        tags: Sequence[str],
        *,
        max_len: int,
        decoder: str,
        batch_size: int = 256,
        overlap: int = DEFAULT_OVERLAP,
        transition_scores: np.ndarray | None = None,
        truecaser: Truecaser | None = None,
    ) -> None:
        if decoder not in ("argmax", "viterbi"):
            raise ValueError(f"unknown decoder {decoder!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model = model
        self.encoder = encoder
        self.tags = list(tags)
        self.max_len = max_len
        self.decoder = decoder
        self.batch_size = batch_size
        self.overlap = min(overlap, max_len // 2)
        self.buckets = length_buckets(max_len)
        self.transition_scores = transition_scores
        self.truecaser = truecaser

    def tag_probabilities(self, sentences: Sequence[Sequence[str]]) -> list[np.ndarray]:
        """Per sentence, a float32 [n_tokens, n_tags] matrix of tag probabilities."""
        backend.check_not_forked()
        # a list: read twice below (an iterator would leave every sentence unscored)
        sentences = list(sentences) if self.truecaser is None else [self.truecaser.sentence(s) for s in sentences]
        n_tags = len(self.tags)
        merged = [np.zeros((len(s), n_tags), dtype=np.float32) for s in sentences]
        jobs = [
            (index, window)
            for index, sentence in enumerate(sentences)
            for window in plan_windows(len(sentence), self.max_len, self.overlap)
            if window.end > window.start
        ]
        jobs.sort(key=lambda job: job[1].end - job[1].start)
        for first in range(0, len(jobs), self.batch_size):
            batch = jobs[first : first + self.batch_size]
            longest = batch[-1][1].end - batch[-1][1].start
            width = next(b for b in self.buckets if b >= longest)
            tokens = [sentences[i][w.start : w.end] for i, w in batch]
            tokens += [[]] * (padded_rows(len(batch), self.batch_size) - len(batch))
            probs = np.asarray(self.model.predict_on_batch(self.encoder.encode_batch(tokens, width)))
            for row, (index, window) in enumerate(batch):
                lo, hi = window.own_start - window.start, window.own_end - window.start
                merged[index][window.own_start : window.own_end] = probs[row, lo:hi]
        return merged

    def tag(self, sentences: Sequence[Sequence[str]]) -> list[TaggedSentence]:
        return self.decode(self.tag_probabilities(sentences))

    def decode(self, probabilities: Sequence[np.ndarray]) -> list[TaggedSentence]:
        if not probabilities:
            return []
        if self.decoder == "argmax":
            ids = [p.argmax(axis=1).astype(np.int32) for p in probabilities]
            return [TaggedSentence(i, p[np.arange(len(p)), i].astype(np.float32)) for i, p in zip(ids, probabilities)]
        tagged: list[TaggedSentence | None] = [None] * len(probabilities)
        for chunk, lengths, padded in self._padded_chunks(probabilities):
            paths = constrained_viterbi(padded, lengths, self.tags, self.transition_scores)
            marginals = tag_marginals(padded, lengths, self.tags, self.transition_scores)
            chosen = np.take_along_axis(marginals, paths[:, :, None], axis=2)[:, :, 0]
            for row, (index, n) in enumerate(zip(chunk, lengths)):
                tagged[index] = TaggedSentence(paths[row, :n], chosen[row, :n])
        return tagged

    @staticmethod
    def _padded_chunks(probabilities: Sequence[np.ndarray]):
        """Sentences of similar length padded together, so the decoders do little waste.

        A chunk holds at most ``DECODE_ROWS`` sentences and ``DECODE_CELLS`` padded
        positions: a very long sentence (a document without sentence punctuation) is
        decoded alone instead of padding a thousand short ones to its length.
        """
        lengths = np.fromiter((len(p) for p in probabilities), np.int64, len(probabilities))
        order = np.argsort(lengths, kind="stable")
        chunks, first = [], 0
        for end in range(1, len(order) + 1):
            rows_after = end + 1 - first
            if end == len(order) or rows_after > DECODE_ROWS or rows_after * lengths[order[end]] > DECODE_CELLS:
                chunks.append(order[first:end])
                first = end
        for chunk in chunks:
            padded = np.zeros((len(chunk), int(lengths[chunk].max()), probabilities[0].shape[1]), dtype=np.float32)
            for row, index in enumerate(chunk):
                padded[row, : lengths[index]] = probabilities[index]
            yield chunk, lengths[chunk], padded

    def tag_strings(self, sentences: Sequence[Sequence[str]]) -> list[list[str]]:
        return [[self.tags[i] for i in t.tag_ids] for t in self.tag(sentences)]
