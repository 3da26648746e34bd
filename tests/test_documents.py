"""Document sources: input expansion and streaming JSONL / gzip / parquet reading."""

from __future__ import annotations

import datetime
import decimal
import gzip
import json
import os
import random
import re
import shutil
import uuid
from collections import Counter

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nerbatch import documents
from nerbatch.documents import (
    REASON_KINDS,
    Document,
    DocumentError,
    expand_inputs,
    read_documents,
    reason_kind,
)
from nerbatch.errors import InputError, NerbatchError
from nerbatch.records import kept_value, validate_record


def write_jsonl(path, rows, *, gz=False):
    """rows: dicts (dumped) or bytes (written verbatim); one per line."""
    data = b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)
    path.write_bytes(gzip.compress(data) if gz else data)
    return str(path)


def split(items):
    docs = [x for x in items if isinstance(x, Document)]
    errs = [x for x in items if isinstance(x, DocumentError)]
    assert len(docs) + len(errs) == len(items)
    return docs, errs


# --------------------------------------------------------------------------- bad corpus

BAD_CORPUS = [
    # (line bytes, expected kind or None for a good document)
    (b'{"id": "a1", "text": "Angela Merkel visited Paris.", "lang": "en"}', None),
    (b"", "skip"),  # truly empty: skipped silently
    (b"   \t", "malformed_json"),  # whitespace-only is not skipped
    (b'{"id": "a2", "text": "unterminated', "malformed_json"),
    (b"[1, 2, 3]", "not_object"),
    (b'"just a string"', "not_object"),
    (b'{"id": "a3", "body": "no text field"}', "missing_text"),
    (b'{"id": "a4", "text": null}', "missing_text"),
    (b'{"id": "a5", "text": ""}', "empty_text"),
    (b'{"id": "a6", "text": " \\n\\t "}', "empty_text"),
    (b'{"id": "a7", "text": 42}', "non_string_text"),
    (b'{"id": "a8", "text": ["a", "b"]}', "non_string_text"),
    (b'{"id": "a9", "text": "caf\xe9 latin-1 byte"}', "invalid_utf8"),
    (b'{"id": "a10", "text": "' + b"x" * 101 + b'"}', "oversized"),
    (b'{"id": "a11", "text": "lone \\ud800 surrogate"}', "invalid_unicode"),
    (b'{"id": true, "text": "boolean id"}', "invalid_id"),
    (b'{"id": "  ", "text": "blank id"}', "invalid_id"),
    (b'{"id": 1.5, "text": "float id"}', "invalid_id"),
    (b"[" * 100_000 + b"]" * 100_000, "malformed_json"),  # nesting too deep
    (b'{"id": 7, "text": "integer id"}', None),
    (b'{"text": "no id at all"}', None),
    (b'{"id": null, "text": "null id", "lang": {"iso": "de"}}', None),
    (b'{"id": "a12", "text": "' + b"y" * 100 + b'"}', None),  # exactly max_doc_chars
    (b'{"id": "a13", "text": "\xc3\xa9t\xc3\xa9 \\u00e9 \\ud83d\\ude00 ok"}', None),  # valid pair
]


def test_bad_corpus_gives_exact_errors_and_documents(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [line for line, _ in BAD_CORPUS])
    items = list(read_documents(path, keep_fields=["lang"], max_doc_chars=100))
    docs, errs = split(items)

    expected_errors = Counter(k for _, k in BAD_CORPUS if k not in (None, "skip"))
    assert Counter(reason_kind(e.reason) for e in errs) == expected_errors
    assert len(errs) == 17
    assert {reason_kind(e.reason) for e in errs} <= set(REASON_KINDS)

    # Positions are physical 1-based line numbers, blank line included.
    expected_positions = [i + 1 for i, (_, k) in enumerate(BAD_CORPUS) if k != "skip"]
    assert [x.position for x in items] == expected_positions
    by_pos = {x.position: x for x in items}
    for i, (_, kind) in enumerate(BAD_CORPUS, start=1):
        if kind is None:
            assert isinstance(by_pos[i], Document), by_pos[i]
        elif kind != "skip":
            assert reason_kind(by_pos[i].reason) == kind, by_pos[i]

    assert [d.doc_id for d in docs] == ["a1", "7", "mixed.jsonl:21", "mixed.jsonl:22", "a12", "a13"]
    assert docs[0].fields == {"lang": "en"}
    assert docs[1].fields == {"lang": None}
    assert docs[3].fields == {"lang": '{"iso":"de"}'}
    assert docs[5].text == "été é \U0001f600 ok"
    assert all(d.source == path for d in items)

    # Error details: own id when readable, raw line when known, one line each.
    assert by_pos[7].doc_id == "a3" and by_pos[7].reason == "missing_text: 'text' is missing"
    assert by_pos[8].reason == "missing_text: 'text' is null"
    assert by_pos[9].reason == "empty_text: 'text' is empty"
    assert by_pos[10].reason == "empty_text: 'text' is whitespace-only"
    assert by_pos[11].reason == "non_string_text: 'text' is an integer, not a string"
    assert by_pos[5].reason == "not_object: expected a JSON object, got an array"
    assert by_pos[14].reason == "oversized: 'text' has 101 characters, more than max_doc_chars=100"
    assert by_pos[13].raw == '{"id": "a9", "text": "caf\\xe9 latin-1 byte"}'
    assert by_pos[13].doc_id is None
    assert by_pos[16].doc_id is None and "boolean" in by_pos[16].reason
    assert by_pos[19].reason == "malformed_json: nesting too deep"
    assert len(by_pos[19].raw) == documents.RAW_LIMIT
    assert all("\n" not in e.reason for e in errs)


def test_whole_corpus_is_accounted_for_in_gzip_too(tmp_path):
    lines = [line for line, _ in BAD_CORPUS]
    plain = list(read_documents(write_jsonl(tmp_path / "c.jsonl", lines), max_doc_chars=100))
    gz = list(read_documents(write_jsonl(tmp_path / "c.jsonl.gz", lines, gz=True), max_doc_chars=100))
    assert [(type(x), x.position, getattr(x, "reason", None)) for x in gz] == [
        (type(x), x.position, getattr(x, "reason", None)) for x in plain
    ]


def test_blank_lines_crlf_and_bom(tmp_path):
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"text": "first"}\r\n\r\n\n{"text": "fourth"}\r\n{"text": "no newline at end"}')
    docs, errs = split(list(read_documents(str(path))))
    assert errs == []
    assert [(d.position, d.text) for d in docs] == [(1, "first"), (4, "fourth"), (5, "no newline at end")]


def test_unicode_line_separators_do_not_split_lines(tmp_path):
    path = tmp_path / "u.jsonl"
    path.write_bytes('{"text": "a\u2028b\u0085c"}\n'.encode())
    [doc] = read_documents(str(path))
    assert doc.text == "a\u2028b\u0085c" and doc.position == 1


def test_generated_ids_are_stable_across_folders_and_runs(tmp_path):
    rows = [{"text": "one"}, {"id": 12, "text": "two"}, {"id": None, "text": "three"}]
    a = write_jsonl(tmp_path / "news.jsonl", rows)
    (tmp_path / "elsewhere").mkdir()
    b = shutil.copy(a, tmp_path / "elsewhere" / "news.jsonl")
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        rel = [d.doc_id for d in read_documents("news.jsonl")]
    finally:
        os.chdir(cwd)
    ids_a = [d.doc_id for d in read_documents(a)]
    ids_b = [d.doc_id for d in read_documents(str(b))]
    assert ids_a == ids_b == rel == ["news.jsonl:1", "12", "news.jsonl:3"]


def test_custom_field_names_and_keep_fields(tmp_path):
    rows = [
        {"uid": "u1", "body": "Text one.", "title": "T1", "n": 3, "flag": True},
        {"uid": "u2", "body": "Text two.", "text": "ignored"},
    ]
    path = write_jsonl(tmp_path / "f.jsonl", rows)
    docs = list(read_documents(path, id_field="uid", text_field="body", keep_fields=["title", "n", "flag"]))
    assert [(d.doc_id, d.text) for d in docs] == [("u1", "Text one."), ("u2", "Text two.")]
    assert docs[0].fields == {"title": "T1", "n": "3", "flag": "true"}
    assert docs[1].fields == {"title": None, "n": None, "flag": None}


def test_gzip_detected_by_magic_bytes(tmp_path):
    path = tmp_path / "disguised.jsonl"
    path.write_bytes(gzip.compress(b'{"text": "compressed"}\n'))
    [doc] = read_documents(str(path))
    assert doc.text == "compressed"


def test_multi_member_gzip(tmp_path):
    path = tmp_path / "m.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"text": "a"}\n') + gzip.compress(b'{"text": "b"}\n') + b"\0" * 8)
    assert [d.text for d in read_documents(str(path))] == ["a", "b"]


def test_truncated_gzip_keeps_lines_before_the_break(tmp_path):
    rnd = random.Random(7)
    rows = [{"id": i, "text": "".join(rnd.choice("abcdefghij ") for _ in range(60))} for i in range(3000)]
    full = tmp_path / "full.jsonl.gz"
    write_jsonl(full, rows, gz=True)
    data = full.read_bytes()
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(data[: len(data) // 2])

    docs, errs = split(list(read_documents(str(cut))))
    assert len(errs) == 1
    err = errs[0]
    assert reason_kind(err.reason) == "corrupt_file"
    assert "truncated" in err.reason
    # Every decompressible line before the break comes out; the break is the next line.
    assert 1200 < len(docs) < 1500
    assert [d.doc_id for d in docs] == [str(i) for i in range(len(docs))]
    assert err.position == len(docs) + 1
    assert err.raw is None


@pytest.mark.parametrize("rows", [100, 40_000])
def test_a_gzip_file_that_fails_its_checksum_or_a_block_keeps_every_line_before(tmp_path, rows):
    # zlib gives nothing of a call that fails: a bad checksum in the trailer lost up to 1 MiB of good
    # lines (a file of one article, all of it).
    docs = [{"id": f"d{i}", "text": "Angela Merkel visited Paris."} for i in range(rows)]
    write_jsonl(tmp_path / "ok.jsonl.gz", docs, gz=True)
    data = bytearray((tmp_path / "ok.jsonl.gz").read_bytes())
    data[-8] ^= 0xFF  # the CRC-32 of the trailer
    (tmp_path / "crc.jsonl.gz").write_bytes(bytes(data))
    read, errs = split(list(read_documents(str(tmp_path / "crc.jsonl.gz"))))
    assert [d.doc_id for d in read] == [d["id"] for d in docs]
    assert [(e.position, reason_kind(e.reason)) for e in errs] == [(rows + 1, "corrupt_file")]
    assert "incorrect data check" in errs[0].reason and errs[0].reason.endswith("may be damaged")
    data = bytearray((tmp_path / "ok.jsonl.gz").read_bytes())
    data[len(data) * 3 // 4:len(data) * 3 // 4 + 64] = b"\xff" * 64  # a corrupt block
    (tmp_path / "block.jsonl.gz").write_bytes(bytes(data))
    read, errs = split(list(read_documents(str(tmp_path / "block.jsonl.gz"))))
    # the lines before the damage whole (after it, before zlib notices, its output may be anything: lines
    # of garbage are errors of their own), then the break
    assert len(read) > rows // 2 and [d.doc_id for d in read[:rows // 2]] == [d["id"] for d in docs[:rows // 2]]
    assert sorted(d.position for d in read + errs[:-1]) == list(range(1, len(read) + len(errs)))
    assert (errs[-1].position, reason_kind(errs[-1].reason)) == (len(read) + len(errs), "corrupt_file")


def test_corrupt_gzip_data(tmp_path):
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(b'{"text": "not actually gzip"}\n')
    [err] = read_documents(str(path))
    assert isinstance(err, DocumentError)
    assert err.position == 0 and err.reason == ("corrupt_file: the file is named .gz but holds no gzip data; if it "
                                                "is plain JSON Lines, rename it without .gz")


@pytest.mark.parametrize("content", [b"", b"\0" * 4096, b"\0" * 8 + gzip.compress(b'{"text": "a"}\n')],
                         ids=["empty", "zeroed", "zeros-before-member"])
def test_a_gzip_file_without_a_member_at_its_start_is_corrupt_not_empty(tmp_path, content):
    # A crashed writer or a zeroed disk block leaves such files; reading them as "no documents"
    # would let a run end complete with their documents lost.  gzip(1) refuses them too.
    path = tmp_path / "x.jsonl.gz"
    path.write_bytes(content)
    [err] = read_documents(str(path))
    assert isinstance(err, DocumentError) and err.position == 1
    assert err.reason.startswith("corrupt_file: invalid gzip data")


def test_overlong_line_is_reported_without_holding_it(tmp_path):
    path = tmp_path / "long.jsonl"
    path.write_bytes(b'{"text": "' + b"z" * 300_000 + b'"}\n{"text": "after"}\n')
    items = list(read_documents(str(path), max_line_bytes=10_000))
    err, doc = items
    assert err.reason == "oversized: line is longer than max_line_bytes=10000 bytes"
    assert err.position == 1 and len(err.raw) == documents.RAW_LIMIT
    assert doc.text == "after" and doc.position == 2


def test_the_line_limit_leaves_room_for_the_longest_text_allowed(tmp_path):
    # 12 million characters that json.dumps writes as \uXXXX escapes: a 72 MB line, past the 64 MiB floor
    path = tmp_path / "escaped.jsonl"
    path.write_text(json.dumps({"id": "cjk", "text": "東" * 12_000_000}) + "\n", encoding="ascii")
    assert path.stat().st_size > documents.DEFAULT_MAX_LINE_BYTES
    [doc] = read_documents(str(path), max_doc_chars=20_000_000)
    assert doc.doc_id == "cjk" and len(doc.text) == 12_000_000
    [err] = read_documents(str(path))  # the default 1,000,000 characters: the line is refused unread
    assert err.reason == f"oversized: line is longer than max_line_bytes={documents.DEFAULT_MAX_LINE_BYTES} bytes"


def test_split_lines_agrees_with_split_for_any_chunking():
    rnd = random.Random(3)
    for _ in range(500):
        lines = [bytes(rnd.choice(b"ab\r") for _ in range(rnd.randint(0, 12))) for _ in range(rnd.randint(0, 8))]
        blob = b"\n".join(lines) + rnd.choice([b"", b"\n"])
        cuts = sorted(rnd.sample(range(len(blob) + 1), min(rnd.randint(0, 5), len(blob) + 1)))
        chunks = [blob[i:j] for i, j in zip([0, *cuts], [*cuts, len(blob)])]
        expected = blob.split(b"\n")
        if expected[-1] == b"":
            expected.pop()
        want = [(x, False) if len(x) <= 6 else (x, True) for x in expected]
        assert list(documents._split_lines(iter(chunks), 6)) == want


def test_missing_file_yields_read_error(tmp_path):
    [err] = read_documents(str(tmp_path / "gone.jsonl"))
    assert err.position == 0 and err.reason.startswith("read_error: cannot open file")


@pytest.mark.parametrize(
    "kwargs",
    [{"max_doc_chars": 0}, {"chunk_rows": 0}, {"max_line_bytes": -1}, {"text_field": ""}, {"id_field": None},
     {"keep_fields": None}, {"keep_fields": [1]}, {"keep_fields": ["title", ""]}, {"path": None}, {"path": ""}],
)
def test_invalid_arguments_raise_input_error_eagerly(tmp_path, kwargs):
    kwargs = {"path": str(tmp_path / "x.jsonl"), **kwargs}
    with pytest.raises(InputError):
        read_documents(**kwargs)


def test_a_path_object_is_read_as_its_string(tmp_path):
    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"text": ["Angela Merkel visited Paris."]}), path)
    [doc] = read_documents(path)
    assert (doc.doc_id, doc.source) == ("docs.parquet:0", str(path))


# --------------------------------------------------------------------------- parquet


def test_parquet_documents_positions_ids_and_errors(tmp_path):
    table = pa.table(
        {
            "id": pa.array([10, None, 12, 13, 14, None], pa.int64()),
            "text": ["Berlin is big.", "No id here.", "", None, "  ", "x" * 15],
            "ts": pa.array([0, 1, 2, 3, 4, 5], pa.timestamp("s")),
            "blob": [b"\x00"] * 6,
        }
    )
    path = tmp_path / "docs.parquet"
    pq.write_table(table, path, row_group_size=4)
    items = list(read_documents(str(path), keep_fields=["ts", "missing"], max_doc_chars=14, chunk_rows=3))
    docs, errs = split(items)
    assert [x.position for x in items] == [0, 1, 2, 3, 4, 5]  # 0-based row index
    assert [(d.doc_id, d.text) for d in docs] == [("10", "Berlin is big."), ("docs.parquet:1", "No id here.")]
    assert docs[0].fields == {"ts": "1970-01-01T00:00:00.000", "missing": None}  # parquet keeps ms
    assert [reason_kind(e.reason) for e in errs] == ["empty_text", "missing_text", "empty_text", "oversized"]
    assert [e.doc_id for e in errs] == ["12", "13", "14", None]
    assert json.loads(errs[0].raw) == {"id": 12, "text": "", "ts": "1970-01-01T00:00:02.000"}


def test_parquet_without_text_column_reports_every_row(tmp_path):
    path = tmp_path / "notext.parquet"
    pq.write_table(pa.table({"body": ["a", "b", "c"]}), path)
    errs = list(read_documents(str(path)))
    assert [(e.position, e.reason) for e in errs] == [(i, "missing_text: 'text' is missing") for i in range(3)]


def test_parquet_non_string_text_column(tmp_path):
    path = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"text": [1, 2]}), path)
    assert [reason_kind(e.reason) for e in read_documents(str(path))] == ["non_string_text"] * 2


def test_not_a_parquet_file(tmp_path):
    path = tmp_path / "fake.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    [err] = read_documents(str(path))
    assert err.position == 0 and err.reason.startswith("corrupt_file: not a readable parquet file")


def test_corrupt_parquet_row_group_costs_only_that_group(tmp_path):
    n = 1000
    path = tmp_path / "rg.parquet"
    pq.write_table(pa.table({"id": list(range(n)), "text": [f"doc {i} " * 3 for i in range(n)]}), path, row_group_size=250)
    col = pq.ParquetFile(path).metadata.row_group(2).column(1)
    start = col.dictionary_page_offset or col.data_page_offset
    data = bytearray(path.read_bytes())
    data[start : start + col.total_compressed_size] = b"\xff" * col.total_compressed_size
    path.write_bytes(bytes(data))

    items = list(read_documents(str(path), chunk_rows=100))
    docs, errs = split(items)
    assert len(errs) == 1
    assert errs[0].position == 500
    assert errs[0].reason.startswith("corrupt_file: row group 2 is unreadable from row 500 on")
    assert errs[0].reason.endswith("rows 500 to 749 could not be read")
    assert "\n" not in errs[0].reason
    assert [d.position for d in docs] == list(range(500)) + list(range(750, 1000))


def _footer_flip_that_drops_rows(data: bytes) -> bytes:
    """``data`` with one footer byte changed so that the last row group reads as fewer rows, silently."""
    import io

    footer_start = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    for offset in range(footer_start, len(data) - 8):
        damaged = bytearray(data)
        damaged[offset] = 181
        try:
            pf = pq.ParquetFile(io.BytesIO(bytes(damaged)))
            listed = [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)]
            read = sum(b.num_rows for b in pf.iter_batches(row_groups=[len(listed) - 1]))
        except Exception:
            continue
        if listed == [100, 100, 100] and read < 100:
            return bytes(damaged)
    raise AssertionError("no footer byte makes pyarrow read the last row group short without an error")


def test_parquet_row_group_read_short_is_an_error_not_a_silent_loss(tmp_path):
    import io

    table = pa.table({"id": [f"d{i}" for i in range(300)], "text": [f"Obama visited Paris {i} ." for i in range(300)]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=100, compression="zstd")
    path = tmp_path / "bitrot.parquet"
    path.write_bytes(_footer_flip_that_drops_rows(buffer.getvalue()))

    docs, errs = split(list(read_documents(str(path))))
    assert 200 <= len(docs) < 300 and [e.position for e in errs] == [len(docs)]
    assert errs[0].reason.startswith("corrupt_file: row group 2 yielded")
    assert errs[0].reason.endswith(f"rows {errs[0].position} to 299 could not be read")
    assert [d.position for d in docs] == list(range(len(docs)))


def test_parquet_column_name_that_is_not_utf8_costs_only_its_file(tmp_path):
    path = tmp_path / "badname.parquet"
    pq.write_table(pa.table({"id": ["a"], "text": ["Paris ."], "zzzz": [1]}), path, store_schema=False)
    path.write_bytes(path.read_bytes().replace(b"zzzz", b"\xff\xfezz"))
    [err] = read_documents(str(path))
    assert err.position == 0 and err.reason.startswith("corrupt_file: not a readable parquet file (UnicodeDecodeError")


def test_parquet_is_streamed_in_batches_of_needed_columns(tmp_path, monkeypatch):
    rows = 50_000
    path = tmp_path / "big.parquet"
    table = pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "text": pa.array([f"Document {i} about Lisbon and Porto." for i in range(rows)]),
            "blob": pa.array([b"\x01" * 200] * rows),  # ~10 MB the reader must never load
        }
    )
    pq.write_table(table, path, row_group_size=5_000)
    del table

    calls = []
    real = pq.ParquetFile.iter_batches

    def spy(self, *args, **kwargs):
        calls.append(kwargs)
        for batch in real(self, *args, **kwargs):
            calls[-1].setdefault("sizes", []).append(batch.num_rows)
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    monkeypatch.setattr(pq.ParquetFile, "read", lambda *a, **k: pytest.fail("whole-file read"))
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: pytest.fail("whole-file read"))

    before = pa.total_allocated_bytes()
    it = read_documents(str(path), chunk_rows=1000)
    first = next(it)
    in_flight = pa.total_allocated_bytes() - before
    assert first.doc_id == "0" and first.text.startswith("Document 0")
    # One row group of id+text is ~0.7 MB; the whole id+text table ~3 MB; with the blob ~10 MB.
    assert in_flight < 1_500_000

    count = 1 + sum(1 for _ in it)
    assert count == rows
    assert len(calls) == 10  # one call per row group, streamed
    assert all(c["columns"] == ["id", "text"] and c["batch_size"] == 1000 for c in calls)
    assert all(max(c["sizes"]) <= 1000 for c in calls)


# --------------------------------------------------------------------------- inputs


@pytest.fixture
def corpus(tmp_path):
    (tmp_path / "news").mkdir()
    (tmp_path / "news" / "sub").mkdir()
    for name in ["b.jsonl", "a.jsonl", "c.jsonl.gz", "d.parquet", "f.NDJSON", "g.pq", "h.ndjson.gz", "notes.txt",
                 ".hidden.jsonl", "sub/e.jsonl"]:
        (tmp_path / "news" / name).write_bytes(b"")
    return tmp_path


def test_expand_folder_glob_and_file(corpus, monkeypatch):
    monkeypatch.chdir(corpus)
    assert expand_inputs(["news"]) == [
        os.path.join("news", n) for n in ["a.jsonl", "b.jsonl", "c.jsonl.gz", "d.parquet", "f.NDJSON", "g.pq",
                                          "h.ndjson.gz"]
    ]
    assert expand_inputs(["news/*.jsonl"]) == ["news/a.jsonl", "news/b.jsonl"]
    assert expand_inputs(["news/**/*.jsonl"]) == ["news/a.jsonl", "news/b.jsonl", "news/sub/e.jsonl"]
    # An explicit file is taken whatever its name; argument order is kept, duplicates dropped.
    assert expand_inputs(["news/notes.txt", "news/*.jsonl", "news/a.jsonl", "./news/b.jsonl", "news"]) == [
        "news/notes.txt",
        "news/a.jsonl",
        "news/b.jsonl",
        "news/c.jsonl.gz",
        "news/d.parquet",
        "news/f.NDJSON",
        "news/g.pq",
        "news/h.ndjson.gz",
    ]
    assert expand_inputs("news/d.parquet") == ["news/d.parquet"]
    os.link("news/a.jsonl", "a-copy.jsonl")  # the same file under a second name: read once
    os.symlink("news/b.jsonl", "b-link.jsonl")
    assert expand_inputs(["news/a.jsonl", "a-copy.jsonl", "b-link.jsonl", "news/b.jsonl"]) == [
        "news/a.jsonl", "b-link.jsonl",
    ]


def test_expand_inputs_errors_name_the_argument(corpus, monkeypatch):
    monkeypatch.chdir(corpus)
    (corpus / "empty").mkdir()
    cases = {
        "news/*.csv": "no input files match 'news/*.csv'",
        "nope.jsonl": "input 'nope.jsonl' does not exist",
        "empty": "input folder 'empty' holds no *.jsonl, *.jsonl.gz, *.ndjson, *.ndjson.gz, *.parquet, *.pq files",
    }
    for arg, message in cases.items():
        with pytest.raises(InputError) as info:
            expand_inputs(["news/a.jsonl", arg])
        assert str(info.value) == message
        assert isinstance(info.value, NerbatchError)
    with pytest.raises(InputError, match="no input given"):
        expand_inputs([])


def test_an_unreadable_entry_of_a_folder_or_glob_is_refused_by_name_not_skipped(tmp_path):
    # A dangling link, a link loop or a pipe among the inputs would otherwise cost its documents silently.
    folder = tmp_path / "news"
    folder.mkdir()
    write_jsonl(folder / "a.jsonl", [{"text": "Angela Merkel visited Paris."}])
    (folder / "sub.jsonl").mkdir()  # a folder that looks like an input is not one: folders are not recursed
    assert expand_inputs([str(folder)]) == [str(folder / "a.jsonl")]
    cases = {
        "gone.jsonl": ("symlink", r"cannot read input '.*/news/gone\.jsonl' \(from '.*'\): No such file"),
        "loop.jsonl": ("loop", r"cannot read input '.*/news/loop\.jsonl' \(from '.*'\): Too many levels"),
        "feed.jsonl": ("fifo", r"input '.*/news/feed\.jsonl' \(from '.*'\) is not a regular file"),
    }
    for name, (kind, message) in cases.items():
        entry = folder / name
        if kind == "symlink":
            os.symlink(tmp_path / "moved-away.jsonl", entry)
        elif kind == "loop":
            os.symlink(entry, entry)
        else:
            os.mkfifo(entry)
        for arg in (str(folder), str(folder / "*.jsonl")):
            with pytest.raises(InputError, match=message):
                expand_inputs([arg])
        with pytest.raises(InputError, match=re.escape(repr(str(entry)))):  # named alone, as before
            expand_inputs([str(entry)])
        entry.unlink()


def test_an_input_file_name_that_is_not_utf8_is_refused_by_name(tmp_path):
    folder = tmp_path / "latin"
    folder.mkdir()
    with open(os.fsencode(folder) + b"/caf\xe9.jsonl", "wb") as handle:  # a legal Linux name
        handle.write(b'{"id": "a", "text": "Angela Merkel visited Paris."}\n')
    for arg in (str(folder), str(folder / "*.jsonl")):
        with pytest.raises(InputError, match=r"input file name '.*/caf\\xe9\.jsonl' .* is not valid UTF-8"):
            expand_inputs([arg])


def test_expand_then_read_mixed_formats(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"text": "plain"}])
    write_jsonl(tmp_path / "b.jsonl.gz", [{"text": "gzipped"}], gz=True)
    pq.write_table(pa.table({"text": ["columnar"]}), tmp_path / "c.parquet")
    files = expand_inputs([str(tmp_path / "*")])
    texts = [d.text for f in files for d in read_documents(f)]
    assert texts == ["plain", "gzipped", "columnar"]


@pytest.mark.parametrize("dictionary_typed", [False, True], ids=["string", "dictionary"])
def test_invalid_utf8_parquet_string_costs_only_its_row(tmp_path, dictionary_typed):
    texts = [f"Row {i}: Angela Merkel spoke in Berlin.".encode() for i in range(300)]
    texts[150] = b"Row 150: Angela \xff Merkel"
    text = pa.array(texts, pa.binary()).view(pa.string())  # writers do not all check UTF-8
    if dictionary_typed:  # e.g. written from a pandas Categorical: the arrow schema keeps the type
        text = text.dictionary_encode()
    path = tmp_path / "bad-utf8.parquet"
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(300)], "text": text}), path, row_group_size=100)
    assert pa.types.is_dictionary(pq.read_schema(path).field("text").type) == dictionary_typed

    docs, errs = split(list(read_documents(str(path), chunk_rows=64)))
    assert [d.position for d in docs] == [i for i in range(300) if i != 150]
    [err] = errs
    assert (err.position, err.doc_id) == (150, "d150")
    assert err.reason.startswith("invalid_utf8: column 'text': byte 0xff at byte offset 16")
    assert json.loads(err.raw) == {"id": "d150", "text": "Row 150: Angela \\xff Merkel"}


def test_deeply_nested_kept_fields_never_stop_the_file(tmp_path):
    # Around Python's recursion limit a value parses but cannot be serialised
    # again for the record; the exact depth depends on the stack, so sweep it.
    depths = range(900, 1001)
    lines = [json.dumps({"id": f"d{n}", "text": "Paris."})[:-1] + ', "meta": ' + "[" * n + "]" * n + "}" for n in depths]
    path = tmp_path / "deep.jsonl"
    path.write_text("\n".join(lines) + "\n")
    items = list(read_documents(str(path), keep_fields=["meta"]))
    assert [item.position for item in items] == list(range(1, len(depths) + 1))
    docs, errs = split(items)
    assert docs and errs
    assert {reason_kind(e.reason) for e in errs} == {"malformed_json"}
    assert all(e.reason.endswith("too deep") for e in errs)


def test_a_pipe_is_refused_as_input(tmp_path):
    fifo = tmp_path / "docs.fifo"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        expand_inputs([str(fifo)])


def test_parquet_values_without_a_python_form_cost_only_their_row(tmp_path):
    far = 253402300800  # seconds: the year 10,000, past what Python's datetime can hold
    table = pa.table({
        "id": ["a", "b", "c", "d", "e"],
        "text": ["Angela Merkel spoke.", "In Berlin.", "On Monday.", "In Paris.", "In Rome."],
        "ts": pa.array([0, far, 0, 0, 0], pa.timestamp("s")),
        "took": pa.array([1, 1, 1, 10**15, 1], pa.duration("s")),
        "when": pa.array([[0], [0], [far], [0], [0]], pa.list_(pa.timestamp("s"))),
        # epoch milliseconds in a column of seconds: Arrow's own text of it would wrap the year
        "utc": pa.array([0, 0, 0, 0, 1_700_000_000_000], pa.timestamp("s", tz="UTC")),
    })
    path = tmp_path / "far.parquet"
    pq.write_table(table, path)

    docs, errs = split(list(read_documents(str(path), keep_fields=["ts", "took", "when", "utc"])))
    assert [d.doc_id for d in docs] == ["a", "d"]
    assert [d.fields["took"] for d in docs] == ["PT1S", "PT1000000000000000S"]  # a duration is a number of seconds
    assert [(e.position, e.doc_id) for e in errs] == [(1, "b"), (2, "c"), (4, "e")]
    assert errs[0].reason.startswith("unreadable_value: column 'ts': a timestamp[ms] value has no Python form")  # parquet keeps ms
    assert errs[1].reason.startswith("unreadable_value: column 'when': a list<element: timestamp[ms]> value has no "
                                     "Python form")
    assert errs[2].reason.startswith("unreadable_value: column 'utc'")
    assert json.loads(errs[0].raw)["ts"] == "<unreadable timestamp[ms]>"
    # the same columns not asked for are never converted
    assert len(list(read_documents(str(path)))) == 5


def test_narrow_floats_and_nanosecond_times_keep_the_values_written(tmp_path):
    # Widened to float64, a float32 0.1 reads 0.10000000149011612; datetime.time drops nanoseconds.
    table = pa.table({
        "text": ["Angela Merkel spoke."] * 5,
        "price": pa.array([0.1, 19.99, None, float("nan"), 3.4e38], pa.float32()),
        "half": pa.array([0.1, None, 1.5, float("inf"), 2.0], pa.float16()),
        "at": pa.array([3723000000001, 1, None, 0, 86399999999999], pa.time64("ns")),
    })
    path = tmp_path / "narrow.parquet"
    pq.write_table(table, path)
    docs = list(read_documents(str(path), keep_fields=["price", "half", "at"]))
    assert [d.fields for d in docs] == [
        {"price": "0.1", "half": "0.1", "at": "01:02:03.000000001"},
        {"price": "19.99", "half": None, "at": "00:00:00.000000001"},
        {"price": None, "half": "1.5", "at": None},
        {"price": "NaN", "half": "Infinity", "at": "00:00:00.000000000"},
        {"price": "3.4e+38", "half": "2", "at": "23:59:59.999999999"},  # whole: an integer, as a double's
    ]


def test_a_needed_parquet_column_named_twice_fails_the_file_by_name(tmp_path):
    arrays = [pa.array(["a"]), pa.array(["Angela Merkel spoke."]), pa.array(["x"]), pa.array(["y"])]
    path = tmp_path / "dup.parquet"
    pq.write_table(pa.Table.from_arrays(arrays, names=["id", "text", "text", "extra"]), path)
    [err] = list(read_documents(str(path)))
    assert (err.position, err.doc_id) == (0, None)
    assert err.reason.startswith("duplicate_column: column 'text' appears 2 times")

    other = tmp_path / "dup-unneeded.parquet"  # a repeated column nobody asked for is no problem
    pq.write_table(pa.Table.from_arrays(arrays, names=["id", "text", "extra", "extra"]), other)
    [doc] = list(read_documents(str(other)))
    assert doc.text == "Angela Merkel spoke."


def test_kept_json_numbers_keep_the_digits_their_document_wrote(tmp_path):
    path = tmp_path / "amounts.jsonl"
    path.write_text(
        '{"id": "a", "text": "Paid.", "amount": 1234567890123.4567891, "big": 1e400, "price": 19.90,'
        ' "n": 12345678901234567890123, "nested": {"x": [0.10, -2E-3, 7], "k": 1.0}, "nan": NaN}\n'
        '{"id": 1.5, "text": "Bad id."}\n{"id": "c", "text": 2.50}\n'
        # Integers longer than Python converts by default (4,300 digits): a valid document all the same.
        f'{{"id": "d", "text": "Long.", "unused": {"9" * 5000}, "huge": [-{"1" * 4400}]}}\n'
        f'{{"id": {"7" * 4301}, "text": "Long id."}}\n',
        encoding="utf-8",
    )
    doc, bad_id, bad_text, long, long_id = read_documents(
        str(path), keep_fields=["amount", "big", "price", "n", "nested", "nan", "huge"])
    assert long_id.doc_id == "7" * 4301
    assert doc.fields == {"amount": "1234567890123.4567891", "big": "1e400", "price": "19.90",
                          "n": "12345678901234567890123", "nested": '{"x":[0.10,-2E-3,7],"k":1.0}', "nan": "NaN",
                          "huge": None}
    assert long.doc_id == "d" and long.fields["huge"] == f'[-{"1" * 4400}]'
    assert bad_id.reason.startswith("invalid_id:") and "a number" in bad_id.reason
    assert bad_text.reason.startswith("non_string_text:") and "a number" in bad_text.reason


def test_a_parquet_map_is_kept_as_the_json_object_a_jsonl_document_gives(tmp_path):
    text = "Angela Merkel visited Paris."
    maps = pa.array([[("lang", "en"), ("src", "afp")], [(1, "x")][:0], [("k", "v"), ("k", "w")]],
                    pa.map_(pa.string(), pa.string()))
    numbered = pa.array([[(1, "one")], [], []], pa.map_(pa.int64(), pa.string()))
    path = tmp_path / "maps.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": [text] * 3, "attrs": maps, "by_n": numbered}), path)
    jsonl = write_jsonl(tmp_path / "maps.jsonl", [{"id": "a", "text": text, "attrs": {"lang": "en", "src": "afp"}}])

    a, b, c = read_documents(str(path), keep_fields=["attrs", "by_n"])
    [from_jsonl] = read_documents(str(jsonl), keep_fields=["attrs"])
    assert a.fields == {"attrs": '{"lang":"en","src":"afp"}', "by_n": '{"1":"one"}'}
    assert a.fields["attrs"] == from_jsonl.fields["attrs"]
    assert b.fields == {"attrs": "{}", "by_n": "{}"}
    assert c.fields["attrs"] == '[["k","v"],["k","w"]]'  # a repeated key has no object form: its pairs

    # keys that are not strings are written as JSON writes them, unhashable ones leave their pairs
    keyed = pa.table({"id": ["d"], "text": [text],
                      "at": pa.array([[(0, "x")]], pa.map_(pa.timestamp("s"), pa.string())),
                      "by_struct": pa.array([[({"k": 1}, "y")]], pa.map_(pa.struct([("k", pa.int32())]), pa.string()))})
    pq.write_table(keyed, tmp_path / "keys.parquet")
    [d] = read_documents(str(tmp_path / "keys.parquet"), keep_fields=["at", "by_struct"])
    assert d.fields == {"at": '{"1970-01-01T00:00:00":"x"}', "by_struct": '[[{"k":1},"y"]]'}
    assert kept_value({None: 1, True: 2, 1.5: 3, b"ab": 4}) == json.dumps({"null": 1, "true": 2, "1.5": 3, "ab": 4},
                                                                     separators=(",", ":"))


def test_nested_parquet_decimals_are_json_numbers_as_from_json_lines(tmp_path):
    amounts = pa.array([[decimal.Decimal("1.10"), decimal.Decimal("-2E+3")]], pa.list_(pa.decimal128(10, 2)))
    pq.write_table(pa.table({"text": ["Angela Merkel spoke."], "amounts": amounts,
                             "price": pa.array([decimal.Decimal("19.90")], pa.decimal128(10, 2))}), tmp_path / "d.parquet")
    (tmp_path / "d.jsonl").write_text('{"text": "Angela Merkel spoke.", "amounts": [1.10, -2000.00], "price": 19.90}\n')
    [from_parquet] = read_documents(str(tmp_path / "d.parquet"), keep_fields=["amounts", "price"])
    [from_jsonl] = read_documents(str(tmp_path / "d.jsonl"), keep_fields=["amounts", "price"])
    assert from_parquet.fields == from_jsonl.fields == {"amounts": "[1.10,-2000.00]", "price": "19.90"}


def test_whole_number_ids_are_integers_as_the_document_schema_says(tmp_path):
    # JSON Schema counts 1.0 as an integer; pandas writes an integer id column with a missing
    # value as float64, so every id of such a parquet file arrives as 7.0.
    path = tmp_path / "ids.jsonl"
    path.write_text(
        '{"id": 1.0, "text": "One."}\n{"id": 2e3, "text": "Two."}\n{"id": -0.0, "text": "Zero."}\n'
        '{"id": 1.5, "text": "Half."}\n{"id": 1e400, "text": "Beyond float64."}\n{"id": 0e5000, "text": "Zero."}\n'
        '{"id": Infinity, "text": "Infinite."}\n', encoding="utf-8")
    one, two, zero, half, huge, zero_again, infinite = read_documents(str(path))
    assert [one.doc_id, two.doc_id, zero.doc_id, huge.doc_id, zero_again.doc_id] == ["1", "2000", "0", "1" + "0" * 400, "0"]
    assert half.reason == infinite.reason == "invalid_id: 'id' is a number; expected a non-blank string or an integer"
    validate_record({"id": 1.0, "text": "One."}, "document.v1")  # raises if the schema disagrees

    frame = pd.DataFrame({"id": [7, None, 9, 2**53 + 2], "text": ["Seven.", "None.", "Nine.", "Big."]})
    parquet = tmp_path / "ids.parquet"
    frame.to_parquet(parquet)
    assert pq.read_schema(parquet).field("id").type == pa.float64()
    seven, missing, nine, big = read_documents(str(parquet))
    assert [seven.doc_id, missing.doc_id, nine.doc_id] == ["7", "ids.parquet:1", "9"]
    assert big.reason.startswith("invalid_id: 'id' is a floating-point number beyond 2**53")


def test_nested_nan_and_infinity_are_json_null_so_the_kept_field_stays_json(tmp_path):
    def strict(text):  # as Go, Java and JavaScript parse: NaN and Infinity are no JSON
        return json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in {text}"))

    (tmp_path / "m.jsonl").write_text(
        '{"text": "Angela Merkel spoke.", "m": [NaN, 1.5, {"x": -Infinity}], "top": NaN}\n', encoding="utf-8")
    pq.write_table(pa.table({
        "text": ["Angela Merkel spoke."],
        "m": pa.array([[float("nan"), 1.5, float("inf")]], pa.list_(pa.float64())),
        "d": pa.array([{"x": float("-inf")}], pa.struct([("x", pa.float32())])),
    }), tmp_path / "m.parquet")
    [from_jsonl] = read_documents(str(tmp_path / "m.jsonl"), keep_fields=["m", "top"])
    [from_parquet] = read_documents(str(tmp_path / "m.parquet"), keep_fields=["m", "d"])
    assert from_jsonl.fields == {"m": '[null,1.5,{"x":null}]', "top": "NaN"}  # the top level is text, as documented
    assert from_parquet.fields == {"m": "[null,1.5,null]", "d": '{"x":null}'}
    for text in (from_jsonl.fields["m"], *from_parquet.fields.values()):
        strict(text)


def test_parquet_ids_of_database_exports_and_binary_strings_are_read(tmp_path):
    # Spark and JDBC exports write number ids as decimal(38, 0), DuckDB and Iceberg have uuid columns,
    # and Impala or older Hive and Spark write strings as binary without the UTF-8 mark.
    text = "Angela Merkel met Emmanuel Macron in Berlin."
    first, second = uuid.uuid4(), uuid.uuid4()
    pq.write_table(pa.table({"id": pa.array([decimal.Decimal(12345), decimal.Decimal("1.50")], pa.decimal128(38, 2)),
                             "text": [text, text]}), tmp_path / "decimal.parquet")
    pq.write_table(pa.table({"id": pa.array([first.bytes, second.bytes], pa.uuid()), "text": [text, text]}),
                   tmp_path / "uuid.parquet")
    pq.write_table(pa.table({"id": pa.array([b"a", b"b\xff", b"c"], pa.binary()),
                             "text": pa.array([text.encode(), text.encode(), b"Berlin \xfe"], pa.large_binary())}),
                   tmp_path / "binary.parquet")

    whole, fraction = read_documents(str(tmp_path / "decimal.parquet"))
    assert whole.doc_id == "12345"
    assert fraction.reason == "invalid_id: 'id' is a number; expected a non-blank string or an integer"
    assert [d.doc_id for d in read_documents(str(tmp_path / "uuid.parquet"))] == [str(first), str(second)]
    good, bad_id, bad_text = read_documents(str(tmp_path / "binary.parquet"))
    assert (good.doc_id, good.text) == ("a", text)
    assert bad_id.reason.startswith("invalid_utf8: column 'id': byte 0xff at byte offset 1")
    assert (bad_text.doc_id, reason_kind(bad_text.reason)) == ("c", "invalid_utf8")
    assert "column 'text': byte 0xfe at byte offset 7" in bad_text.reason

    # a row that fails on a kept value still names its document by that id
    pq.write_table(pa.table({"id": pa.array([first.bytes], pa.uuid()), "text": [text],
                             "at": pa.array([253402300800], pa.timestamp("s"))}), tmp_path / "far.parquet")
    [unreadable] = read_documents(str(tmp_path / "far.parquet"), keep_fields=["at"])
    assert (unreadable.doc_id, reason_kind(unreadable.reason)) == (str(first), "unreadable_value")


def test_a_file_that_is_no_json_lines_is_one_error_that_says_what_to_do(tmp_path):
    """Read line by line, each would give a meaningless error of its own (a zip's bytes between line breaks,
    an array's "[" and "{"), and a report counting its lines as documents."""
    import bz2
    import lzma
    import zipfile

    lines = [json.dumps({"id": f"d{i}", "text": "Angela Merkel visited Paris."}) for i in range(3)]
    jsonl = ("\n".join(lines) + "\n").encode()
    docs = [json.loads(line) for line in lines]
    with zipfile.ZipFile(tmp_path / "docs.zip", "w") as archive:
        archive.writestr("docs.jsonl", jsonl)
    files = {
        "docs.zip": "a zip archive; extract it",
        "docs.jsonl.bz2": "bzip2-compressed",
        "docs.jsonl.xz": "xz-compressed",
        "utf16.jsonl": "UTF-16 text; re-encode it as UTF-8",
        "pretty.json": "a JSON array, not JSON Lines",
        "object.json": "JSON over several lines, not JSON Lines (one object per line); convert it: jq -c .",
        "array.json.gz": "a JSON array, not JSON Lines (one object per line); convert it: jq -c '.[]' 'array.json.gz'",
    }
    (tmp_path / "docs.jsonl.bz2").write_bytes(bz2.compress(jsonl))
    (tmp_path / "docs.jsonl.xz").write_bytes(lzma.compress(jsonl))
    (tmp_path / "utf16.jsonl").write_bytes(jsonl.decode().encode("utf-16"))
    (tmp_path / "array.json").write_text(json.dumps(docs))
    (tmp_path / "pretty.json").write_text("\ufeff" + json.dumps(docs, indent=2))
    (tmp_path / "object.json").write_text(json.dumps(docs[0], indent=2))
    (tmp_path / "array.json.gz").write_bytes(gzip.compress(json.dumps(docs, indent=1).encode()))  # what it holds
    for name, why in files.items():
        [error] = read_documents(str(tmp_path / name))
        assert (error.position, reason_kind(error.reason)) == (0, "not_jsonl") and why in error.reason, error.reason
    # named .gz but plain lines; an empty .gz (a gzip file cut short): no line was read, so none is damaged
    (tmp_path / "plain.jsonl.gz").write_bytes(jsonl)
    [error] = read_documents(str(tmp_path / "plain.jsonl.gz"))
    assert error.reason == ("corrupt_file: the file is named .gz but holds no gzip data; if it is plain JSON Lines, "
                            "rename it without .gz")
    (tmp_path / "empty.jsonl.gz").write_bytes(b"")
    [error] = read_documents(str(tmp_path / "empty.jsonl.gz"))
    assert reason_kind(error.reason) == "corrupt_file" and "may be damaged" not in error.reason
    # JSON Lines whose first line is an array stay line errors and documents, whatever the reader's chunks hold:
    # an array on one line is that line's error (its documents would all be in it), saying what to do
    (tmp_path / "mixed.jsonl").write_text("[1, 2]\n" + jsonl.decode())
    (tmp_path / "members.jsonl.gz").write_bytes(gzip.compress(b"[1, 2]\n") + gzip.compress(jsonl))
    for name in ("mixed.jsonl", "members.jsonl.gz"):
        assert [reason_kind(getattr(i, "reason", "ok:")) for i in read_documents(str(tmp_path / name))] == [
            "not_object", "ok", "ok", "ok"]
    [error] = read_documents(str(tmp_path / "array.json"))
    assert error.position == 1 and error.reason == (
        "not_object: expected a JSON object, got an array of 3 objects: documents as a JSON array? convert it: "
        "jq -c '.[]' 'array.json' > docs.jsonl")
    (tmp_path / "one.jsonl.gz").write_bytes(b"\x1f")  # a gzip file cut after its first byte: truncated, not "no gzip"
    [error] = read_documents(str(tmp_path / "one.jsonl.gz"))
    assert error.reason.startswith("corrupt_file: gzip stream is truncated"), error.reason


def test_a_kept_parquet_interval_is_iso_8601_not_its_bytes():
    # DuckDB writes INTERVAL columns, which Arrow reads as 12 raw bytes (months, days, milliseconds)
    path = os.path.join(os.path.dirname(__file__), "fixtures", "duckdb_interval.parquet")
    docs = list(read_documents(path, keep_fields=["took"]))
    assert [(d.doc_id, d.fields["took"]) for d in docs] == [
        ("d1", "P0M0DT5.000S"), ("d2", "P1M2DT11045.678S"), ("d3", None)]
    assert [reason_kind(e.reason) for e in read_documents(path, text_field="took")] == [
        "non_string_text", "non_string_text", "missing_text"]


def test_kept_times_and_whole_floats_have_one_form_whatever_the_row_or_unit(tmp_path):
    # Python's isoformat drops a zero fraction, pandas writes ns durations as "0 days 00:00:05", and pandas
    # writes an integer column with missing values as float64: one column would hold two spellings.
    noon = datetime.datetime(2024, 1, 1, 12)
    half = noon + datetime.timedelta(microseconds=500000)
    table = pa.table({
        "text": ["Angela Merkel spoke.", "In Berlin."],
        "at": pa.array([noon, half], pa.timestamp("us")),
        "at_ns": pa.array([noon, half], pa.timestamp("ns")),
        "utc": pa.array([noon, half], pa.timestamp("ms", tz="UTC")),
        "berlin": pa.array([noon, half], pa.timestamp("ms", tz="Europe/Berlin")),
        "clock": pa.array([noon.time(), half.time()], pa.time32("ms")),
        "took": pa.array([datetime.timedelta(seconds=5), datetime.timedelta(seconds=-5, microseconds=-123)],
                         pa.duration("us")),
        "took_ns": pa.array([5_000_000_000, 5_000_123_000], pa.duration("ns")),
        "author": pa.array([42.0, None]),
        "score": pa.array([0.5, 2.0**60]),
        "narrow": pa.array([7.0, 7.5], pa.float32()),
    })
    path = tmp_path / "times.parquet"
    pq.write_table(table, path)
    first, second = read_documents(str(path), keep_fields=[c for c in table.column_names if c != "text"])
    assert first.fields == {
        "at": "2024-01-01T12:00:00.000000", "at_ns": "2024-01-01T12:00:00.000000000",
        "utc": "2024-01-01T12:00:00.000+00:00", "berlin": "2024-01-01T13:00:00.000+01:00", "clock": "12:00:00.000",
        "took": "PT5.000000S", "took_ns": "PT5.000000000S", "author": "42", "score": "0.5", "narrow": "7",
    }
    assert second.fields == {
        "at": "2024-01-01T12:00:00.500000", "at_ns": "2024-01-01T12:00:00.500000000",
        "utc": "2024-01-01T12:00:00.500+00:00", "berlin": "2024-01-01T13:00:00.500+01:00", "clock": "12:00:00.500",
        "took": "-PT5.000123S", "took_ns": "PT5.000123000S", "author": None, "score": "1.152921504606847e+18",
        "narrow": "7.5",
    }
    # an id or text column of times is a mistaken field name, not text
    assert [reason_kind(e.reason) for e in read_documents(str(path), text_field="at")] == ["non_string_text"] * 2
    assert reason_kind(next(iter(read_documents(str(path), id_field="took"))).reason) == "invalid_id"
    jsonl = tmp_path / "numbers.jsonl"
    jsonl.write_text('{"text": "Paris.", "author": 42.0}\n')
    [doc] = read_documents(str(jsonl), keep_fields=["author"])
    assert doc.fields == {"author": "42.0"}  # JSON keeps the digits its document wrote
