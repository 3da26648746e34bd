"""Entity F1 on raw prose against `nerbatch evaluate`'s figure on the corpus's own tokens.

`nerbatch evaluate` tags the test split's gold tokens; `nerbatch run` and the Kafka worker get prose
and split and tokenize it themselves. This joins the protocol's test sentences, detokenised, into
documents of ``--doc-size`` consecutive sentences, runs them through ``NerPipeline.annotate`` (the
path of `run`), and scores its entity records by exact character span and type against the gold
entities, beside the same model tagging the gold tokens (scored the same way: by character span).

``--form`` writes the prose as headlines and wires do: each document's first sentence in capitals
(``capitals-headline``) or in Title Case (``title-headline``, every word capitalised), or whole
documents in capitals (``capitals``) or in lower case (``lowercase``, as speech transcripts and chat
are); or as scraped HTML text (``html-references``: ``&``, ``'``
and ``"`` as ``&amp;``, ``&#39;`` and ``&quot;``, every tenth space as ``&nbsp;``); or with
typographic apostrophes and quotes (``typographic``: ``\u2019``, ``\u201c``, ``\u201d``), as such text
reads when its UTF-8 is read as cp1252 (``mojibake``: ``\u00e2\u20ac\u2122``); the gold spans move with
the text. The gold tokens are scored as the corpus writes them.

    python benchmarks/raw_text_f1.py --data ../shared/data/ner_dataset.csv.zip [--model DIR] [--form FORM]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from tokenizer_agreement import _fix_cp1252, detokenize  # noqa: E402

from nerbatch.bundle import load_bundle  # noqa: E402
from nerbatch.corpus import read_corpus  # noqa: E402
from nerbatch.decode import iob2_spans  # noqa: E402
from nerbatch.documents import Document  # noqa: E402
from nerbatch.errors import NerbatchError  # noqa: E402
from nerbatch.evaluate import test_part  # noqa: E402
from nerbatch.metrics import format_table  # noqa: E402
from nerbatch.pipeline import NerPipeline  # noqa: E402


def span_scores(gold: set, predicted: set, types: list[str]) -> dict:
    """Micro, per-type and macro (over types with gold entities) P/R/F1 of (doc, label, start, end) sets."""

    def row(g: set, p: set) -> dict:
        hits = len(g & p)
        precision = hits / len(p) if p else 0.0
        recall = hits / len(g) if g else 0.0
        f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
        return {"precision": precision, "recall": recall, "f1": f1, "support": len(g)}

    per_type = {t: row({e for e in gold if e[1] == t}, {e for e in predicted if e[1] == t}) for t in types}
    supported = [r["f1"] for r in per_type.values() if r["support"]]
    return {"per_type": per_type, "micro": row(gold, predicted),
            "macro_f1": sum(supported) / len(supported) if supported else 0.0}


def _capitals(text: str) -> str:
    # letter for letter: a letter whose capital is two ("\u00df" -> "SS") stays, so the gold offsets hold
    return "".join(c.upper() if len(c.upper()) == 1 else c for c in text)


def _lowercase(text: str) -> str:
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text)


def _title_case(text: str) -> str:
    return " ".join(_capitals(word[:1]) + word[1:] for word in text.split(" "))


_ESCAPES = {"&": "&amp;", "'": "&#39;", '"': "&quot;"}


def _rewritten(text: str, rewrite) -> tuple[str, list[int]]:
    """Each character rewritten, and where each offset of ``text`` (and its end) is in the result."""
    pieces, where, length = [], [], 0
    for i, ch in enumerate(text):
        piece = rewrite(i, ch)
        where.append(length)
        pieces.append(piece)
        length += len(piece)
    return "".join(pieces), [*where, length]


def _html_references(text: str) -> tuple[str, list[int]]:
    spaces = [i for i, ch in enumerate(text) if ch == " "]
    nbsp = set(spaces[9::10])
    return _rewritten(text, lambda i, ch: "&nbsp;" if i in nbsp else _ESCAPES.get(ch, ch))


def _typographic(text: str) -> tuple[str, list[int]]:
    quotes = [i for i, ch in enumerate(text) if ch == '"']
    opening = set(quotes[::2])
    return _rewritten(text, lambda i, ch: "\u2019" if ch == "'" else
                      ("\u201c" if i in opening else "\u201d") if ch == '"' else ch)


def _cp1252_reading(ch: str) -> str:
    # the five bytes cp1252 leaves undefined read as Latin-1 (their C1 controls), as browsers read them
    return "".join(bytes([b]).decode("cp1252", errors="ignore") or chr(b) for b in ch.encode("utf-8"))


def _mojibake(text: str) -> tuple[str, list[int]]:
    typographic, where = _typographic(text)
    read, where_read = _rewritten(typographic, lambda i, ch: ch if ch.isascii() else _cp1252_reading(ch))
    return read, [where_read[w] for w in where]


# each form: the sentences it rewrites ("first" of a document, or "all"), and how
FORMS = {"prose": None, "capitals-headline": ("first", _capitals), "title-headline": ("first", _title_case),
         "capitals": ("all", _capitals), "lowercase": ("all", _lowercase), "html-references": ("all", _html_references),
         "typographic": ("all", _typographic), "mojibake": ("all", _mojibake)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/ner_dataset.csv.zip")
    parser.add_argument("--model", default=None, help="bundle directory (default: the shipped model)")
    parser.add_argument("--doc-size", type=int, default=5, help="test sentences per document")
    parser.add_argument("--form", choices=FORMS, default="prose", help="how the documents are written")
    args = parser.parse_args()
    if args.doc_size < 1:
        parser.error("--doc-size must be at least 1")

    test = test_part(read_corpus(args.data))
    pipeline = NerPipeline(load_bundle(args.model))
    docs, gold, word_spans, doc_of = [], set(), [], []
    for first in range(0, len(test), args.doc_size):
        doc_id, parts, offset = f"doc-{len(docs)}", [], 0
        for i in range(first, min(first + args.doc_size, len(test))):
            text, spans = detokenize([_fix_cp1252(w) for w in test.words[i]])
            if FORMS[args.form] and (FORMS[args.form][0] == "all" or i == first):
                text = FORMS[args.form][1](text)
                if isinstance(text, tuple):  # lengths changed: the spans move with the text
                    text, where = text
                    spans = [(where[start], where[end]) for start, end in spans]
            offset += 1 if parts else 0  # the space that joins it to the sentence before
            word_spans.append([(start + offset, end + offset) for start, end in spans])
            doc_of.append(doc_id)
            parts.append(text)
            offset += len(text)
        docs.append(Document(doc_id, " ".join(parts), {}, "<test split>", len(docs)))

    def entities(sentence_tags: list[list[str]]) -> set:
        return {(doc_of[i], s.label, word_spans[i][s.start][0], word_spans[i][s.end - 1][1])
                for i, tags in enumerate(sentence_tags) for s in iob2_spans(tags)}

    gold = entities(test.tags)
    on_tokens = entities(pipeline.tagger.tag_strings(test.words))
    on_text = {(r["doc_id"], r["label"], r["start"], r["end"])
               for chunk in pipeline.annotate(docs)
               for records in chunk.records_by_document(pipeline.model_name) for r in records}
    types = sorted({e[1] for e in gold})
    token_scores, text_scores = span_scores(gold, on_tokens, types), span_scores(gold, on_text, types)
    print(f"{len(test)} test sentences in {len(docs)} documents of {args.doc_size}, {len(gold)} gold entities; "
          f"model {pipeline.model_name}")
    print("\nthe corpus's tokens (as nerbatch evaluate):\n" + format_table(token_scores))
    print(f"\nraw prose, form {args.form} (as nerbatch run):\n" + format_table(text_scores))
    gap = token_scores["micro"]["f1"] - text_scores["micro"]["f1"]
    print(f"\nmicro F1: tokens {token_scores['micro']['f1']:.4f}, raw prose {text_scores['micro']['f1']:.4f}, "
          f"lost {gap:.4f}; entities only the token path found: {len((gold & on_tokens) - on_text)}, "
          f"only raw prose: {len((gold & on_text) - on_tokens)}")


if __name__ == "__main__":
    try:
        main()
    except NerbatchError as exc:  # a missing corpus or bundle: one line, as from the CLI
        print(f"{Path(sys.argv[0]).name}: error: {exc}", file=sys.stderr)
        sys.exit(2)
