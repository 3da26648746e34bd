"""Reader for the GMB-style annotated corpus (``Sentence #, Word, POS, Tag``).

The sentence id appears only on a sentence's first row; the file is latin1.
Words such as ``None``, ``NA`` or ``null`` are real words, so pandas' missing
value detection is switched off.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import io
import lzma
import os
import re
import unicodedata
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from nerbatch.errors import CorpusError

REQUIRED_COLUMNS = ("Sentence #", "Word", "Tag")
_TAG_PATTERN = re.compile(r"O|[BI]-[A-Za-z]+")  # fullmatch: "B-geo\n" is no tag


@dataclass(frozen=True)
class Corpus:
    """Sentences of words with their IOB2 tags, in file order."""

    sentence_ids: list[str]
    words: list[list[str]]
    tags: list[list[str]]
    source: str = ""  # the file read, for messages

    def __len__(self) -> int:
        return len(self.words)

    def entity_types(self) -> dict[str, str]:
        """Each entity type, with the id of the first sentence that tags it."""
        first: dict[str, str] = {}
        for sentence_id, tags in zip(self.sentence_ids, self.tags):
            for tag in tags:
                if tag != "O" and tag[2:] not in first:
                    first[tag[2:]] = sentence_id
        return first

    def subset(self, indices: np.ndarray | list[int]) -> "Corpus":
        return Corpus(
            [self.sentence_ids[i] for i in indices],
            [self.words[i] for i in indices],
            [self.tags[i] for i in indices],
            self.source,
        )

    @property
    def n_tokens(self) -> int:
        return sum(len(s) for s in self.words)

    def sentences_sha256(self) -> str:
        """sha256 of the sentences' words and tags in order: the same corpus zipped, unzipped or
        re-zipped gives the same digest, where the file's own sha256 differs."""
        digest = hashlib.sha256()
        for words, tags in zip(self.words, self.tags):
            digest.update("\x1f".join(words).encode("utf-8", "surrogatepass") + b"\x1e")
            digest.update("\x1f".join(tags).encode("utf-8") + b"\x1d")
        return digest.hexdigest()


def file_name(path: str | Path) -> str:
    """A file's name as text that can be written anywhere: bytes that are not UTF-8 (a Latin-1 name
    from an old zip) as ``\\xNN`` instead of the surrogates that fail a UTF-8 write."""
    return os.fsencode(Path(path).name).decode("utf-8", "backslashreplace")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_corpus(path: str | Path) -> Corpus:
    """Read ``ner_dataset.csv`` (or a zip holding it) into sentences.

    The file is latin1, as published; a file re-encoded as UTF-8 is recognised
    (its words decode as UTF-8) and read as such. A sentence starts at a row
    whose ``Sentence #`` differs from the row above, so ids given on the first
    row only (as published) and ids repeated on every row both work. Blank
    lines are skipped. Raises CorpusError naming the file and line (1-based,
    the header is line 1) for malformed input. IOB1 tags (an entity starting
    with ``I-``) are read as IOB2.
    """
    path = Path(path)
    if path.is_dir():
        raise CorpusError(f"{path}: is a folder; give the corpus file (ner_dataset.csv or a zip holding it)")
    if path.exists() and not path.is_file():  # it is read more than once, so not a stream
        raise CorpusError(f"{path}: is not a regular file (a pipe or a device); give the corpus file")
    if not path.is_file():
        raise CorpusError(f"{path}: corpus file not found")
    source = _zip_member(path, "corpus") if path.suffix.lower() == ".zip" else path
    try:
        with warnings.catch_warnings():
            # pandas' warning that rows hold more fields than the header (their extra fields dropped)
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(
                source,
                encoding="latin1",
                dtype=str,
                keep_default_na=False,
                na_filter=False,
                quotechar='"',
                on_bad_lines="error",
                engine="c",
                index_col=False,  # else rows of one field more than the header shift every column left
                skip_blank_lines=False,  # skipped below, so that line numbers stay those of the file
            )
    except pd.errors.ParserWarning:
        raise CorpusError(f"{path}: {_first_bad_row(source, _MORE_FIELDS)}") from None
    except Exception as exc:  # noqa: BLE001 - the parser and each decompressor (gz, bz2, xz, zst, zip, tar) raise their own
        detail = " ".join(str(exc).split())  # pandas' messages end in a newline
        detail = f"cannot read corpus ({type(exc).__name__}: {detail})"
        if isinstance(exc, pd.errors.ParserError):
            detail = _first_bad_row(source, detail)
        raise CorpusError(f"{path}: {detail}") from None

    frame.columns = [_first_column_name(str(frame.columns[0])), *frame.columns[1:]]
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise CorpusError(f"{path}: missing column(s) {missing}; {_found(list(frame.columns))}")
    header_lines = 1 + sum(str(c).count("\n") for c in frame.columns)
    _refuse_line_breaks(frame, path, header_lines)
    blank = (frame == "").all(axis=1).to_numpy()
    lines = (header_lines + 1 + np.arange(len(frame)))[~blank]
    frame = frame[~blank]
    if frame.empty:
        raise CorpusError(f"{path}: corpus has no rows")

    def line_of(row: int) -> int:
        return int(lines[row])

    # an id of spaces is no id: a spreadsheet export pads empty cells so
    sentence_col = frame["Sentence #"].str.strip().to_numpy(dtype=object)
    words = _utf8_if_reencoded(frame["Word"].to_numpy(dtype=object), path, line_of)
    tags = frame["Tag"].to_numpy(dtype=object)

    if sentence_col[0] == "":
        raise CorpusError(f"{path}: line {line_of(0)}: first row has no sentence id")
    for row, word in enumerate(words.tolist()):
        if not word.strip(" \t\f\v"):  # not str.strip(): the corpus's latin1 holds cp1252's "…" as U+0085
            raise CorpusError(f"{path}: line {line_of(row)}: empty word")
    unique_tags, tag_index = np.unique(tags, return_inverse=True)
    for position, tag in enumerate(unique_tags):
        if not _TAG_PATTERN.fullmatch(tag):
            row = int(np.flatnonzero(tag_index == position)[0])
            raise CorpusError(f"{path}: line {line_of(row)}: invalid IOB2 tag {tag!r}")

    previous = np.concatenate([[None], sentence_col[:-1]])
    starts = np.flatnonzero((sentence_col != "") & (sentence_col != previous))
    bounds = np.append(starts, len(words))
    word_list = words.tolist()
    tag_list = tags.tolist()
    return Corpus(
        sentence_ids=sentence_col[starts].tolist(),
        words=[word_list[a:b] for a, b in zip(bounds[:-1], bounds[1:])],
        tags=[_as_iob2(tag_list[a:b]) for a, b in zip(bounds[:-1], bounds[1:])],
        source=str(path),
    )


def _refuse_line_breaks(frame: pd.DataFrame, path: Path, header_lines: int) -> None:
    """No cell of a token-per-row corpus holds a line break: one that does is a quote the CSV writer left
    unescaped, which swallowed the rows up to the next quote."""
    first = None
    for column in frame.columns:
        rows = np.flatnonzero(frame[column].str.contains(r"[\r\n]", regex=True).to_numpy())
        if len(rows) and (first is None or rows[0] < first[0]):
            first = (int(rows[0]), column)
    if first is not None:
        row, column = first
        value = frame[column].iloc[row]
        # the rows above hold no line break, so the row starts on this line
        raise CorpusError(f"{path}: {_line_break(header_lines + 1 + row, column, value)}")


def _line_break(line: int, column: str, value: str) -> str:
    return (f"line {line}: the {column!r} cell holds a line break ({value[:40]!r}): is a quote unescaped? In "
            "CSV a cell with a \" is quoted, its \" doubled (\"\"\"\" for \" alone)")


def _first_column_name(first: str) -> str:
    """The header's first name without a UTF-8 byte-order mark (spreadsheets' "CSV UTF-8" export), read as
    latin1; the mark also kept the CSV reader from unquoting it."""
    if first.startswith("\u00ef\u00bb\u00bf"):
        first = first[3:]
        if len(first) > 1 and first[0] == first[-1] == '"':
            first = first[1:-1].replace('""', '"')
    return first


_MORE_FIELDS = "rows hold more fields than the header (a field too many, or a trailing comma)"
# what the error path below can read again; other compressions (zst, tar) keep the parser's message
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_OTHER_COMPRESSIONS = (".zst", ".zstd", ".tar", ".tgz", ".tbz2", ".txz", ".zip")


def _found(header: list) -> str:
    """The header's names as a message shows them: a few, each cut short (a line of JSON or a binary
    file read as a header is megabytes of "names"), and what the file looks like when it is no corpus."""
    names = [str(name) for name in header]
    shown = [name if len(name) <= 40 else name[:40] + "..." for name in names[:6]]
    found = f"found {shown}" + (f" and {len(names) - 6} more" if len(names) > 6 else "")
    first = names[0].lstrip() if names else ""
    if first.startswith(("{", "[", "PAR1")):
        what = "JSON" if first[:1] in "{[" else "parquet"
        found += (f"; this looks like {what} documents: --data takes the annotated corpus (a CSV with columns "
                  f"{', '.join(REQUIRED_COLUMNS)}), and documents go to 'nerbatch run'")
    return found


def _first_bad_row(source, fallback: str) -> str:
    """Where the file first breaks the corpus's shape, by its line (the file is read again, on the error
    path only): the parser's messages count records, not lines, and name where it gave up, often far
    below an unescaped quote that swallowed rows. ``fallback`` where it finds nothing."""
    if isinstance(source, io.BytesIO):
        source.seek(0)
        handle = io.TextIOWrapper(source, encoding="latin1", newline="")
    else:
        suffixes = [s.lower() for s in source.suffixes[-2:]]
        if ".tar" in suffixes or suffixes[-1:] and suffixes[-1] in _OTHER_COMPRESSIONS:
            return fallback
        try:
            handle = _OPENERS.get(source.suffix.lower(), open)(source, "rt", encoding="latin1", newline="")
        except OSError:
            return fallback
    with handle:
        try:
            reader = csv.reader(handle)
            header = next(reader)
            if header:
                header[0] = _first_column_name(header[0])
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                return f"line 1: missing column(s) {missing}; {_found(header)}"
            width = len(header)
            first_line = reader.line_num + 1
            for row in reader:
                broken = next((i for i, cell in enumerate(row) if "\n" in cell or "\r" in cell), None)
                if broken is not None:
                    return _line_break(first_line, header[broken] if broken < width else f"field {broken + 1}",
                                       row[broken])
                if len(row) > width:  # the parser fills a shorter row
                    return (f"line {first_line}: {len(row)} fields where the header has {width} (a field too many, "
                            "or a trailing comma)")
                first_line = reader.line_num + 1
        except (OSError, EOFError, csv.Error):
            pass
    return fallback


def _zip_member(path: Path, what: str) -> io.BytesIO:
    """The one data file of a zip, read; folders and the copies that macOS adds (``__MACOSX/``, ``._*``)
    are not data."""
    try:
        with zipfile.ZipFile(path) as archive:
            return io.BytesIO(archive.read(the_zip_member(archive, f"{what} file")))
    except ValueError as exc:
        raise CorpusError(f"{path}: {exc}") from None
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, RuntimeError) as exc:  # RuntimeError: encrypted
        raise CorpusError(f"{path}: cannot read {what} ({type(exc).__name__}: {exc})") from None


def the_zip_member(archive: zipfile.ZipFile, what: str, suffix: str = "") -> str:
    """The name of a zip's one file ending in ``suffix`` (any case), not counting folders and macOS
    metadata; ``ValueError`` naming them when there are none or several."""
    names = [name for name in archive.namelist()
             if not name.endswith("/") and not name.startswith("__MACOSX/")
             and not name.rsplit("/", 1)[-1].startswith("._") and name.lower().endswith(suffix)]
    if len(names) != 1:
        raise ValueError(f"expected one {what} in the zip, found {len(names)}"
                         f"{': ' + ', '.join(names[:10]) if names else ''}; unzip the one to use")
    return names[0]


def _as_iob2(tags: list[str]) -> list[str]:
    """``I-X`` that starts an entity (IOB1, as in the original CoNLL-2003 files) becomes ``B-X``.

    The spans stay those the scorer reads, but the network and the decoder then learn and
    allow only IOB2 paths; with stray ``I-`` tags kept, no gold path was valid for them and a
    model trained on an IOB1 corpus found no entity at all."""
    previous = "O"
    for i, tag in enumerate(tags):
        if tag[:2] == "I-" and previous[2:] != tag[2:]:
            tags[i] = tag = "B-" + tag[2:]
        previous = tag
    return tags


def _utf8_if_reencoded(words: np.ndarray, path: Path, line_of) -> np.ndarray:
    """The words decoded as UTF-8 when their latin1 bytes are valid UTF-8 holding non-ASCII text.

    Latin1 text of the corpus's kind (accented letters, cp1252 quotes) is almost never
    valid UTF-8, while a UTF-8 file read as latin1 turns every accented letter into two
    characters (``Ã©``) that the vocabulary would learn as they are. A file that mixes the
    two (a UTF-8 export with one cp1252 word pasted in) is refused, naming a line of each:
    either reading would turn one kind of word into nonsense.
    """
    joined = "\n".join(words.tolist())  # a CSV word holds no newline unless quoted
    if joined.isascii():
        return words
    try:
        decoded = joined.encode("latin1").decode("utf-8").split("\n")
    except UnicodeDecodeError:
        _refuse_mixed_encodings(words, path, line_of)
        return words
    if len(decoded) != len(words):
        return words
    if not any(_utf8_evidence(word) for word in decoded if not word.isascii()):
        return words  # latin1 whose few non-ASCII bytes decode as UTF-8 by chance ("Gauß’s")
    return np.array(decoded, dtype=object)


def _refuse_mixed_encodings(words: np.ndarray, path: Path, line_of) -> None:
    """Refuse a file holding both UTF-8 words and words that are not UTF-8.

    A latin1 word can be valid UTF-8 by chance: an upper-case accented letter or ß before a cp1252
    quote ("Gauß’s" reads as "Gauߒs"), so such a word does not count as UTF-8 (``_utf8_evidence``).
    """
    utf8_row = latin1_row = None
    for row, word in enumerate(words.tolist()):
        if word.isascii():
            continue
        try:
            decoded = word.encode("latin1").decode("utf-8")
        except UnicodeDecodeError:
            latin1_row = row if latin1_row is None else latin1_row
        else:
            if utf8_row is None and _utf8_evidence(decoded):
                utf8_row = row
        if utf8_row is not None and latin1_row is not None:
            utf8_word = words[utf8_row].encode("latin1").decode("utf-8")
            raise CorpusError(f"{path}: mixes encodings: line {line_of(utf8_row)} holds UTF-8 ({utf8_word!r}) "
                              f"but line {line_of(latin1_row)} does not ({words[latin1_row]!r} as latin1); "
                              "save the file in one encoding")


def _utf8_evidence(decoded: str) -> bool:
    """Whether a word that decodes as UTF-8 is UTF-8 text rather than latin1 valid by chance.

    A chance decode is an accented letter before one or two cp1252 punctuation or symbol bytes
    ("Gauß’s", "olé…”", "là »"): one character that no European text holds, a letter or not. A word
    of another script decodes to several letters or marks of it ("北京", "دبي")."""
    foreign = [ch for ch in decoded if not ch.isascii() and not _european(ord(ch))]
    return not foreign or (len(foreign) > 1 and all(unicodedata.category(ch)[0] in "LM" for ch in foreign))


def _european(code: int) -> bool:
    """Latin-1 symbols and letters, Latin Extended-A/B, Greek, Cyrillic, Latin Extended Additional,
    general punctuation and currency signs."""
    return (0xA0 <= code <= 0x24F or 0x370 <= code <= 0x4FF or 0x1E00 <= code <= 0x1EFF
            or 0x2000 <= code <= 0x20CF)


MIN_SENTENCES = 10  # the 80/20 split, then validation from the 80, each need sentences on both sides


def protocol_split(n_sentences: int, source: str = "") -> tuple[np.ndarray, np.ndarray]:
    """The fixed evaluation split: 80/20 over sentence indices, ``random_state=1``.

    ``source`` names the corpus file in the error for a corpus too small to split."""
    from sklearn.model_selection import train_test_split

    if n_sentences < MIN_SENTENCES:
        raise CorpusError(f"{source or 'the corpus'}: has {n_sentences} sentence(s); the protocol's split needs "
                          f"at least {MIN_SENTENCES}")
    train, test = train_test_split(np.arange(n_sentences), test_size=0.2, random_state=1)
    return np.sort(train), np.sort(test)


def validation_split(train_indices: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Carve validation sentences out of the training part only."""
    from sklearn.model_selection import train_test_split

    fit, val = train_test_split(train_indices, test_size=fraction, random_state=seed)
    return np.sort(fit), np.sort(val)
