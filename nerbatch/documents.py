"""Document sources: find input files and stream documents out of them.

Supported inputs are JSONL files (plain or gzip-compressed) and parquet files.
Every document read ends up as either a :class:`Document` or a
:class:`DocumentError`; a bad line, a bad row or a file that breaks part-way
never stops the run and never silently disappears.

Positions
---------
``position`` on a :class:`Document` / :class:`DocumentError` is

* for JSONL: the **1-based physical line number** (every ``\\n``-terminated line
  counts, blank ones included; ``\\r\\n`` endings are fine; Unicode line
  separators such as U+2028 inside a line do not split it);
* for parquet: the **0-based row index** within the file (across row groups).

A document without an id (field missing or null) gets ``f"{basename}:{position}"``
(e.g. ``"news-01.jsonl.gz:17"``, ``"part-3.parquet:0"``): stable across runs,
working directories and machines, but two inputs with the same basename in
different folders can produce the same generated ids.

Error reasons
-------------
``DocumentError.reason`` is ``"<kind>: <detail>"`` where ``kind`` is one of
:data:`REASON_KINDS` (a stable token, safe to group or alert on; use
:func:`reason_kind`) and ``detail`` is for people.  See :data:`REASON_KINDS`.

Blank lines
-----------
A JSONL line that is truly empty (nothing between line terminators, i.e. ``""``
after removing ``\\n`` / ``\\r\\n``) is skipped silently: it is not a document.
A line holding only spaces or tabs is *not* skipped; it is reported as
``malformed_json``.
"""

from __future__ import annotations

import datetime
import decimal
import glob
import itertools
import json
import math
import os
import stat
import struct
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

from nerbatch.errors import InputError
from nerbatch.records import JsonInteger, JsonNumber, kept_value, whole_float_text

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "Document",
    "DocumentError",
    "INPUT_SUFFIXES",
    "RAW_LIMIT",
    "REASON_KINDS",
    "expand_inputs",
    "parse_document",
    "read_documents",
    "reason_kind",
]

#: File name endings picked up from folder inputs (globs and explicit files take any name).
# What a folder argument takes, in any letter case; the same names as output files may have.
INPUT_SUFFIXES: tuple[str, ...] = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz", ".parquet", ".pq")

#: ``DocumentError.raw`` holds at most this many characters of the offending input.
RAW_LIMIT = 1024

#: Physical JSONL lines longer than this many bytes are reported (``oversized``)
#: without being held in memory; the least default for ``max_line_bytes``,
#: which also leaves room for a text of ``max_doc_chars`` characters written
#: as JSON escapes (up to 12 bytes a character: a surrogate pair's two ``\uXXXX``).
DEFAULT_MAX_LINE_BYTES = 64 * 1024 * 1024

#: Every ``reason`` kind :func:`read_documents` emits, with its meaning.
REASON_KINDS: dict[str, str] = {
    "malformed_json": "the line is not valid JSON (also: whitespace-only line, nesting too deep)",
    "not_object": "the JSON value is not an object (array, string, number...)",
    "invalid_utf8": "the line's bytes, or a parquet string value's, are not valid UTF-8",
    "unreadable_value": "a parquet value has no Python form (a date or timestamp past year 9999, a huge duration...)",
    "invalid_unicode": "a string holds an unpaired surrogate escape (e.g. \\ud800) that UTF-8 cannot encode",
    "invalid_id": "the id is neither a non-blank string nor an integer (float, bool, list, blank...)",
    "missing_text": "the text field is absent or null",
    "non_string_text": "the text field is not a string",
    "empty_text": "the text is empty or whitespace-only",
    "oversized": "the text is longer than max_doc_chars characters, or the line longer than max_line_bytes bytes",
    "corrupt_file": (
        "the file is not readable from this position on: truncated or corrupt gzip (covers the rest "
        "of the file), a file that is not parquet at all (covers the whole file, position 0), or a "
        "corrupt parquet row group (covers the rows from position to the end of that row group; "
        "reading resumes with the next row group)"
    ),
    "not_jsonl": (
        "the file is no JSON Lines at all: a JSON array or JSON over several lines, an archive (zip, bz2, "
        "xz, zstd, 7z) or UTF-16/32 text; covers the whole file (position 0)"
    ),
    "duplicate_column": "a parquet file names a needed column (id, text or a kept field) more than once; covers the whole file (position 0)",
    "read_error": "the file could not be opened (position 0) or an I/O error stopped reading; covers the rest of the file",
}


@dataclass(slots=True)
class Document:
    """One readable input document.

    ``fields`` maps every requested kept field to its value normalised by
    :func:`nerbatch.records.kept_value` (``str``, or ``None`` when missing).
    ``position`` is the 1-based line number (JSONL) or 0-based row index
    (parquet); see the module docstring.  ``generated_id``: the document had
    no id, and ``doc_id`` was made from its file and position.
    """

    doc_id: str
    text: str
    fields: dict[str, Any]
    source: str
    position: int
    generated_id: bool = False


@dataclass(slots=True)
class DocumentError:
    """One input document (or the rest of a file) that could not be read.

    ``doc_id`` is the document's own id when it could be read, else ``None``.
    ``raw`` is the first :data:`RAW_LIMIT` characters of the offending JSONL line
    (undecodable bytes shown as ``\\xNN``) or of the JSON of the parquet row's
    read columns; ``None`` when there is no single offending input (whole or
    rest-of-file errors).
    """

    source: str
    position: int
    doc_id: str | None
    reason: str
    raw: str | None


def reason_kind(reason: str) -> str:
    """The stable kind token of a ``DocumentError.reason`` (text before the first ``':'``)."""
    return reason.split(":", 1)[0]


# --------------------------------------------------------------------------- inputs

_GLOB_CHARS = frozenset("*?[")


def _has_glob(pattern: str) -> bool:
    return any(c in _GLOB_CHARS for c in pattern)


def _folder_files(folder: str, *, required: bool = True) -> list[str]:
    try:
        with os.scandir(folder) as it:
            names = [
                e.name
                for e in it
                if not e.name.startswith(".")
                and e.name.lower().endswith(INPUT_SUFFIXES)
                and not os.path.isdir(e.path)  # a dangling link or a pipe is an error when read, not skipped
            ]
    except OSError as exc:
        raise InputError(f"cannot read input folder {folder!r}: {exc.strerror or exc}") from exc
    if not names and required:
        raise InputError(
            f"input folder {folder!r} holds no {', '.join('*' + s for s in INPUT_SUFFIXES)} files"
        )
    return [os.path.join(folder, n) for n in sorted(names)]


def _check_readable(path: str, given: str) -> None:
    named = repr(path) if path == given else f"{path!r} (from {given!r})"
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:  # a dangling symlink or a symlink loop, too
        raise InputError(f"cannot read input {named}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(mode):
        # A pipe or device can be read only once: sniffing its format would eat documents.
        raise InputError(f"input {named} is not a regular file (a pipe or device); save it to a file first")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise InputError(f"cannot read input {named}: {exc.strerror or exc}") from exc


def expand_inputs(inputs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str]) -> list[str]:
    """Expand input arguments into the list of files to read.

    Each argument is a glob (``*``, ``?``, ``[...]``; ``**`` recurses), a file or
    a folder:

    * glob: its matches in sorted order; matched files are taken whatever their
      extension, matched folders are expanded like folder arguments; hidden
      names (leading ``.``) only match a pattern that starts with ``.``;
    * file: taken as is, whatever its extension (the format is sniffed);
    * folder: the non-hidden files directly inside it (not recursive) named
      ``*.jsonl``, ``*.ndjson`` (optionally ``.gz``), ``*.parquet`` or ``*.pq``
      in any letter case, sorted by name.

    Paths are returned as given/expanded (not made absolute), in argument
    order; a file reached twice (by the same real path or through a hard link)
    is kept once, at its first place.  Raises :class:`~nerbatch.errors.InputError` naming the argument when
    there are no arguments, a glob matches nothing, a path does not exist, a
    folder holds no input files, a file cannot be opened for reading, a
    path is not a regular file (a pipe such as ``/dev/stdin``), or a file
    name is not valid UTF-8.
    """
    inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
    if not inputs:
        raise InputError("no input given")
    out: list[str] = []
    seen: set[tuple[int, int]] = set()

    def add(path: str, given: str) -> None:
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:  # Python's surrogate escapes of the name's bytes
            shown = os.fsencode(path).decode("utf-8", errors="backslashreplace")
            raise InputError(f"input file name '{shown}' (from {given!r}) is not valid UTF-8, so no record "
                             "could name it; rename the file") from None
        _check_readable(path, given)
        info = os.stat(path)
        key = (info.st_dev, info.st_ino)  # one file however reached: symlinks, "..", hard links
        if key not in seen:
            seen.add(key)
            out.append(path)

    for given in inputs:
        if isinstance(given, os.PathLike):
            given = os.fspath(given)
        if not isinstance(given, str) or not given:
            raise InputError(f"invalid input argument {given!r}")
        if given == "-" and not os.path.exists(given):
            raise InputError("input '-': inputs are files, not standard input; save it to a file first")
        if _has_glob(given) and not os.path.exists(given):
            matches = sorted(glob.glob(given, recursive=True))
            files: list[str] = []
            for m in matches:
                if os.path.isdir(m):
                    # a matched folder without input files is not an error by itself
                    files.extend(_folder_files(m, required=False))
                else:  # a dangling link or a pipe is an error when read, not skipped
                    files.append(m)
            if not files:
                raise InputError(f"no input files match {given!r}")
            for f in files:
                add(f, given)
        elif os.path.isdir(given):
            for f in _folder_files(given):
                add(f, given)
        elif os.path.exists(given):
            add(given, given)
        else:
            raise InputError(f"input {given!r} does not exist")
    return out


# --------------------------------------------------------------------------- reading


def _cut(text: str | None) -> str | None:
    return None if text is None else text[:RAW_LIMIT]


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, (float, decimal.Decimal)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, (bytes, bytearray)):
        return "binary"
    return type(value).__name__


def _bad_unicode(value: str) -> int | None:
    """Index of the first lone surrogate in ``value`` (unencodable as UTF-8), else None."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def _whole_number(value: float) -> str | None:
    """The decimal string of a number without a fraction (JSON ``1.0``/``1e3``, a parquet double
    column's ``7.0``, as pandas writes an integer column with missing values), else None.
    JSON Schema counts such numbers as integers. A float beyond 2**53 is refused: it may no longer
    be the integer that was written."""
    if isinstance(value, JsonNumber):
        number = decimal.Decimal(value.literal)
        if number.is_finite() and (number.is_zero() or number.adjusted() < 4000) and number == number.to_integral_value():
            return str(int(number))
        return None
    return whole_float_text(value)


def generated_id_prefix(path: str) -> str:
    """What the generated ids of a file's documents start with: its name, without the folder."""
    return os.path.basename(os.path.normpath(path))


def _own_id(raw_id: Any) -> str | None:
    """A document's id as text, or None when ``raw_id`` is missing or no valid id."""
    if isinstance(raw_id, str):
        return raw_id if raw_id.strip() else None
    if isinstance(raw_id, int) and not isinstance(raw_id, bool):
        return str(raw_id)
    if isinstance(raw_id, JsonInteger):
        return raw_id.literal
    if isinstance(raw_id, float):
        return _whole_number(raw_id)
    if isinstance(raw_id, decimal.Decimal) and raw_id.is_finite() and raw_id == raw_id.to_integral_value():
        return str(int(raw_id))  # a parquet decimal(38, 0): how Spark and JDBC exports write number ids
    if isinstance(raw_id, uuid.UUID):  # a parquet uuid column (DuckDB, Iceberg)
        return str(raw_id)
    return None


class _Rules:
    """The per-document checks shared by the JSONL and parquet readers."""

    __slots__ = ("source", "basename", "id_field", "text_field", "keep_fields", "max_doc_chars")

    def __init__(self, source, id_field, text_field, keep_fields, max_doc_chars):
        self.source = source
        self.basename = generated_id_prefix(source)
        self.id_field = id_field
        self.text_field = text_field
        self.keep_fields = keep_fields
        self.max_doc_chars = max_doc_chars

    def error(self, position: int, reason: str, doc_id: str | None = None, raw: str | None = None):
        return DocumentError(self.source, position, doc_id, reason, _cut(raw))

    def build(
        self, obj: dict, position: int, raw: str | None, check_unicode: bool
    ) -> Document | DocumentError:
        """Turn a decoded object into a Document, or the first problem into a DocumentError."""
        idf, tf = self.id_field, self.text_field
        raw_id = obj.get(idf)
        if raw_id is None:
            doc_id = f"{self.basename}:{position}"
        elif (own := _own_id(raw_id)) is not None:
            doc_id = own
        else:
            what = "a blank string" if isinstance(raw_id, str) else _type_name(raw_id)
            if isinstance(raw_id, float) and not isinstance(raw_id, JsonNumber) and 2**53 < abs(raw_id) < math.inf:
                what = "a floating-point number beyond 2**53, which may not be the integer written"
            return self.error(
                position,
                f"invalid_id: {idf!r} is {what}; expected a non-blank string or an integer",
                raw=raw,
            )
        if check_unicode and (at := _bad_unicode(doc_id)) is not None:
            return self.error(
                position, f"invalid_unicode: {idf!r} holds an unpaired surrogate at character {at}", raw=raw
            )
        own_id = None if raw_id is None else doc_id

        text = obj.get(tf)
        if text is None:
            what = "null" if tf in obj else "missing"
            return self.error(position, f"missing_text: {tf!r} is {what}", own_id, raw)
        if not isinstance(text, str):
            return self.error(
                position, f"non_string_text: {tf!r} is {_type_name(text)}, not a string", own_id, raw
            )
        if not text or text.isspace():
            what = "empty" if not text else "whitespace-only"
            return self.error(position, f"empty_text: {tf!r} is {what}", own_id, raw)
        if len(text) > self.max_doc_chars:
            return self.error(
                position,
                f"oversized: {tf!r} has {len(text)} characters, more than max_doc_chars={self.max_doc_chars}",
                own_id,
                raw,
            )
        if check_unicode and (at := _bad_unicode(text)) is not None:
            return self.error(
                position, f"invalid_unicode: {tf!r} holds an unpaired surrogate at character {at}", own_id, raw
            )
        fields = {}
        for name in self.keep_fields:
            try:
                value = kept_value(obj.get(name))
            except RecursionError:
                return self.error(position, f"malformed_json: kept field {name!r} is nested too deep", own_id, raw)
            if check_unicode and value is not None and (at := _bad_unicode(value)) is not None:
                return self.error(
                    position,
                    f"invalid_unicode: kept field {name!r} holds an unpaired surrogate at character {at}",
                    own_id,
                    raw,
                )
            fields[name] = value
        return Document(doc_id, text, fields, self.source, position, raw_id is None)


def _sniff(path: str) -> str:
    """``"parquet"``, ``"gzip"`` or ``"jsonl"``: by extension first, then by magic bytes."""
    lower = path.lower()
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    if lower.endswith(".gz"):
        return "gzip"
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return "jsonl"  # the reader reports the open failure
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head == b"PAR1":
        return "parquet"
    return "jsonl"


# What a file that is no JSON Lines starts with, and what to do about it.
_NOT_JSONL_MAGIC = (
    (b"PK\x03\x04", "a zip archive; extract it"), (b"PK\x05\x06", "an empty zip archive"),
    (b"BZh", "bzip2-compressed; decompress it (bunzip2) or recompress it with gzip"),
    (b"\xfd7zXZ\x00", "xz-compressed; decompress it (unxz) or recompress it with gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed; decompress it (unzstd) or recompress it with gzip"),
    (b"7z\xbc\xaf\x27\x1c", "a 7z archive; extract it"),
    (b"\xff\xfe\x00\x00", "UTF-32 text; re-encode it as UTF-8 (iconv -f UTF-32 -t UTF-8)"),
    (b"\x00\x00\xfe\xff", "UTF-32 text; re-encode it as UTF-8 (iconv -f UTF-32 -t UTF-8)"),
    (b"\xff\xfe", "UTF-16 text; re-encode it as UTF-8 (iconv -f UTF-16 -t UTF-8)"),
    (b"\xfe\xff", "UTF-16 text; re-encode it as UTF-8 (iconv -f UTF-16 -t UTF-8)"),
)


def _not_jsonl(head: bytes, name: str) -> str | None:
    """Why a file starting with ``head`` (its first bytes, decompressed) holds no JSON Lines at all, or
    None. Each line of such a file would be a meaningless error of its own."""
    for magic, what in _NOT_JSONL_MAGIC:
        if head.startswith(magic):
            return f"not_jsonl: the file is {what} (nerbatch reads JSON Lines, gzipped or not, and parquet)"
    first = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    line, _, rest = first.partition(b"\n")
    if line.strip() == b"[" and rest:  # an array over several lines (on one line: the line's own error says so)
        return f"not_jsonl: the file is a JSON array, not JSON Lines (one object per line); {_jq(name, _EACH)}"
    if line.strip() == b"{" and rest:
        return f"not_jsonl: the file is JSON over several lines, not JSON Lines (one object per line); {_jq(name, '.')}"
    return None


_EACH = "'.[]'"  # jq's program for an array's items


def _jq(name: str, program: str) -> str:
    """The command that turns file ``name`` into JSON Lines, its name quoted for a shell."""
    return "convert it: jq -c " + program + " '" + name.replace("'", "'\\''") + "' > docs.jsonl"


def read_documents(
    path: str | os.PathLike[str],
    *,
    id_field: str = "id",
    text_field: str = "text",
    keep_fields: Sequence[str] = (),
    max_doc_chars: int = 1_000_000,
    chunk_rows: int = 1024,
    max_line_bytes: int | None = None,
) -> Iterator[Document | DocumentError]:
    """Stream the documents of one file, in file order, in bounded memory.

    The format is chosen by extension (``.parquet``/``.pq``: parquet, ``.gz``:
    gzip JSONL), else by magic bytes (gzip, ``PAR1``), else plain JSONL.

    * JSONL is read as bytes one line at a time (never more than
      ``max_line_bytes`` held) and decoded per line, so one bad line only costs
      that line.  A UTF-8 byte-order mark at the start of the file is ignored.
      ``max_line_bytes`` defaults to room for a text of ``max_doc_chars``
      characters however it is escaped, and at least 64 MiB.
    * parquet is read with ``ParquetFile.iter_batches`` in batches of
      ``chunk_rows`` rows, reading only the id, text and kept columns (at most
      one row group's worth of those columns is in memory at a time).

    Yields a :class:`Document` per good document and a :class:`DocumentError`
    per bad one (see :data:`REASON_KINDS`), in file order.  A JSONL file that
    breaks part-way (truncated or corrupt gzip, I/O error) yields every line
    before the break, then one ``corrupt_file`` / ``read_error`` error whose
    position is the first line not read (the line cut by the break); nothing
    after it is read.  A parquet row group that cannot be decoded yields one
    ``corrupt_file`` error at the first row not read, covering the rest of
    that row group, and reading goes on with the next row group.  A file that
    cannot be opened, or is not parquet at all, yields one error at position
    0.  Bad content never raises; ``InputError`` is raised (eagerly, at the
    call) only for invalid arguments.
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise InputError(f"input path must be a non-empty string or path, got {path!r}")
    path = os.fspath(path)
    if not isinstance(id_field, str) or not id_field:
        raise InputError(f"id field must be a non-empty string, got {id_field!r}")
    if not isinstance(text_field, str) or not text_field:
        raise InputError(f"text field must be a non-empty string, got {text_field!r}")
    if isinstance(keep_fields, str):
        keep_fields = [keep_fields]
    if keep_fields is None or not all(isinstance(name, str) and name for name in keep_fields):
        raise InputError(f"kept fields must be non-empty strings, got {keep_fields!r}")
    keep = tuple(dict.fromkeys(keep_fields))
    if max_line_bytes is None and isinstance(max_doc_chars, int):
        max_line_bytes = max(DEFAULT_MAX_LINE_BYTES, 12 * max_doc_chars + (1 << 20))  # + the other fields
    for name, value in (
        ("max_doc_chars", max_doc_chars),
        ("chunk_rows", chunk_rows),
        ("max_line_bytes", max_line_bytes),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    rules = _Rules(path, id_field, text_field, keep, max_doc_chars)
    kind = _sniff(path)
    if kind == "parquet":
        return _read_parquet(rules, chunk_rows)
    return _read_jsonl(rules, kind == "gzip", max_line_bytes)


# ---- single messages (Kafka)


def parse_document(
    payload: bytes | bytearray | memoryview | None,
    *,
    source: str,
    position: int,
    id_field: str = "id",
    text_field: str = "text",
    keep_fields: Sequence[str] = (),
    max_doc_chars: int = 1_000_000,
) -> Document | DocumentError:
    """Parse one message payload (one JSON document, UTF-8) like one JSONL line.

    Every check :func:`read_documents` applies to a JSONL line applies here,
    with the same :data:`REASON_KINDS` (``malformed_json``, ``not_object``,
    ``invalid_utf8``, ``missing_text``, ``oversized``...).  Differences, because
    a message is not a line of a file:

    * the whole payload is the document: a payload holding two JSON values
      (e.g. two lines) is ``malformed_json``; surrounding whitespace and a
      leading UTF-8 byte-order mark are ignored;
    * an empty payload or a ``None`` one (a tombstone) is not skipped: it is
      reported as ``malformed_json`` so that it cannot vanish;
    * a document without an id gets ``f"{source}:{position}"`` (the whole
      source, not a basename).  The Kafka worker passes
      ``source="topic/partition"`` and ``position=offset``.

    Never raises for bad content; ``InputError`` only for invalid arguments.
    """
    if not isinstance(id_field, str) or not id_field:
        raise InputError(f"id field must be a non-empty string, got {id_field!r}")
    if not isinstance(text_field, str) or not text_field:
        raise InputError(f"text field must be a non-empty string, got {text_field!r}")
    if isinstance(max_doc_chars, bool) or not isinstance(max_doc_chars, int) or max_doc_chars < 1:
        raise InputError(f"max_doc_chars must be a positive integer, got {max_doc_chars!r}")
    if isinstance(keep_fields, str):
        keep_fields = [keep_fields]
    rules = _Rules(source, id_field, text_field, tuple(dict.fromkeys(keep_fields)), max_doc_chars)
    rules.basename = source  # generated ids name the whole source (e.g. "topic/3:1234")
    if payload is None:
        return rules.error(position, "malformed_json: the message has no value (a tombstone)")
    line = bytes(payload)
    if line.startswith(b"\xef\xbb\xbf"):
        line = line[3:]
    if not line.strip():
        what = "empty" if not line else "whitespace-only"
        raw = line.decode("utf-8", errors="backslashreplace")
        return rules.error(position, f"malformed_json: the message is {what}", raw=raw)
    item = _jsonl_line(rules, line, position)
    assert item is not None  # only an empty line gives None
    return item


# ---- JSONL


_READ_CHUNK = 1 << 20  # bytes read (and, for gzip, produced) per step
_RAW_HEAD = RAW_LIMIT * 4  # bytes of an offending line kept for ``raw``


class _Truncated(EOFError):
    """A gzip member ended before its end-of-stream marker."""


def _file_chunks(f: BinaryIO) -> Iterator[bytes]:
    while chunk := f.read(_READ_CHUNK):
        yield chunk


def _gunzip(raw: Iterator[bytes]) -> Iterator[bytes]:
    """Decompress a (multi-member) gzip byte stream incrementally.

    Unlike ``gzip.GzipFile`` behind a buffered reader, every byte that can be
    decompressed is produced before a truncation is reported, so the lines
    before the break are not lost.  Output comes in pieces of at most
    ``_READ_CHUNK`` bytes whatever the compression ratio.  Zero padding
    between/after members is skipped, as ``gzip`` does; before the first member
    it is corrupt data, and a stream with no member at all (an empty or zeroed
    file) is an error rather than an empty input.
    """
    d = None
    started = False
    for data in raw:
        while True:
            if d is None:
                if started:
                    data = data.lstrip(b"\0")
                if not data:
                    break
                d = zlib.decompressobj(wbits=31)
                started = True
            before = d.copy()
            try:
                out = d.decompress(data, _READ_CHUNK)
            except zlib.error:
                # zlib keeps nothing of a call that fails (a bad checksum in the trailer, a corrupt
                # block): up to a chunk of lines. Read that input again in small steps for them, as
                # gzip -d gives them; the error's reason says they may be damaged.
                yield from _up_to_the_error(before, data)
                raise
            if out:
                yield out
            if d.eof:
                data, d = d.unused_data, None
                continue
            data = d.unconsumed_tail
            if not data and len(out) < _READ_CHUNK:
                break
    if not started:
        raise zlib.error("no gzip member: the file is empty")
    if d is not None:
        tail = d.flush()
        if tail:
            yield tail
        if not d.eof:
            raise _Truncated("compressed data ends before the end-of-stream marker")


def _up_to_the_error(d, data: bytes) -> Iterator[bytes]:
    """What ``d`` decompresses of ``data`` before the point where it fails: 64 bytes at a time, then byte by
    byte over the 64 where it failed (a step that fails gives nothing)."""
    step = 64
    for start in range(0, len(data), step):
        before = d.copy()
        try:
            yield d.decompress(data[start:start + step])
        except zlib.error:
            d = before
            for byte in range(start, min(start + step, len(data))):
                try:
                    yield d.decompress(data[byte:byte + 1])
                except zlib.error:
                    return
            return


def _split_lines(chunks: Iterator[bytes], max_line_bytes: int) -> Iterator[tuple[bytes, bool]]:
    """Split a byte stream on ``\\n`` into ``(line, overlong)`` pairs.

    ``line`` has no ``\\n``.  A line longer than ``max_line_bytes`` is never
    held whole: it comes out once as ``(first bytes, True)``.  A last line
    without a terminator is still a line.
    """
    pending: list[bytes] = []
    pending_len = 0
    skipping: bytes | None = None  # head of an overlong line being skipped
    for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            piece = chunk[start:end]
            start = end + 1
            if skipping is not None:
                if len(skipping) < _RAW_HEAD:
                    skipping = (skipping + piece)[:_RAW_HEAD]
                yield skipping, True
                skipping = None
                continue
            size = pending_len + len(piece)
            if size > max_line_bytes:
                yield (b"".join(pending) + piece[:_RAW_HEAD])[:_RAW_HEAD], True
            elif pending:
                yield b"".join(pending) + piece, False
            else:
                yield piece, False
            pending, pending_len = [], 0
        if skipping is not None:
            if len(skipping) < _RAW_HEAD and start < len(chunk):
                skipping = (skipping + chunk[start : start + _RAW_HEAD])[:_RAW_HEAD]
        elif start < len(chunk):
            rest = chunk[start:]
            pending.append(rest)
            pending_len += len(rest)
            if pending_len > max_line_bytes:
                skipping = b"".join(pending)[:_RAW_HEAD]
                pending, pending_len = [], 0
    if skipping is not None:
        yield skipping, True
    elif pending:
        yield b"".join(pending), False


def _detail(exc: BaseException) -> str:
    """An exception's message on one line, control characters escaped."""
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc  # str(KeyError) adds quotes
    text = " ".join(str(message).split()) or type(exc).__name__
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _break_reason(exc: BaseException, lines_read: int) -> str:
    rest = "the rest of the file could not be read"
    if isinstance(exc, EOFError):
        return f"corrupt_file: gzip stream is truncated ({_detail(exc)}); {rest}"
    if isinstance(exc, zlib.error):
        # Damage shows where zlib notices it, not where it is: the lines read before may hold it (a
        # checksum error covers the whole gzip member)
        damaged = ", and the lines read before this one may be damaged" if lines_read else ""
        return f"corrupt_file: invalid gzip data ({_detail(exc)}); {rest}{damaged}"
    detail = getattr(exc, "strerror", None) or _detail(exc)
    return f"read_error: {detail}; {rest}"


def _read_jsonl(rules: _Rules, gz: bool, max_line_bytes: int) -> Iterator[Document | DocumentError]:
    try:
        f = open(rules.source, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        yield rules.error(0, f"read_error: cannot open file: {exc.strerror or exc}")
        return
    with f:
        if gz and not b"\x1f\x8b".startswith(magic := f.read(2)) and magic[:1] != b"\0":  # zeros: gzip's padding
            yield rules.error(0, "corrupt_file: the file is named .gz but holds no gzip data; if it is plain "
                                 "JSON Lines, rename it without .gz")
            return
        f.seek(0)
        chunks = _gunzip(_file_chunks(f)) if gz else _file_chunks(f)
        try:
            head = next((chunk for chunk in chunks if chunk), b"")
        except (EOFError, OSError, zlib.error) as exc:
            yield rules.error(1, _break_reason(exc, 0))
            return
        if (problem := _not_jsonl(head, os.path.basename(rules.source))) is not None:
            yield rules.error(0, problem)
            return
        lines = _split_lines(itertools.chain((head,), chunks), max_line_bytes)
        lineno = 0
        while True:
            try:
                line, overlong = next(lines)
            except StopIteration:
                return
            except (EOFError, OSError, zlib.error) as exc:
                yield rules.error(lineno + 1, _break_reason(exc, lineno))
                return
            lineno += 1
            if overlong:
                yield rules.error(
                    lineno,
                    f"oversized: line is longer than max_line_bytes={max_line_bytes} bytes",
                    raw=line.decode("utf-8", errors="backslashreplace"),
                )
                continue
            item = _jsonl_line(rules, line, lineno)
            if item is not None:  # None: a truly empty line
                yield item


def _jsonl_line(rules: _Rules, line: bytes, lineno: int) -> Document | DocumentError | None:
    if line.endswith(b"\r"):
        line = line[:-1]
    if lineno == 1 and line.startswith(b"\xef\xbb\xbf"):
        line = line[3:]
    if not line:
        return None
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return rules.error(
            lineno,
            f"invalid_utf8: byte 0x{line[exc.start]:02x} at byte offset {exc.start} is not valid UTF-8 ({exc.reason})",
            raw=line[:_RAW_HEAD].decode("utf-8", errors="backslashreplace"),
        )
    try:
        obj = json.loads(text, parse_float=JsonNumber, parse_int=_json_integer)
    except RecursionError:
        return rules.error(lineno, "malformed_json: nesting too deep", raw=text)
    except ValueError as exc:  # JSONDecodeError
        return rules.error(lineno, f"malformed_json: {_detail(exc)}", raw=text)
    if not isinstance(obj, dict):
        hint = ""
        if isinstance(obj, list) and obj and all(isinstance(item, dict) for item in obj):
            hint = f" of {len(obj)} objects: documents as a JSON array? {_jq(os.path.basename(rules.source), _EACH)}"
        return rules.error(lineno, f"not_object: expected a JSON object, got {_type_name(obj)}{hint}", raw=text)
    # Lone surrogates can only come from \u escapes; skip the check otherwise.
    return rules.build(obj, lineno, text, check_unicode="\\u" in text or "\\U" in text)


def _json_integer(literal: str) -> int | JsonInteger:
    """An int, or past Python's digit limit for converting one (4,300 by default) a JsonInteger that
    keeps its digits: JSON sets no such limit, so the document stays valid."""
    try:
        return int(literal)
    except ValueError:
        return JsonInteger(literal)


# ---- parquet


def _read_parquet(rules: _Rules, chunk_rows: int) -> Iterator[Document | DocumentError]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        # absolute, not normalised as text (a/link/.. is where the system finds it): a relative
        # "a:b.parquet" is no URI; no pre-buffering, so a row group is read a page at a time, not whole
        # (a file written as one row group would otherwise need about its size)
        pf = pq.ParquetFile(os.path.join(os.getcwd(), rules.source), pre_buffer=False, buffer_size=1 << 20)
        names = set(pf.schema_arrow.names)
        group_rows = [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)]
    except OSError as exc:
        yield rules.error(0, f"read_error: cannot open file: {exc.strerror or _detail(exc)}")
        return
    except (pa.ArrowException, UnicodeDecodeError) as exc:  # a column name in the footer may not be UTF-8
        yield rules.error(0, f"corrupt_file: not a readable parquet file ({type(exc).__name__}: {_detail(exc)})")
        return
    wanted = [rules.id_field, rules.text_field, *rules.keep_fields]
    columns = [c for c in dict.fromkeys(wanted) if c in names]
    for name in columns:
        if (times := pf.schema_arrow.names.count(name)) > 1:
            yield rules.error(0, f"duplicate_column: column {name!r} appears {times} times in the file's schema, "
                                 f"so which one holds the documents' values is unknown; no row was read")
            pf.close()
            return
    text_columns = {rules.id_field, rules.text_field}
    intervals = _interval_columns(pf, [c for c in columns if c not in text_columns])  # an id or text of them is refused
    position = 0  # next row index to yield
    try:
        # One row group at a time, so a corrupt row group costs only its own rows.
        group_start = 0
        for group, nrows in enumerate(group_rows):
            group_end = group_start + nrows
            try:
                for batch in pf.iter_batches(
                    batch_size=chunk_rows, row_groups=[group], columns=columns, use_threads=False
                ):
                    cols = {name: _iso_intervals(batch.column(name)) if name in intervals
                            else _column_values(batch.column(name), name in text_columns) for name in columns}
                    for i in range(batch.num_rows):
                        row = {name: values[i] for name, values in cols.items()}
                        yield _parquet_row(rules, row, position)
                        position += 1
            except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
                yield rules.error(
                    position,
                    f"corrupt_file: row group {group} is unreadable from row {position} on "
                    f"({type(exc).__name__}: {_detail(exc)}); rows {position} to {group_end - 1} "
                    "could not be read",
                )
            else:
                if position < group_end:  # a damaged column chunk can read as fewer rows, without an error
                    yield rules.error(
                        position,
                        f"corrupt_file: row group {group} yielded {position - group_start} of the {nrows} rows "
                        f"its metadata lists; rows {position} to {group_end - 1} could not be read",
                    )
            position = group_start = group_end
    finally:
        pf.close()


class _Unreadable:
    """A parquet value with no Python form: ``problem`` is the reason after the column name."""

    __slots__ = ("problem", "shown")

    def __init__(self, scalar, exc: Exception) -> None:
        if isinstance(exc, UnicodeDecodeError):
            self.problem = ("invalid_utf8", f"byte 0x{exc.object[exc.start]:02x} at byte offset {exc.start} "
                            f"is not valid UTF-8 ({exc.reason})")
            self.shown = exc.object.decode("utf-8", errors="backslashreplace")
        else:
            self.problem = ("unreadable_value", f"a {scalar.type} value has no Python form "
                            f"({type(exc).__name__}: {_detail(exc)})")
            self.shown = f"<unreadable {scalar.type}>"


def _column_values(column, text: bool = False) -> list:
    """A column's Python values; a value without a Python form becomes ``_Unreadable``.

    Parquet writers do not all check UTF-8, and Arrow holds dates and times
    Python cannot, so one bad value must not cost the other rows of its batch.
    With ``text`` (the id and text columns) binary values are read as UTF-8:
    Impala, older Hive and Spark write strings as binary without the UTF-8 mark.
    """
    import pyarrow as pa

    if text and pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if text and (pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)
                 or pa.types.is_binary_view(column.type)):
        try:
            return column.cast(pa.large_string()).to_pylist()  # the cast checks UTF-8
        except pa.ArrowInvalid:
            return [_utf8_value(scalar) for scalar in column]
    if pa.types.is_float32(column.type) or pa.types.is_float16(column.type):
        return _short_floats(column)
    if pa.types.is_time64(column.type) and column.type.unit == "ns":  # datetime.time stops at microseconds
        return column.cast(pa.string()).to_pylist()
    if not text and pa.types.is_duration(column.type):  # kept fields only: an id or text of times is refused
        return _iso_durations(column)
    if not text and (pa.types.is_timestamp(column.type) or pa.types.is_time(column.type)):
        # ISO 8601 with the column unit's digits on every row: Python's drops a zero fraction
        spec = _TIMESPEC[column.type.unit]
        return [value.isoformat(timespec=spec) if isinstance(value, (datetime.datetime, datetime.time)) else value
                for value in _python_values(column)]
    return _python_values(column)


_TIMESPEC = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}


def _python_values(column) -> list:
    try:
        return column.to_pylist(maps_as_pydicts="strict")
    except (UnicodeDecodeError, OverflowError, ValueError, KeyError, TypeError):
        values = []
        for scalar in column:
            try:
                values.append(_scalar_value(scalar))
            except (UnicodeDecodeError, OverflowError, ValueError) as exc:
                values.append(_Unreadable(scalar, exc))
        return values


def _iso_durations(column) -> list:
    """ISO 8601 durations in seconds with the unit's digits ("PT5.000123S" for microseconds), one form
    for every row and unit (Python gives "0:00:05.000123", pandas "0 days 00:00:05.000123")."""
    import pyarrow as pa

    digits = {"s": 0, "ms": 3, "us": 6, "ns": 9}[column.type.unit]
    values = []
    for count in column.cast(pa.int64()).to_pylist():
        if count is None:
            values.append(None)
            continue
        seconds, fraction = divmod(abs(count), 10**digits)
        values.append(f"{'-' if count < 0 else ''}PT{seconds}{f'.{fraction:0{digits}d}' if digits else ''}S")
    return values


def _interval_columns(pf, names: list[str]) -> set[str]:
    """Which of ``names`` hold parquet's INTERVAL (DuckDB writes one): Arrow reads it as 12 bytes."""
    leaves = (pf.schema.column(i) for i in range(len(pf.schema)))
    return {leaf.path for leaf in leaves if leaf.converted_type == "INTERVAL" and leaf.path in names}


def _iso_intervals(column) -> list:
    """Parquet INTERVAL values (months, days, milliseconds: little-endian uint32s) as ISO 8601, one form
    for every row ("P1M2DT5.678S"): months and days have no fixed length in seconds."""
    values = []
    for value in column.to_pylist():
        if value is None:
            values.append(None)
            continue
        months, days, millis = struct.unpack("<III", value)
        seconds, fraction = divmod(millis, 1000)
        values.append(f"P{months}M{days}DT{seconds}.{fraction:03d}S")
    return values


def _utf8_value(scalar) -> str | _Unreadable | None:
    value = scalar.as_py()
    try:
        return None if value is None else value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _Unreadable(scalar, exc)


def _short_floats(column) -> list:
    """A float32 or float16 column's values with the digits its writer meant ("0.1"), not those of
    the float64 Python widens them to ("0.10000000149011612"); NaN and infinities stay floats."""
    import numpy as np

    numbers = column.to_numpy(zero_copy_only=False)  # null -> NaN, so nulls are taken from the mask
    nulls = column.is_null().to_numpy(zero_copy_only=False)
    return [None if null else JsonNumber(_short_float_text(number)) if np.isfinite(number) else float(number)
            for number, null in zip(numbers, nulls)]


def _short_float_text(number) -> str:
    # without a fraction an integer, as a double column's is (records.kept_value), so that the same
    # value reads the same whatever width of float a writer chose
    whole = whole_float_text(number)
    return str(number) if whole is None else whole


def _scalar_value(scalar) -> Any:
    """Maps read as dicts, as JSON writes them; a map with a repeated or unhashable (struct, list)
    key has no dict form and stays a list of its key-value pairs."""
    try:
        return scalar.as_py(maps_as_pydicts="strict")
    except (KeyError, TypeError):
        return scalar.as_py()


def _parquet_row(rules: _Rules, row: dict, position: int) -> Document | DocumentError:
    bad = next((name for name, value in row.items() if isinstance(value, _Unreadable)), None)
    if bad is not None:
        kind, detail = row[bad].problem
        doc = rules.error(position, f"{kind}: column {bad!r}: {detail}", _own_id(row.get(rules.id_field)))
    else:
        doc = rules.build(row, position, None, check_unicode=False)
    if isinstance(doc, DocumentError):
        plain = {k: _plain(v) for k, v in row.items()}
        doc.raw = _cut(json.dumps(plain, ensure_ascii=False))
    return doc


def _plain(value: Any) -> Any:
    if isinstance(value, _Unreadable):
        return value.shown
    if value is None or isinstance(value, (str, int, float)):
        return value
    try:
        return kept_value(value)
    except RecursionError:
        return "<nested too deep>"
