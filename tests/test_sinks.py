"""Record schemas and atomic sinks (parquet, JSONL, part-file datasets)."""

from __future__ import annotations

import gzip
import json
import math
import os
from pathlib import Path

import jsonschema
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import nerbatch
from nerbatch import records, sinks
from nerbatch.documents import DocumentError, read_documents
from nerbatch.errors import NerbatchError, OutputError
from nerbatch.records import (
    ENTITY_FIELDS,
    ENTITY_LABELS,
    entity_arrow_schema,
    error_arrow_schema,
    error_record,
    validate_record,
)
from nerbatch.sinks import DatasetSink, JsonlSink, ParquetSink, open_error_sink, open_sink
from tests.crash_helpers import publish_killed_at_the_second_part

REPO = Path(__file__).resolve().parents[1]


def entity(i: int, **extra) -> dict:
    return {
        "doc_id": f"doc-{i // 3}",
        "sentence": i % 3,
        "label": ENTITY_LABELS[i % len(ENTITY_LABELS)],
        "text": "Zürich",
        "start": 2 * i,
        "end": 2 * i + 6,
        "score": (i % 100) / 100,
        "model": "ner-bilstm@1.2.0",
        **extra,
    }


def columns(n: int, **extra) -> dict[str, list]:
    rows = [entity(i, **extra) for i in range(n)]
    return {k: [r[k] for r in rows] for k in rows[0]}


def leftovers(directory) -> list[str]:
    return sorted(n for n in os.listdir(directory) if ".tmp-" in n)


# --------------------------------------------------------------------------- schemas


def test_top_level_schemas_are_links_to_the_package_data():
    for name in ["document.v1.json", "document_outcome.v1.json", "entity_record.v1.json", "error_record.v1.json"]:
        link = REPO / "schemas" / name
        assert link.is_symlink()
        assert os.readlink(link) == f"../nerbatch/schemas/{name}"
        assert link.resolve() == (Path(nerbatch.__file__).parent / "schemas" / name).resolve()
        schema = json.loads(link.read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_entity_arrow_schema_is_derived_from_the_json_schema():
    schema = entity_arrow_schema(["title", "lang", "title"])
    assert schema.names == [*ENTITY_FIELDS, "title", "lang"]
    assert ENTITY_FIELDS == ("doc_id", "sentence", "label", "text", "start", "end", "score", "model")
    assert ENTITY_LABELS == ("per", "geo", "org", "gpe", "tim", "art", "eve", "nat")
    types = {f.name: (f.type, f.nullable) for f in schema}
    assert types["doc_id"] == (pa.string(), False)
    assert types["sentence"] == (pa.int64(), False)
    assert types["score"] == (pa.float64(), False)
    assert types["title"] == (pa.string(), True)
    assert schema.metadata == {b"nerbatch.record_schema": b"entity_record.v1"}

    err = error_arrow_schema()
    assert [(f.name, f.type, f.nullable) for f in err] == [
        ("source", pa.string(), False),
        ("position", pa.int64(), False),
        ("doc_id", pa.string(), True),
        ("reason", pa.string(), False),
        ("raw", pa.string(), True),
    ]


def test_arrow_mapping_follows_the_json_schema_rules():
    js = {
        "type": "object",
        "required": ["a", "b"],
        "properties": {
            "a": {"type": "integer"},
            "b": {"type": ["boolean", "null"]},
            "c": {"type": "number"},
        },
        "additionalProperties": {"type": "string"},
    }
    schema = records.arrow_schema_from_json_schema(js, ["x"])
    assert [(f.name, f.type, f.nullable) for f in schema] == [
        ("a", pa.int64(), False),
        ("b", pa.bool_(), True),
        ("c", pa.float64(), True),
        ("x", pa.string(), True),
    ]
    with pytest.raises(ValueError, match="no Arrow mapping"):
        records.arrow_type({"type": ["string", "integer"]})


@pytest.mark.parametrize("name", ["text", "doc_id", "label", ""])
def test_kept_field_colliding_with_record_field_is_refused(name):
    with pytest.raises(OutputError):
        entity_arrow_schema([name])


def test_validate_record():
    validate_record(entity(0, title=None, lang="en"))
    bad = [
        {**entity(0), "label": "PER"},
        {**entity(0), "score": 1.5},
        {**entity(0), "model": "no-version"},
        {**entity(0), "start": -1},
        {**entity(0), "title": 3},
        {k: v for k, v in entity(0).items() if k != "end"},
    ]
    for record in bad:
        with pytest.raises(jsonschema.ValidationError):
            validate_record(record)
    validate_record({"source": "a.jsonl", "position": 3, "doc_id": None, "reason": "empty_text: x", "raw": None}, "error_record.v1")
    with pytest.raises(jsonschema.ValidationError):
        validate_record({"source": "a.jsonl", "position": 3, "doc_id": None, "reason": "no kind", "raw": None}, "error_record.v1")


# --------------------------------------------------------------------------- parquet


def test_parquet_sink_writes_typed_row_groups_and_metadata(tmp_path):
    path = tmp_path / "entities.parquet"
    schema = entity_arrow_schema(["title"])
    meta = {"model": "ner-bilstm@1.2.0", "inputs": ["news/*.jsonl"], "nerbatch_version": nerbatch.__version__}
    with ParquetSink(path, schema, meta, row_group_size=4) as sink:
        sink.write(columns(6, title="T"))
        sink.write_records([entity(6)])  # missing nullable column -> null
        sink.write({k: [] for k in ENTITY_FIELDS})
        sink.write(columns(3))
        assert not path.exists()
        assert len(leftovers(tmp_path)) == 1 and leftovers(tmp_path)[0].startswith(".entities.parquet.tmp-")
    assert leftovers(tmp_path) == []
    assert sink.rows_written == 10

    pf = pq.ParquetFile(path)
    assert [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)] == [4, 4, 2]
    assert pf.schema_arrow.remove_metadata() == schema.remove_metadata()
    kv = pf.metadata.metadata
    assert kv[b"model"] == b"ner-bilstm@1.2.0"
    assert json.loads(kv[b"inputs"]) == ["news/*.jsonl"]
    assert kv[b"nerbatch.record_schema"] == b"entity_record.v1"

    rows = pf.read().to_pylist()
    assert [r["title"] for r in rows] == ["T"] * 6 + [None] * 4
    assert rows[0] == entity(0, title="T")
    for r in rows:
        validate_record(r)


def test_parquet_row_groups_are_also_cut_by_bytes_so_large_kept_fields_stay_bounded(tmp_path):
    path = tmp_path / "entities.parquet"
    body = "x" * 1000  # a large kept field, copied into every record
    with ParquetSink(path, entity_arrow_schema(["body"]), {}, row_group_size=64, row_group_bytes=20_000) as sink:
        for _ in range(20):
            sink.write(columns(5, body=body))
            assert sink._pending_rows < 25  # never more than the byte bound and one write held
    pf = pq.ParquetFile(path)
    groups = [pf.metadata.row_group(i).num_rows for i in range(pf.metadata.num_row_groups)]
    assert sum(groups) == 100 and len(groups) > 1 and max(groups) <= 20
    assert pf.read().column("body").to_pylist() == [body] * 100


def test_exception_inside_with_leaves_no_file_and_keeps_the_old_one(tmp_path):
    path = tmp_path / "out.parquet"
    schema = entity_arrow_schema()
    with pytest.raises(RuntimeError):
        with ParquetSink(path, schema, {}, row_group_size=2) as sink:
            sink.write(columns(5))
            raise RuntimeError("model crashed")
    assert not path.exists()
    assert os.listdir(tmp_path) == []

    with ParquetSink(path, schema, {"run": "1"}) as sink:
        sink.write(columns(2))
    with pytest.raises(KeyboardInterrupt):
        with ParquetSink(path, schema, {"run": "2"}) as sink:
            sink.write(columns(7))
            raise KeyboardInterrupt
    assert pq.ParquetFile(path).metadata.metadata[b"run"] == b"1"
    assert pq.read_table(path).num_rows == 2
    assert leftovers(tmp_path) == []


def test_close_after_abort_is_refused(tmp_path):
    sink = ParquetSink(tmp_path / "x.parquet", entity_arrow_schema(), {})
    sink.abort()
    with pytest.raises(ValueError, match="aborted"):
        sink.close()
    ds = DatasetSink(tmp_path / "ds", entity_arrow_schema())
    ds.abort()
    with pytest.raises(ValueError, match="aborted"):
        ds.close()
    assert os.listdir(tmp_path) == [] and not sink.committed


def test_sink_dropped_without_close_commits_nothing(tmp_path):
    sink = ParquetSink(tmp_path / "x.parquet", entity_arrow_schema(), {})
    sink.write(columns(1))
    del sink
    assert os.listdir(tmp_path) == []


def test_empty_runs_write_valid_empty_outputs(tmp_path):
    schema = entity_arrow_schema(["title"])
    with open_sink(tmp_path / "e.parquet", schema=schema, metadata={"model": "m@1"}):
        pass
    table = pq.read_table(tmp_path / "e.parquet")
    assert table.num_rows == 0 and table.schema.names == schema.names
    with open_sink(tmp_path / "e.jsonl", schema=schema):
        pass
    assert (tmp_path / "e.jsonl").read_bytes() == b""
    with open_sink(tmp_path / "ds", "parquet", schema=schema, dataset=True) as ds:
        pass
    assert ds.paths == [str(tmp_path / "ds" / "part-00000.parquet")]
    assert pq.read_table(ds.paths[0]).schema.names == schema.names


def test_parquet_sink_rejects_bad_columns(tmp_path):
    with ParquetSink(tmp_path / "x.parquet", entity_arrow_schema(), {}) as sink:
        with pytest.raises(ValueError, match="not in the output schema"):
            sink.write({**columns(1), "extra": ["x"]})
        with pytest.raises(ValueError, match="not nullable"):
            sink.write({**columns(2), "doc_id": ["a", None]})
        with pytest.raises(ValueError, match="required but missing"):
            sink.write({k: v for k, v in columns(1).items() if k != "score"})
        with pytest.raises(ValueError, match="different lengths"):
            sink.write({**columns(2), "start": [1]})
        with pytest.raises(ValueError, match="does not fit"):
            sink.write({**columns(1), "start": ["seven"]})
        sink.write({k: pa.array(v) for k, v in columns(2).items()})
    assert pq.read_table(tmp_path / "x.parquet").num_rows == 2


# --------------------------------------------------------------------------- JSONL


def test_jsonl_sink_lines_order_unicode_and_atomicity(tmp_path):
    path = tmp_path / "entities.jsonl"
    schema = entity_arrow_schema(["title"])
    with JsonlSink(path, schema) as sink:
        sink.write(columns(2))
        sink.write_records([entity(2, title="Genève")])
        assert not path.exists()
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n") and "Zürich" in text and "Genève" in text  # not \u-escaped
    rows = [json.loads(line) for line in text.splitlines()]
    assert [list(r) for r in rows] == [schema.names] * 3
    assert rows[2] == entity(2, title="Genève") and rows[0]["title"] is None
    for r in rows:
        validate_record(r)

    with pytest.raises(ValueError):
        with JsonlSink(path, schema) as sink:
            sink.write_records([{**entity(0), "score": math.nan}])  # not JSON
    assert [json.loads(line) for line in path.read_text().splitlines()] == rows
    assert leftovers(tmp_path) == []


def test_jsonl_gz_is_compressed_and_deterministic(tmp_path):
    outs = []
    for name in ["a.jsonl.gz", "b.jsonl.gz"]:
        with open_sink(tmp_path / name, schema=entity_arrow_schema()) as sink:
            sink.write(columns(3))
        outs.append((tmp_path / name).read_bytes())
    assert outs[0] == outs[1]
    assert [json.loads(x) for x in gzip.decompress(outs[0]).splitlines()] == [entity(i) for i in range(3)]


def test_error_sink_round_trip(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"text": ""}\n{oops\n{"id": 4, "text": 1}\n')
    errors = [e for e in read_documents(str(src)) if isinstance(e, DocumentError)]
    with open_error_sink(tmp_path / "errors.jsonl") as sink:
        sink.write_records(error_record(e) for e in errors)
    lines = (tmp_path / "errors.jsonl").read_text().splitlines()
    assert len(lines) == 3
    for line in lines:
        validate_record(json.loads(line), "error_record.v1")
    assert json.loads(lines[2]) == {
        "source": str(src),
        "position": 3,
        "doc_id": "4",
        "reason": "non_string_text: 'text' is an integer, not a string",
        "raw": '{"id": 4, "text": 1}',
    }


# --------------------------------------------------------------------------- datasets


def test_dataset_rolls_parts_atomically_with_deterministic_names(tmp_path):
    out = tmp_path / "out"
    schema = entity_arrow_schema()
    with open_sink(f"{out}/", schema=schema, metadata={"model": "m@1"}, part_rows=4, row_group_size=3) as ds:
        ds.write(columns(6))
        # part 0 is complete but staged; part 1 is still being written; readers see neither
        names = os.listdir(out)
        assert len(names) == 2 and {n.split(".tmp-")[0] for n in names} == {".part-00000.parquet", "..part-00001.parquet"}
        ds.write(columns(5))
        assert isinstance(ds, DatasetSink)
    names = sorted(os.listdir(out))
    assert names == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert [pq.ParquetFile(out / n).metadata.num_rows for n in names] == [4, 4, 3]
    assert all(pq.ParquetFile(out / n).metadata.metadata[b"model"] == b"m@1" for n in names)
    table = pq.read_table(out)
    assert table.num_rows == 11
    assert table.to_pylist()[6] == entity(0)

    with pytest.raises(OutputError, match="already holds part files"):
        open_sink(out, schema=schema)
    with open_sink(out, schema=schema, overwrite=True) as ds:
        ds.write(columns(1))
        assert pq.read_table(out).num_rows == 11  # the old dataset stays whole until the new one is complete
    assert sorted(os.listdir(out)) == ["part-00000.parquet"]
    assert pq.read_table(out).num_rows == 1


def test_an_aborted_overwrite_keeps_the_old_dataset(tmp_path):
    out = tmp_path / "ds"
    with DatasetSink(out, entity_arrow_schema(), part_rows=2) as ds:
        ds.write(columns(3))
    before = pq.read_table(out)
    with pytest.raises(RuntimeError):
        with DatasetSink(out, entity_arrow_schema(), part_rows=2, overwrite=True) as ds:
            ds.write(columns(7))
            raise RuntimeError  # a crash before the new dataset is complete
    assert sorted(os.listdir(out)) == ["part-00000.parquet", "part-00001.parquet"]
    assert pq.read_table(out).equals(before)


def test_an_overwrite_never_deletes_parts_another_writer_made(tmp_path):
    # A folder also used by Spark, or a hand-made part: replacing "part-*" files there would delete
    # data nerbatch did not write.
    schema = entity_arrow_schema()
    for name in ("part-00000-1b2c3d4e-c000.snappy.parquet", "part-00000.parquet"):
        out = tmp_path / name.split(".")[0]
        out.mkdir()
        pq.write_table(pa.table({"x": [1]}), out / name)
        (out / "_SUCCESS").write_text("")
        with pytest.raises(OutputError, match=f"part files nerbatch did not write \\({name}\\)"):
            DatasetSink(out, schema, overwrite=True)
        assert sorted(os.listdir(out)) == ["_SUCCESS", name]
    other = tmp_path / "other-schema"
    with DatasetSink(other, error_arrow_schema()) as ds:  # nerbatch's error records, not entities
        ds.write_records([])
    with pytest.raises(OutputError, match="did not write"):
        DatasetSink(other, schema, overwrite=True)
    notes = tmp_path / "notes"  # JSONL parts of another writer, named as nerbatch names its own
    notes.mkdir()
    for n, user in enumerate(["alice", "bob"]):
        (notes / f"part-{n:05d}.jsonl").write_text(json.dumps({"user": user}) + "\n")
    for fmt in ("parquet", "jsonl"):
        with pytest.raises(OutputError, match=r"did not write \(part-00000.jsonl, part-00001.jsonl\)"):
            DatasetSink(notes, schema, fmt=fmt, overwrite=True)
    assert [json.loads((notes / f"part-{n:05d}.jsonl").read_text())["user"] for n in (0, 1)] == ["alice", "bob"]
    for fmt in ("parquet", "jsonl"):
        with DatasetSink(tmp_path / "own", schema, part_rows=1, fmt=fmt, overwrite=True) as ds:
            ds.write(columns(2))
        with DatasetSink(tmp_path / "own", schema, fmt=fmt, overwrite=True) as ds:  # its own parts are replaced
            ds.write(columns(1))
        assert sorted(os.listdir(tmp_path / "own")) == [f"part-00000.{fmt}"]
    kept = entity_arrow_schema(["body"])  # a kept field of megabytes: the part is still known as nerbatch's
    with DatasetSink(tmp_path / "own", kept, fmt="jsonl", overwrite=True) as ds:
        ds.write(dict(columns(1), body=["x" * 1_100_000]))
    with DatasetSink(tmp_path / "own", kept, fmt="jsonl", overwrite=True) as ds:
        ds.write(columns(1) | {"body": ["y"]})
    assert json.loads((tmp_path / "own" / "part-00000.jsonl").read_text())["body"] == "y"
    with DatasetSink(tmp_path / "own", schema, fmt="jsonl", overwrite=True) as ds:  # an empty part is its own
        ds.write_records([])
    with DatasetSink(tmp_path / "own", schema, fmt="jsonl", overwrite=True) as ds:
        ds.write(columns(1))
    assert sorted(os.listdir(tmp_path / "own")) == ["part-00000.jsonl"]


def test_a_crash_between_the_final_renames_is_completed_by_the_next_sink(tmp_path, monkeypatch):
    out = tmp_path / "ds"
    schema = entity_arrow_schema()
    new_rows = [dict(entity(i), doc_id=f"new-{i}") for i in range(4)]
    publish_killed_at_the_second_part(out, [entity(i) for i in range(3)], new_rows, monkeypatch)
    mixed = pq.read_table(out).column("doc_id").to_pylist()
    assert "new-0" in mixed and "new-1" not in mixed  # one new part beside old ones
    DatasetSink(out, schema, overwrite=True).abort()  # opening the folder completes the renames
    assert sorted(pq.read_table(out).column("doc_id").to_pylist()) == [r["doc_id"] for r in new_rows]
    assert sorted(os.listdir(out)) == [f"part-{i:05d}.parquet" for i in range(4)]


def test_dataset_abort_removes_its_parts(tmp_path):
    out = tmp_path / "ds"
    with pytest.raises(RuntimeError):
        with DatasetSink(out, entity_arrow_schema(), part_rows=2) as ds:
            ds.write(columns(5))
            assert len(os.listdir(out)) == 3  # two staged parts, one being written
            raise RuntimeError
    assert not out.exists()


def test_jsonl_dataset(tmp_path):
    with open_sink(f"{tmp_path}/j/", "jsonl", schema=entity_arrow_schema(), part_rows=2) as ds:
        ds.write_records([entity(i) for i in range(3)])
    assert sorted(os.listdir(tmp_path / "j")) == ["part-00000.jsonl", "part-00001.jsonl"]


# --------------------------------------------------------------------------- open_sink errors


def test_open_sink_infers_format(tmp_path):
    schema = entity_arrow_schema()
    for name, cls in [("a.parquet", ParquetSink), ("a.pq", ParquetSink), ("a.jsonl", JsonlSink), ("a.ndjson", JsonlSink)]:
        sink = open_sink(tmp_path / name, schema=schema)
        assert isinstance(sink, cls)
        sink.abort()
    assert isinstance(open_sink(tmp_path / "weird.out", "jsonl", schema=schema), JsonlSink)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "target, fmt, message",
    [
        ("missing/out.parquet", None, "folder '.*missing' does not exist"),
        ("a_file/out.parquet", None, "is not a folder"),
        ("out.csv", None, "cannot tell the output format"),
        ("out.parquet", "csv", "unknown output format 'csv'"),
        ("missing/ds/", None, "does not exist"),
        ("a_file", "parquet", None),  # fine: replaces the file
    ],
)
def test_open_sink_output_errors(tmp_path, target, fmt, message):
    (tmp_path / "a_file").write_text("x")
    target = f"{tmp_path}/{target}"  # a str keeps the trailing '/'
    if message is None:
        open_sink(target, fmt, schema=entity_arrow_schema()).abort()
        return
    with pytest.raises(OutputError, match=message) as info:
        open_sink(target, fmt, schema=entity_arrow_schema())
    assert "\n" not in str(info.value) and isinstance(info.value, NerbatchError)


def test_unwritable_folder_is_an_output_error(tmp_path, monkeypatch):
    monkeypatch.setattr(sinks.os, "access", lambda path, mode: False)
    with pytest.raises(OutputError, match="is not writable"):
        open_sink(tmp_path / "out.parquet", schema=entity_arrow_schema())
    assert os.listdir(tmp_path) == []


def test_write_failure_becomes_output_error_and_cleans_up(tmp_path):
    sink = JsonlSink(tmp_path / "o.jsonl", entity_arrow_schema())

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    sink._fh = type("DiskFull", (), {"write": full, "close": lambda self: None})()
    with pytest.raises(OutputError, match="No space left on device"):
        with sink:
            sink.write(columns(1))
    assert os.listdir(tmp_path) == []


def test_the_write_check_takes_every_name_the_write_itself_takes(tmp_path):
    import os

    from nerbatch.sinks import check_writable, write_text_atomic

    for length in (200, 228, 238, 250):  # the temporary file's name is 13 to 20 bytes longer
        path = tmp_path / ("n" * length)
        try:
            write_text_atomic(path, "{}")
            written = True
        except OSError:
            written = False
        try:
            check_writable(path, "report")
            checked = True
        except OutputError as exc:
            assert "File name too long" in str(exc)
            checked = False
        assert checked == written, length
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no probe left
    assert os.listdir(tmp_path)
