"""From per-token tag probabilities to entity spans.

``constrained_viterbi`` picks the most probable tag sequence that is valid
IOB2 (``I-X`` only after ``B-X`` or ``I-X``), so decoded output never holds a
stray ``I-``. ``iob2_spans`` still accepts any sequence: a stray ``I-X``
(after ``O`` or another type) opens a new entity, the conlleval convention,
so gold data and the tutorial's argmax decoding are scored the usual way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Span:
    label: str
    start: int  # token index
    end: int  # token index, exclusive


def iob2_spans(tags: Sequence[str]) -> list[Span]:
    spans: list[Span] = []
    label: str | None = None
    start = 0
    for i, tag in enumerate(tags):
        prefix, _, kind = tag.partition("-")
        continues = prefix == "I" and kind == label
        if label is not None and not continues:
            spans.append(Span(label, start, i))
            label = None
        if prefix in ("B", "I") and not continues:
            label, start = kind, i
    if label is not None:
        spans.append(Span(label, start, len(tags)))
    return spans


def allowed_transitions(tags: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (prev, next) transition matrix and allowed start tags for IOB2."""
    n = len(tags)
    allowed = np.ones((n, n), dtype=bool)
    start = np.ones(n, dtype=bool)
    for j, nxt in enumerate(tags):
        if nxt.startswith("I-"):
            kind = nxt[2:]
            start[j] = False
            for i, prev in enumerate(tags):
                allowed[i, j] = prev in (f"B-{kind}", f"I-{kind}")
    return allowed, start


def tag_bigram_log_probs(tag_ids: Sequence[np.ndarray], n_tags: int) -> np.ndarray:
    """Add-one smoothed log P(next tag | previous tag) from gold tag id sequences."""
    counts = np.ones((n_tags, n_tags))
    for seq in tag_ids:
        np.add.at(counts, (seq[:-1], seq[1:]), 1)
    return np.log(counts / counts.sum(axis=1, keepdims=True))


def constrained_viterbi(
    probs: np.ndarray, lengths: np.ndarray, tags: Sequence[str], transition_scores: np.ndarray | None = None
) -> np.ndarray:
    """Best valid IOB2 tag ids for a padded batch ``probs[batch, time, tag]``.

    ``transition_scores[prev, next]`` (optional) is added to each step's log
    probability: a weighted tag-bigram prior learned from the training tags.
    Positions past a sequence's length get tag 0 (``O``).
    """
    batch, time, n_tags = probs.shape
    if batch == 0 or time == 0:
        return np.zeros((batch, time), dtype=np.int32)
    allowed, start_ok = allowed_transitions(tags)
    prior = transition_scores if transition_scores is not None else 0.0
    # [next, prev]: each tag's predecessors lie in contiguous memory, and their best one is searched once
    forbid = np.where(allowed, prior, -np.inf).astype(np.float32).T.copy()
    log_p = np.log(np.clip(probs, 1e-12, 1.0), dtype=np.float32)
    score = log_p[:, 0, :] + np.where(start_ok, 0.0, -np.inf).astype(np.float32)
    backpointers = np.zeros((batch, time, n_tags), dtype=np.int32)
    identity = np.broadcast_to(np.arange(n_tags, dtype=np.int32), (batch, n_tags))
    for t in range(1, time):
        candidate = score[:, None, :] + forbid[None, :, :]
        best_prev = candidate.argmax(axis=2)
        new_score = np.take_along_axis(candidate, best_prev[:, :, None], axis=2)[:, :, 0] + log_p[:, t, :]
        active = (t < lengths)[:, None]
        score = np.where(active, new_score, score)
        backpointers[:, t, :] = np.where(active, best_prev, identity)
    path = np.zeros((batch, time), dtype=np.int32)
    path[:, -1] = score.argmax(axis=1)
    for t in range(time - 1, 0, -1):
        path[:, t - 1] = backpointers[np.arange(batch), t, path[:, t]]
    path[np.arange(time)[None, :] >= lengths[:, None]] = 0
    return path


def tag_marginals(
    probs: np.ndarray, lengths: np.ndarray, tags: Sequence[str], transition_scores: np.ndarray | None = None
) -> np.ndarray:
    """P(tag at position t | sentence) under the model ``constrained_viterbi`` decodes.

    The paths are weighted as there: the tokens' probabilities times
    ``exp(transition_scores)`` per tag pair, IOB2-invalid paths excluded. For a
    network trained with the CRF objective these are the CRF's marginals, so an
    entity's score is a probability of the whole sentence's model, not of one
    token's softmax. Forward-backward in probability space, renormalised at
    every step; positions past a sequence's length are left as they come out.
    """
    batch, time, n_tags = probs.shape
    if batch == 0 or time == 0:
        return np.zeros_like(probs, dtype=np.float32)
    allowed, start_ok = allowed_transitions(tags)
    scores = transition_scores if transition_scores is not None else np.zeros((n_tags, n_tags))
    # One constant off every pair cancels in the renormalisation and keeps exp() finite.
    pair = np.where(allowed, np.exp(scores - np.max(scores)), 0.0).astype(np.float32)
    emit = np.clip(probs, 1e-12, 1.0).astype(np.float32)
    forward = np.empty_like(emit)
    alpha = emit[:, 0] * start_ok
    forward[:, 0] = alpha = alpha / alpha.sum(axis=1, keepdims=True)
    for t in range(1, time):
        step = (alpha @ pair) * emit[:, t]
        alpha = np.where((t < lengths)[:, None], step / step.sum(axis=1, keepdims=True), alpha)
        forward[:, t] = alpha
    marginals = forward
    beta = np.ones((batch, n_tags), dtype=np.float32)
    for t in range(time - 2, -1, -1):
        step = (emit[:, t + 1] * beta) @ pair.T
        beta = np.where((t + 1 < lengths)[:, None], step / step.sum(axis=1, keepdims=True), 1.0)
        marginals[:, t] *= beta
    return marginals / marginals.sum(axis=2, keepdims=True)


@dataclass(frozen=True)
class TagKinds:
    """Per tag id: entity type index (-1 for ``O``) and whether it is an ``I-`` tag."""

    labels: list[str]  # entity types, e.g. ["art", "eve", ...]
    type_of: np.ndarray
    is_inside: np.ndarray

    @classmethod
    def from_tags(cls, tags: Sequence[str]) -> "TagKinds":
        labels = sorted({t[2:] for t in tags if t != "O"})
        type_of = np.array([labels.index(t[2:]) if t != "O" else -1 for t in tags], dtype=np.int32)
        is_inside = np.array([t.startswith("I-") for t in tags], dtype=bool)
        return cls(labels, type_of, is_inside)


@dataclass(frozen=True)
class FlatSpans:
    """Entity spans over a flat token array: token ``start``/``end`` (exclusive), type, mean probability."""

    start: np.ndarray
    end: np.ndarray
    type_id: np.ndarray
    score: np.ndarray


def flat_spans(tag_ids: np.ndarray, tag_probs: np.ndarray, sentence_first: np.ndarray, kinds: TagKinds) -> FlatSpans:
    """Vectorised ``iob2_spans`` over many sentences laid end to end.

    ``sentence_first`` marks each sentence's first token, where no entity may
    continue. Same conventions as ``iob2_spans`` (a stray ``I-`` opens an entity).
    """
    types = kinds.type_of[tag_ids]
    in_entity = types >= 0
    prev_types = np.concatenate(([-1], types[:-1]))
    continues = in_entity & kinds.is_inside[tag_ids] & (types == prev_types) & ~sentence_first
    opens = in_entity & ~continues
    starts = np.flatnonzero(opens)
    if starts.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return FlatSpans(empty, empty, empty.astype(np.int32), np.zeros(0, dtype=np.float32))
    entity_of_token = np.cumsum(opens)[in_entity] - 1
    lengths = np.bincount(entity_of_token, minlength=starts.size)
    prob_sums = np.bincount(entity_of_token, weights=tag_probs[in_entity], minlength=starts.size)
    return FlatSpans(starts, starts + lengths, types[starts], (prob_sums / lengths).astype(np.float32))
