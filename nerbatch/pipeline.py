"""Documents in, entities out: segment -> encode/batch -> predict -> decode spans.

``NerPipeline.annotate`` streams: a background thread reads and segments
documents into chunks of about ``chunk_sentences`` sentences while the main
thread predicts the previous chunk (prediction releases the GIL), so memory is
bounded by a few chunks and output keeps the input order.  The documents'
iterable is therefore read on that thread, up to about three chunks ahead.
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from nerbatch.decode import FlatSpans, TagKinds, flat_spans
from nerbatch.documents import Document, DocumentError
from nerbatch.predictor import TaggedSentence
from nerbatch.records import kept_value, normalise_keep_fields
from nerbatch.text import SentenceTokens, segment, written_otherwise


@dataclass
class AnnotatedChunk:
    """Entities found in a run of consecutive documents, as columns.

    ``doc_index`` points into ``documents``; entities are ordered by document,
    then by position in the text.  ``sentences_per_doc`` and ``tokens_per_doc``
    count each document's sentences and tokens.  ``failed`` holds the input's
    failed documents (``DocumentError``) that came among or after the chunk's
    documents, in input order.
    """

    documents: list[Document]
    doc_index: np.ndarray
    sentence: np.ndarray
    label: list[str]
    text: list[str]
    start: np.ndarray
    end: np.ndarray
    score: np.ndarray
    sentences_per_doc: np.ndarray
    tokens_per_doc: np.ndarray
    failed: list[DocumentError] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.label)

    @property
    def sentences(self) -> int:
        return int(self.sentences_per_doc.sum())

    @property
    def tokens(self) -> int:
        return int(self.tokens_per_doc.sum())

    def documents_slice(self, first: int, stop: int) -> AnnotatedChunk:
        """The chunk of ``documents[first:stop]`` and their entities (``failed`` left empty)."""
        a, b = np.searchsorted(self.doc_index, [first, stop]).tolist()
        return AnnotatedChunk(
            self.documents[first:stop], self.doc_index[a:b] - first, self.sentence[a:b], self.label[a:b],
            self.text[a:b], self.start[a:b], self.end[a:b], self.score[a:b],
            self.sentences_per_doc[first:stop], self.tokens_per_doc[first:stop],
        )

    def entities_per_document(self) -> np.ndarray:
        return np.bincount(self.doc_index, minlength=len(self.documents))

    def record_columns(self, model: str, keep_fields: Sequence[str] = ()) -> dict[str, list]:
        """Columns of entity records (the ``entity_record`` schema)."""
        docs = self.documents
        index = self.doc_index.tolist()
        columns = {
            "doc_id": [docs[i].doc_id for i in index],
            "sentence": self.sentence.tolist(),
            "label": self.label,
            "text": self.text,
            "start": self.start.tolist(),
            "end": self.end.tolist(),
            "score": self.score.tolist(),
            "model": [model] * len(index),
        }
        for name in normalise_keep_fields(keep_fields):  # the readers' documents hold kept values already
            columns[name] = [kept_value(docs[i].fields.get(name)) for i in index]
        return columns

    def records_by_document(self, model: str, keep_fields: Sequence[str] = ()) -> list[list[dict]]:
        """Entity records grouped per document (empty list: no entities)."""
        columns = self.record_columns(model, keep_fields)
        names = list(columns)
        grouped: list[list[dict]] = [[] for _ in self.documents]
        for row, doc in enumerate(self.doc_index.tolist()):
            grouped[doc].append({name: columns[name][row] for name in names})
        return grouped


_DONE = object()
LOWER_CASE_DOCUMENT_TOKENS = 20  # a document without a capital letter is read as lower-cased text from this long
_WORDY = re.compile(r"[^\W_]").search  # a letter or digit
# the format characters a token may start or end with (text.py's word and joiner characters)
_FORMAT_CHARS = "\u00ad\u200c\u200d\u2060"


def _trimmed(spans: FlatSpans, words: list[str], tag_probs: np.ndarray) -> FlatSpans:
    """Spans without leading or trailing tokens that hold no letter or digit (tokens, not characters:
    "U.S." keeps its period).

    An index wants "Jerusalem", not "> Jerusalem" (an e-mail's quote mark) or "| Jerusalem" (a
    table's bar); a span of such tokens only is dropped. A trimmed span's score is the mean over
    the tokens it keeps.
    """
    def wordy(token: int) -> bool:
        return _WORDY(words[token]) is not None

    starts, ends, scores = spans.start.tolist(), spans.end.tolist(), spans.score.copy()
    keep = np.ones(len(starts), dtype=bool)
    for i, (a, b) in enumerate(zip(starts, ends)):
        if wordy(a) and wordy(b - 1):
            continue
        while a < b and not wordy(a):
            a += 1
        while b > a and not wordy(b - 1):
            b -= 1
        starts[i], ends[i], keep[i] = a, b, a < b
        if a < b:
            scores[i] = tag_probs[a:b].mean()
    return FlatSpans(np.asarray(starts, np.int64)[keep], np.asarray(ends, np.int64)[keep], spans.type_id[keep],
                     scores[keep])


def _strip_invisible_edges(texts: list[str], start: np.ndarray, end: np.ndarray) -> None:
    """Moves entities' edges past invisible format characters their first or last token holds
    ("Ber\u00adlin\u00ad": a soft hyphen; a zero-width joiner or non-joiner), written as they are or
    otherwise ("Ber&shy;lin&shy;"): an index matches the name people see. In place."""
    for i, text in enumerate(texts):
        if text[0] not in _FORMAT_CHARS and text[-1] not in _FORMAT_CHARS and text.isascii() and "&" not in text:
            continue
        invisible = {k: 1 for k, char in enumerate(text) if char in _FORMAT_CHARS}  # start -> length
        invisible.update((a, b - a) for a, b, char in written_otherwise(text) if char in _FORMAT_CHARS)
        if not invisible:
            continue
        lead = 0
        while lead in invisible:
            lead += invisible[lead]
        ends = {a + n: n for a, n in invisible.items()}  # end -> length
        trail = len(text)
        while trail > lead and trail in ends:
            trail -= ends[trail]
        if lead or trail < len(text):
            texts[i] = text[lead:trail]
            start[i] += lead
            end[i] = start[i] + trail - lead


def _after_item_mark(tagged: TaggedSentence, marks: int, outside: int) -> TaggedSentence:
    """A list item's tags with its number or bullet in front, tagged O for certain."""
    return TaggedSentence(np.concatenate([np.full(marks, outside, tagged.tag_ids.dtype), tagged.tag_ids]),
                          np.concatenate([np.ones(marks, tagged.tag_probs.dtype), tagged.tag_probs]))


def _until(stop: threading.Event, items: Iterable):
    """``items`` until ``stop`` is set: once the caller has left, nothing more is taken from its iterable."""
    iterator = iter(items)
    while not stop.is_set():
        try:
            yield next(iterator)
        except StopIteration:
            return


def _segmented(doc: Document) -> list[SentenceTokens]:
    """The document's sentences; a clear TypeError for what is no Document, as a plain str."""
    if not isinstance(doc, Document):
        raise TypeError(f"NerPipeline annotates nerbatch.documents.Document items, not {type(doc).__name__} "
                        f"({doc!r:.60}); wrap a text as Document(doc_id, text, {{}}, source, position)")
    if not isinstance(doc.text, str):
        raise TypeError(f"document {doc.doc_id!r} ({doc.source}:{doc.position}): text must be a str, "
                        f"not {type(doc.text).__name__}")
    if not isinstance(doc.doc_id, str) or not doc.doc_id:  # every record carries it (entity_record: non-empty string)
        raise TypeError(f"document at {doc.source}:{doc.position}: doc_id must be a non-empty str, not {doc.doc_id!r:.60}")
    if not isinstance(doc.fields, dict):
        raise TypeError(f"document {doc.doc_id!r} ({doc.source}:{doc.position}): fields must be a dict, "
                        f"not {type(doc.fields).__name__}")
    return segment(doc.text)


class NerPipeline:
    """Annotates documents with a loaded bundle."""

    def __init__(self, bundle, *, batch_size: int = 256, chunk_sentences: int = 2048) -> None:
        from nerbatch.bundle import Bundle

        if not isinstance(bundle, Bundle):
            raise TypeError(f"NerPipeline takes a loaded bundle, not {type(bundle).__name__} ({bundle!r:.60}); "
                            "use NerPipeline(nerbatch.bundle.load_bundle(path))")
        for name, value in (("batch_size", batch_size), ("chunk_sentences", chunk_sentences)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.bundle = bundle
        self.tagger = bundle.tagger(batch_size=batch_size)
        self.kinds = TagKinds.from_tags(bundle.tags)
        self._outside = list(bundle.tags).index("O")
        self.chunk_sentences = chunk_sentences

    @property
    def model_name(self) -> str:
        return self.bundle.name

    def annotate(self, documents: Iterable[Document | DocumentError]) -> Iterator[AnnotatedChunk]:
        """Annotated chunks in input order; every document appears in exactly one chunk.

        A ``DocumentError`` among the documents is passed through in its chunk's ``failed`` and counts
        towards the chunk's size, so a run of failures is handed on as it comes, never held back.
        ``documents`` is read on a background thread, a few chunks ahead: an iterable bound to its thread
        (a sqlite3 cursor) needs reading into a list first, and the documents read ahead of a chunk the
        caller never takes are not annotated.  When ``documents`` raises (or holds what is no
        ``Document``), the documents before it come in a last chunk, then the error is raised.
        """
        chunks: queue.Queue = queue.Queue(maxsize=2)
        stop = threading.Event()

        def hand_over(item) -> bool:
            """Queue ``item`` for the consumer; False once the consumer has stopped iterating."""
            while not stop.is_set():
                try:
                    chunks.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                for docs, segmented, failed in self._segmented_chunks(documents, stop):
                    if not hand_over((docs, segmented, failed)):
                        return
                hand_over(_DONE)
            except BaseException as exc:  # handed to the consumer, re-raised there
                hand_over(exc)

        worker = threading.Thread(target=produce, name="nerbatch-segment", daemon=True)
        worker.start()
        try:
            while True:
                item = chunks.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                docs, segmented, failed = item
                chunk = self._annotate_chunk(docs, segmented)
                chunk.failed = failed
                yield chunk
        finally:
            stop.set()
            worker.join(timeout=5)

    def annotate_all(self, documents: Iterable[Document]) -> AnnotatedChunk:
        """One chunk for a small, in-memory set of documents."""
        docs = list(documents)
        return self._annotate_chunk(docs, [_segmented(d) for d in docs])

    def _segmented_chunks(self, documents: Iterable[Document | DocumentError], stop: threading.Event):
        docs: list[Document] = []
        segmented: list[list[SentenceTokens]] = []
        failed: list[DocumentError] = []
        pending = 0
        try:
            for doc in _until(stop, documents):
                if isinstance(doc, DocumentError):
                    failed.append(doc)
                else:
                    sentences = _segmented(doc)
                    docs.append(doc)
                    segmented.append(sentences)
                    pending += len(sentences)
                # Documents and failures count too, so a stream of empty or failed documents still comes
                # in bounded chunks.
                if pending >= self.chunk_sentences or len(docs) + len(failed) >= self.chunk_sentences:
                    yield docs, segmented, failed
                    docs, segmented, failed, pending = [], [], [], 0
        except Exception:  # the documents read before the failure are not lost with it
            if docs or failed:
                yield docs, segmented, failed
            raise
        if docs or failed:
            yield docs, segmented, failed

    def _model_words(self, docs: list[Document], segmented: list[list[SentenceTokens]]) -> list[Sequence[str]]:
        """Each sentence's words as the model reads them: a list item without its number or bullet (the
        corpus's sentences hold none); a document wholly in lower case with its names capitalised."""
        truecaser = self.tagger.truecaser
        words = []
        for doc, doc_sentences in zip(docs, segmented):
            # a short one is as likely a chat line, a caption or code as a lower-cased text
            lower_case = truecaser is not None and sum(map(len, doc_sentences)) >= LOWER_CASE_DOCUMENT_TOKENS and (
                doc.text.islower() or  # or as read: "caf\u00c3\u00a9" is "caf\u00e9"
                not doc.text.isascii() and "".join(w for s in doc_sentences for w in s.words).islower())
            for s in doc_sentences:
                sentence = s.words[s.item_mark:] if s.item_mark else s.words
                words.append(truecaser.lower_case_sentence(sentence) if lower_case else sentence)
        return words

    def _annotate_chunk(self, docs: list[Document], segmented: list[list[SentenceTokens]]) -> AnnotatedChunk:
        sentences = [s for doc_sentences in segmented for s in doc_sentences]
        tagged = self.tagger.tag(self._model_words(docs, segmented))
        tagged = [_after_item_mark(t, s.item_mark, self._outside) if s.item_mark else t
                  for s, t in zip(sentences, tagged)]
        lengths = np.fromiter((len(s) for s in sentences), np.int64, len(sentences))
        sentences_per_doc = np.fromiter((len(d) for d in segmented), np.int64, len(segmented))
        doc_of_sentence = np.repeat(np.arange(len(docs)), sentences_per_doc)
        tokens_per_doc = np.bincount(doc_of_sentence, weights=lengths, minlength=len(docs)).astype(np.int64)
        n_tokens = int(lengths.sum())
        if n_tokens == 0:
            empty = np.zeros(0, dtype=np.int64)
            return AnnotatedChunk(docs, empty, empty, [], [], empty, empty, np.zeros(0, np.float32),
                                  sentences_per_doc, tokens_per_doc)
        tag_ids = np.concatenate([t.tag_ids for t in tagged])
        tag_probs = np.concatenate([t.tag_probs for t in tagged])
        sentence_offsets = np.cumsum(lengths) - lengths  # of each sentence's first token
        first = np.zeros(n_tokens, dtype=bool)
        first[sentence_offsets] = True
        spans = _trimmed(flat_spans(tag_ids, tag_probs, first, self.kinds), [w for s in sentences for w in s.words],
                         tag_probs)

        char_starts = np.fromiter((o for s in sentences for o in s.starts), np.int64, n_tokens)
        char_ends = np.fromiter((o for s in sentences for o in s.ends), np.int64, n_tokens)
        sentence_in_doc = np.arange(len(sentences)) - np.repeat(np.cumsum(sentences_per_doc) - sentences_per_doc,
                                                                 sentences_per_doc)
        sentence_of_token = np.repeat(np.arange(len(sentences)), lengths)

        entity_sentence = sentence_of_token[spans.start]
        doc_index = doc_of_sentence[entity_sentence]
        start = char_starts[spans.start]
        end = char_ends[spans.end - 1]
        texts = [docs[d].text[a:b] for d, a, b in zip(doc_index.tolist(), start.tolist(), end.tolist())]
        _strip_invisible_edges(texts, start, end)
        labels = [self.kinds.labels[t] for t in spans.type_id.tolist()]
        return AnnotatedChunk(
            docs, doc_index, sentence_in_doc[entity_sentence], labels, texts, start, end, spans.score,
            sentences_per_doc, tokens_per_doc,
        )
