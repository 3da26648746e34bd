"""Cutting long sentences into fixed-size windows and merging them back.

Policy: a sentence of at most ``max_len`` tokens is one window. A longer one
is covered by windows of ``max_len`` tokens that overlap by ``overlap``
tokens (the last window is aligned to the sentence end). Inside an overlap the
tokens before its midpoint take their prediction from the left window and the
rest from the right one, so every token is predicted with at least
``overlap // 2`` tokens of context on the side of the cut, and an entity that
straddles a cut is seen whole by at least one window when it fits in the
overlap. Nothing is ever truncated.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_OVERLAP = 16


@dataclass(frozen=True, slots=True)
class Window:
    start: int  # first token of the window in the sentence
    end: int  # end exclusive
    own_start: int  # tokens [own_start, own_end) take this window's prediction
    own_end: int


def plan_windows(length: int, max_len: int, overlap: int | None = None) -> list[Window]:
    """Windows covering a sentence; ``overlap`` defaults to ``DEFAULT_OVERLAP``, at most half a window."""
    if max_len < 2:
        raise ValueError("max_len must be at least 2")
    if overlap is None:
        overlap = min(DEFAULT_OVERLAP, max_len // 2)
    if not 0 <= overlap < max_len:
        raise ValueError("overlap must be in [0, max_len)")
    if length <= max_len:
        return [Window(0, length, 0, length)]
    stride = max_len - overlap
    starts = list(range(0, length - max_len, stride)) + [length - max_len]
    # Ownership changes hands at the midpoint of each overlap.
    cuts = [0] + [(nxt + cur + max_len) // 2 for cur, nxt in zip(starts, starts[1:])] + [length]
    return [Window(s, s + max_len, cuts[k], cuts[k + 1]) for k, s in enumerate(starts)]
