"""Agreement of :func:`nerbatch.text.segment` with the GMB training tokenisation.

The GMB corpus only ships tokens, so each sentence is first *detokenised* into
plausible raw news text (normal prose spacing: no space before ``. , ; : ! ? %
) 's n't``, none after ``( $``, paired quotes hugging their content, plural
possessive ``'`` attached, ``HIV/AIDS`` joined, spaced dashes kept spaced).
``segment()`` is then run on that text and its tokens are compared with the
gold tokens:

* exact-sentence agreement: fraction of sentences whose token sequence is
  reproduced exactly (over all sentences returned by ``segment()``);
* token-boundary precision / recall / F1 over (start, end) character spans;
* fraction of GMB sentences that ``segment()`` keeps as ONE sentence;
* document-level sentence splitting: consecutive GMB sentences are joined with
  a single space into pseudo-documents of ``--doc-size`` sentences, and the
  boundaries found by ``segment()`` are scored against the gold ones;
* throughput of ``segment()`` in tokens/s (one core, whole corpus).

Usage::

    python benchmarks/tokenizer_agreement.py [--data PATH_TO_ner_dataset.csv.zip]
        [--limit N] [--doc-size N] [--show-errors K] [--compare]

``--compare`` also scores NLTK (``NLTKWordTokenizer.span_tokenize`` and
``TreebankWordTokenizer.span_tokenize``, with ``PunktSentenceTokenizer()``
untrained) and syntok when they are importable; they are not dependencies.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

from nerbatch.text import segment

DEFAULT_PATH = Path(__file__).resolve().parent.parent / ".." / "shared" / "data" / "ner_dataset.csv.zip"

# --------------------------------------------------------------------------- corpus


def _fix_cp1252(word: str) -> str:
    """The CSV is read as latin1, but a few words carry cp1252 bytes (``\\x92s``
    is ``’s``).  Real input text would contain the Unicode characters."""
    if any("\x80" <= ch <= "\x9f" for ch in word):
        try:
            return word.encode("latin1").decode("cp1252")
        except UnicodeError:
            return word
    return word


def load_sentences(path: str | Path) -> list[list[str]]:
    df = pd.read_csv(path, encoding="latin1", keep_default_na=False, usecols=["Sentence #", "Word"])
    sid = df["Sentence #"].replace("", None).ffill()
    words = [_fix_cp1252(w) for w in df["Word"].tolist()]
    sentences: list[list[str]] = []
    prev = object()
    for s, w in zip(sid.tolist(), words):
        if s != prev:
            sentences.append([])
            prev = s
        if w.strip():
            sentences[-1].append(w)
    return [s for s in sentences if s]


# --------------------------------------------------------------------------- detokeniser

_CLITICS = {"'s", "'re", "'ve", "'ll", "'d", "'m", "n't", "'S", "'RE", "'VE", "'LL", "'D", "'M", "N'T"}
_CLITICS |= {c.replace("'", "\u2019") for c in _CLITICS}
_NO_SPACE_BEFORE = {".", ",", ";", ":", "!", "?", "%", ")", "]", "}", "...", "..", "\u2026", "\u201d", "\u2019"}
_NO_SPACE_AFTER = {"(", "[", "{", "$", "#", "\u201c", "\u2018", "\u00a3", "\u20ac"}
_ALNUM_END = re.compile(r"\w$")
_ALNUM_START = re.compile(r"^\w")


def detokenize(words: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """Join gold tokens into prose; return the text and each token's span."""
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    pos = 0
    glue_next = True  # no space before the first token
    dq_open = False
    sq_open = False
    n = len(words)
    for i, w in enumerate(words):
        prev = words[i - 1] if i else ""
        nxt = words[i + 1] if i + 1 < n else ""
        space = not glue_next
        glue_after = False
        if w == '"':
            closing = dq_open or (prev in {".", ",", "?", "!", "...", "\u2026", ";", ":"} and (not nxt or not _ALNUM_START.match(nxt)))
            if closing and i:
                space = False
                dq_open = False
            else:
                dq_open = True
                glue_after = True
        elif w == "'":
            if sq_open and i:
                space = False
                sq_open = False
            elif i and prev[-1:] in ("s", "S", "z") and _ALNUM_END.search(prev):
                space = False  # plural possessive: Workers'
            elif i and prev in {".", ",", "?", "!"}:
                space = False
            else:
                sq_open = True
                glue_after = True
        elif w in _CLITICS or w in _NO_SPACE_BEFORE:
            space = False
        elif w == "/" and _ALNUM_END.search(prev) and _ALNUM_START.match(nxt):
            space = False
            glue_after = True
        if w in _NO_SPACE_AFTER:
            glue_after = True
        if i and space:
            parts.append(" ")
            pos += 1
        spans.append((pos, pos + len(w)))
        parts.append(w)
        pos += len(w)
        glue_next = glue_after
    return "".join(parts), spans


# --------------------------------------------------------------------------- scoring

Segmenter = Callable[[str], list[list[tuple[int, int]]]]


def _ours(text: str) -> list[list[tuple[int, int]]]:
    return [list(zip(s.starts, s.ends)) for s in segment(text)]


def evaluate(name: str, seg: Segmenter, texts: list[str], gold: list[list[tuple[int, int]]],
             words: list[list[str]], doc_size: int, show_errors: int) -> dict[str, float]:
    exact = one = tp = n_pred = n_gold = 0
    errors: list[str] = []
    for text, g, ws in zip(texts, gold, words):
        sents = seg(text)
        pred = [sp for s in sents for sp in s]
        if len(sents) == 1:
            one += 1
        if pred == g:
            exact += 1
        elif len(errors) < show_errors * 50:
            errors.append(
                "  gold: " + " | ".join(ws) + "\n  pred: " + " | ".join(text[a:b] for a, b in pred)
            )
        gs = set(g)
        ps = set(pred)
        tp += len(gs & ps)
        n_pred += len(ps)
        n_gold += len(gs)
    n = len(texts)
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0

    # document-level splitting
    btp = bpred = bgold = 0
    for k in range(0, n, doc_size):
        chunk = texts[k:k + doc_size]
        doc = " ".join(chunk)
        gold_b = set()
        off = 0
        for t in chunk[:-1]:
            off += len(t)
            gold_b.add(off)  # boundary = end of sentence text
            off += 1
        sents = seg(doc)
        pred_b = {s[-1][1] for s in sents[:-1] if s}
        btp += len(gold_b & pred_b)
        bpred += len(pred_b)
        bgold += len(gold_b)
    bp = btp / bpred if bpred else 0.0
    br = btp / bgold if bgold else 0.0
    bf = 2 * bp * br / (bp + br) if bp + br else 0.0

    # throughput over the whole corpus text, one document per doc_size sentences
    docs = [" ".join(texts[k:k + doc_size]) for k in range(0, n, doc_size)]
    t0 = time.perf_counter()
    ntok = 0
    for d in docs:
        for s in seg(d):
            ntok += len(s)
    dt = time.perf_counter() - t0
    res = dict(exact=exact / n, p=p, r=r, f1=f1, one=one / n, bp=bp, br=br, bf=bf, tps=ntok / dt,
               ntok=ntok, secs=dt)
    print(f"== {name}")
    print(f"  sentences                        {n}")
    print(f"  exact-sentence token agreement   {res['exact']:.4%}")
    print(f"  token boundary P / R / F1        {p:.4%} / {r:.4%} / {f1:.4%}")
    print(f"  sentences kept as ONE sentence   {res['one']:.4%}")
    print(f"  doc-level boundary P / R / F1    {bp:.4%} / {br:.4%} / {bf:.4%}  (docs of {doc_size} sentences)")
    print(f"  throughput                       {res['tps']:,.0f} tokens/s  ({ntok} tokens in {dt:.2f} s)")
    if show_errors:
        rnd = random.Random(0)
        for e in rnd.sample(errors, min(show_errors, len(errors))):
            print(e)
    sys.stdout.flush()
    return res


def _library_segmenters() -> Iterable[tuple[str, Segmenter]]:
    try:
        from nltk.tokenize import NLTKWordTokenizer, TreebankWordTokenizer
        from nltk.tokenize.punkt import PunktSentenceTokenizer
    except ImportError:
        print("(nltk not importable: skipped)")
    else:
        punkt = PunktSentenceTokenizer()
        for tok in (NLTKWordTokenizer(), TreebankWordTokenizer()):
            def run(text: str, tok=tok) -> list[list[tuple[int, int]]]:
                out = []
                for a, b in punkt.span_tokenize(text):
                    try:
                        out.append([(a + s, a + e) for s, e in tok.span_tokenize(text[a:b])])
                    except ValueError:  # align_tokens fails on some quote forms
                        out.append([])
                return out
            yield f"nltk {type(tok).__name__} + untrained Punkt", run
    try:
        from syntok import segmenter as syn
    except ImportError:
        print("(syntok not importable: skipped)")
    else:
        def run_syntok(text: str) -> list[list[tuple[int, int]]]:
            return [[(t.offset, t.offset + len(t.value)) for t in s]
                    for para in syn.analyze(text) for s in para]
        yield "syntok", run_syntok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DEFAULT_PATH), help="the GMB corpus (.csv or .csv.zip)")
    ap.add_argument("--limit", type=int, default=0, help="only the first N sentences")
    ap.add_argument("--doc-size", type=int, default=20)
    ap.add_argument("--show-errors", type=int, default=0, help="print K random disagreements")
    ap.add_argument("--compare", action="store_true", help="also score NLTK and syntok if installed")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    try:
        sentences = load_sentences(args.data)
    except (OSError, ValueError) as exc:  # missing, unreadable or not the corpus: one line, as elsewhere
        ap.exit(2, f"{ap.prog}: error: {args.data}: cannot read the corpus ({exc})\n")
    if args.limit:
        sentences = sentences[: args.limit]
    texts, gold = [], []
    for ws in sentences:
        t, sp = detokenize(ws)
        texts.append(t)
        gold.append(sp)
    print(f"loaded {len(sentences)} sentences in {time.perf_counter() - t0:.1f} s from {args.data}")
    print("example detokenised:", texts[min(1, len(texts) - 1)][:200])

    evaluate("nerbatch.text.segment", _ours, texts, gold, sentences, args.doc_size, args.show_errors)
    if args.compare:
        for name, fn in _library_segmenters():
            evaluate(name, fn, texts, gold, sentences, args.doc_size, args.show_errors)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
