"""Sentence splitting of hard-wrapped text: does a line break become a false sentence end?

News reaches nerbatch wrapped at fixed widths (wire copy, e-mail, text extracted from pages and
PDFs), with headlines above it. The GMB corpus's sentences, detokenised into prose
(``tokenizer_agreement.detokenize``), are laid out three ways and segmented as typed and as
wrapped with :mod:`textwrap` at each ``--widths``:

* **breaks inside entities**: consecutive runs of 5 sentences form one paragraph; a sentence
  start found inside a gold entity (an ``I-`` token) is a name or date cut in two. The true
  breaks found are printed beside it;
* **documents changed by wrapping**: 6 paragraphs of 1 or 2 sentences each, separated by blank
  lines, as wire copy is laid out; a document counts when its sentences differ between the
  unwrapped and the wrapped text;
* **headlines kept**: a sentence in Title Case without its period (a headline) above 3 wrapped
  sentences; counts the headlines that end their own sentence.

``--compare DIR`` scores another checkout's ``nerbatch/text.py`` beside this one, so a change to
the splitter can be measured against its previous version in one run.

    python benchmarks/wrapped_text.py [--data ner_dataset.csv.zip] [--widths 40 60 72]
        [--compare /path/to/older/checkout]
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from tokenizer_agreement import DEFAULT_PATH, detokenize  # noqa: E402

from nerbatch.corpus import read_corpus  # noqa: E402
from nerbatch.errors import NerbatchError  # noqa: E402


def _load_text_module(checkout: Path, name: str):
    path = checkout / "nerbatch" / "text.py"
    if not path.is_file():
        raise NerbatchError(f"{checkout}: no nerbatch/text.py to compare with")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _wrap(text: str, width: int) -> str:
    return textwrap.fill(text, width, break_long_words=False, break_on_hyphens=False)


def breaks_inside_entities(segmenters: dict, sentences: list, width: int) -> dict:
    """Per segmenter: (false breaks inside a gold entity, true breaks found), and the true breaks."""
    counts = {name: [0, 0] for name in segmenters}
    gold_breaks = 0
    for k in range(0, len(sentences) - 4, 5):
        text, bounds, tag_at = "", set(), {}
        for prose, spans, tags in sentences[k:k + 5]:
            if text:
                text += " "
                bounds.add(len(text))
            offset = len(text)
            text += prose
            tag_at.update((offset + start, tag) for (start, _), tag in zip(spans, tags))
        gold_breaks += len(bounds)
        wrapped = _wrap(text, width)  # one space becomes one line break: offsets stay
        for name, segment in segmenters.items():
            found = {s.starts[0] for s in segment(wrapped)[1:]}
            counts[name][0] += sum(1 for start in found - bounds if tag_at.get(start, "O").startswith("I-"))
            counts[name][1] += len(found & bounds)
    return {"gold_breaks": gold_breaks, **{name: tuple(c) for name, c in counts.items()}}


def documents_changed(segmenters: dict, documents: list[list[str]], width: int) -> dict:
    changed = dict.fromkeys(segmenters, 0)
    for paragraphs in documents:
        plain = "\n\n".join(paragraphs)
        wrapped = "\n\n".join(_wrap(p, width) for p in paragraphs)
        for name, segment in segmenters.items():
            changed[name] += [s.words for s in segment(plain)] != [s.words for s in segment(wrapped)]
    return changed


def headlines_kept(segmenters: dict, texts: list[str], width: int, n: int, seed: int) -> dict:
    rng = random.Random(seed)
    headlines = [t.rstrip(".").title() for t in texts if 25 <= len(t) <= 68 and t.endswith(".")]
    kept = dict.fromkeys(segmenters, 0)
    for _ in range(n):
        headline = rng.choice(headlines)
        document = headline + "\n" + _wrap(" ".join(rng.choice(texts) for _ in range(3)), width)
        for name, segment in segmenters.items():
            kept[name] += len(headline) + 1 in {s.starts[0] for s in segment(document)}
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_PATH), help="ner_dataset.csv or its .zip")
    parser.add_argument("--widths", type=int, nargs="+", default=[40, 60, 72], help="wrap widths")
    parser.add_argument("--documents", type=int, default=12000,
                        help="corpus sentences laid out as documents of short paragraphs")
    parser.add_argument("--headlines", type=int, default=2000, help="headline documents per width")
    parser.add_argument("--compare", type=Path, help="another checkout whose nerbatch/text.py is scored too")
    args = parser.parse_args(argv)
    try:
        if any(w < 10 for w in args.widths) or args.documents < 12 or args.headlines < 1:
            raise NerbatchError("--widths must be at least 10, --documents at least 12, --headlines at least 1")
        segmenters = {"this": _load_text_module(Path(__file__).resolve().parent.parent, "text_this").segment}
        if args.compare:
            segmenters["compared"] = _load_text_module(args.compare, "text_compared").segment
        corpus = read_corpus(args.data)
    except NerbatchError as exc:
        print(f"wrapped_text.py: error: {exc}", file=sys.stderr)
        return 2

    sentences = [(*detokenize(words), tags) for words, tags in zip(corpus.words, corpus.tags)]
    texts = [prose for prose, _, _ in sentences]
    rng = random.Random(1)
    documents, k = [], 0
    while k < min(args.documents, len(texts)) - 12:
        paragraphs = []
        for _ in range(6):
            size = rng.choice((1, 2))
            paragraphs.append(" ".join(texts[k:k + size]))
            k += size
        documents.append(paragraphs)

    names = list(segmenters)
    print(f"{len(sentences)} corpus sentences; segmenters: {', '.join(names)}"
          + (f" (compared: {args.compare})" if args.compare else ""))
    for width in args.widths:
        inside = breaks_inside_entities(segmenters, sentences, width)
        changed = documents_changed(segmenters, documents, width)
        kept = headlines_kept(segmenters, texts, width, args.headlines, seed=width)
        print(f"width {width}:")
        print("  5-sentence paragraphs: false breaks inside a gold entity "
              + ", ".join(f"{n} {inside[n][0]}" for n in names)
              + f"; true breaks found of {inside['gold_breaks']}: "
              + ", ".join(f"{n} {inside[n][1]}" for n in names))
        print(f"  documents of short paragraphs whose sentences change when wrapped, of {len(documents)}: "
              + ", ".join(f"{n} {changed[n]}" for n in names))
        print(f"  title-cased headlines that end their own sentence, of {args.headlines}: "
              + ", ".join(f"{n} {kept[n]}" for n in names))
    return 0


if __name__ == "__main__":
    sys.exit(main())
