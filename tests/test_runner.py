import contextlib
import gzip
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nerbatch.errors import InputError, NerbatchError, OutputError
from nerbatch.records import validate_record
from nerbatch.runner import RunOptions, run_job


def _write_jsonl(path: Path, docs: list, compress: bool = False) -> Path:
    data = "".join((d if isinstance(d, str) else json.dumps(d, ensure_ascii=False)) + "\n" for d in docs)
    if compress:
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def _texts_by_id(*doc_lists):
    return {d["id"]: d["text"] for docs in doc_lists for d in docs}


def _check_offsets(rows, texts):
    for row in rows:
        assert texts[row["doc_id"]][row["start"] : row["end"]] == row["text"]
        assert 0 < row["score"] <= 1
        validate_record(row)


def test_mixed_inputs_to_parquet(tmp_path, tiny_pipeline, news_documents):
    a, b, c = news_documents[:4], news_documents[4:8], news_documents[8:]
    _write_jsonl(tmp_path / "a.jsonl", a)
    _write_jsonl(tmp_path / "b.jsonl.gz", b, compress=True)
    pq.write_table(pa.Table.from_pylist(c), tmp_path / "c.parquet")
    out = tmp_path / "out" / "entities.parquet"
    out.parent.mkdir()
    report = run_job(
        RunOptions(inputs=[str(tmp_path / "*.jsonl*"), str(tmp_path / "c.parquet")], output=str(out),
                   keep_fields=("title",), report=str(tmp_path / "report.json")),
        tiny_pipeline,
    )
    assert report.docs_in == report.docs_ok == len(news_documents) and report.docs_failed == 0
    table = pq.read_table(out)
    assert table.num_rows == report.entities > 0
    assert table.schema.field("start").type == pa.int64() and table.schema.field("title").type == pa.string()
    meta = pq.read_metadata(out).metadata
    assert meta[b"model"].decode() == tiny_pipeline.model_name
    assert json.loads(meta[b"inputs"]) == report.inputs
    rows = table.to_pylist()
    _check_offsets(rows, _texts_by_id(news_documents))
    titles = {d["id"]: d["title"] for d in news_documents}
    assert all(r["title"] == titles[r["doc_id"]] for r in rows)
    # input order is kept: records appear in document order
    order = [d["id"] for d in news_documents]
    positions = [order.index(r["doc_id"]) for r in rows]
    assert positions == sorted(positions)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["docs_in"] == saved["docs_ok"] + saved["docs_failed"]
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())  # no temp or work files left


def test_jsonl_output_and_folder_dataset(tmp_path, tiny_pipeline, news_documents, monkeypatch):
    src = _write_jsonl(tmp_path / "docs.jsonl", news_documents)
    jsonl_out = tmp_path / "entities.jsonl"
    run_job(RunOptions(inputs=[str(src)], output=str(jsonl_out)), tiny_pipeline)
    rows = [json.loads(line) for line in jsonl_out.read_text(encoding="utf-8").splitlines()]
    _check_offsets(rows, _texts_by_id(news_documents))
    with pytest.raises(InputError, match="no input given"):
        run_job(RunOptions(inputs=(p for p in []), output=tmp_path / "none.jsonl"), tiny_pipeline)
    # pathlib paths, and one input given alone (not split into its characters)
    for inputs in (src, str(src)):
        again = tmp_path / "again.jsonl"
        report = run_job(RunOptions(inputs=inputs, output=again, errors=tmp_path / "e.jsonl",
                                    report=tmp_path / "r.json"), tiny_pipeline)
        assert report.inputs == [str(src)] and again.read_text(encoding="utf-8") == jsonl_out.read_text(encoding="utf-8")
        assert json.loads((tmp_path / "r.json").read_text())["output"] == str(again)

    folder = tmp_path / "dataset"
    run_job(RunOptions(inputs=[str(src)], output=str(folder) + "/"), tiny_pipeline)
    parts = sorted(p.name for p in folder.iterdir())
    assert parts == ["part-00000.parquet"]
    assert pq.read_table(folder).num_rows == len(rows)
    # a folder named "." or "x/.": the errors file and the work folder go beside it, named after it
    beside = str(tmp_path.resolve() / "_dataset.errors.jsonl")
    for output, cwd, errors in ((".", folder, beside), (f"{folder}/.", tmp_path, beside),
                                ("dataset/", tmp_path, "_dataset.errors.jsonl")):
        monkeypatch.chdir(cwd)
        assert run_job(RunOptions(inputs=[str(src)], output=output), tiny_pipeline).errors == errors
        assert sorted(p.name for p in folder.iterdir()) == ["part-00000.parquet"]
        assert (tmp_path / "_dataset.errors.jsonl").is_file() and pq.read_table(folder).num_rows == len(rows)


def test_the_default_errors_file_leaves_a_lake_readable_as_a_dataset(tmp_path, tiny_pipeline, news_documents):
    import pyarrow.dataset as ds

    src = _write_jsonl(tmp_path / "in.jsonl", news_documents[:3] + ["{not json"])
    (tmp_path / "lake" / "day=2").mkdir(parents=True)
    entities = 0
    for output in (tmp_path / "lake" / "day=1", tmp_path / "lake" / "day=2" / "e.parquet"):
        report = run_job(RunOptions(inputs=[str(src)], output=str(output) + ("/" if output.suffix == "" else ""),
                                    max_error_rate=1.0), tiny_pipeline)
        assert report.docs_failed == 1 and Path(report.errors).read_text().count("\n") == 1
        entities += report.entities
    assert sorted(p.name for p in (tmp_path / "lake").rglob("*errors*")) == [
        "_day=1.errors.jsonl", "_e.parquet.errors.jsonl"]
    table = ds.dataset(tmp_path / "lake", partitioning="hive").to_table()
    assert table.num_rows == entities > 0 and sorted(set(table.column("day").to_pylist())) == [1, 2]


def test_paths_through_a_link_and_dot_dot_are_where_the_system_finds_them(tmp_path, tiny_pipeline, news_documents):
    # "a/link/.." is the parent of link's target, not "a": temporary files must be written there, beside
    # the file they are renamed to, and a parquet input read from there.
    (tmp_path / "a").mkdir()
    (tmp_path / "other" / "deep").mkdir(parents=True)
    (tmp_path / "a" / "link").symlink_to(tmp_path / "other" / "deep")
    via = str(tmp_path / "a" / "link" / "..")
    pq.write_table(pa.Table.from_pylist(news_documents), tmp_path / "other" / "docs.parquet")
    report = run_job(RunOptions(inputs=[f"{via}/docs.parquet"], output=f"{via}/e.parquet", report=f"{via}/r.json"),
                     tiny_pipeline)
    assert report.docs_ok == len(news_documents) and report.entities > 0
    dataset = run_job(RunOptions(inputs=[f"{via}/docs.parquet"], output=f"{via}/ds/"), tiny_pipeline)
    assert dataset.entities == report.entities
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == [
        "_ds.errors.jsonl", "_e.parquet.errors.jsonl", "deep", "docs.parquet", "ds", "e.parquet", "r.json"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["link"]
    assert pq.read_table(tmp_path / "other" / "e.parquet").num_rows == report.entities


def test_bad_documents_reconcile_exactly(tmp_path, tiny_pipeline, news_documents):
    good = news_documents[:3]
    lines = [
        good[0],
        "{not json",
        {"id": "no-text"},
        {"id": "empty", "text": "   "},
        {"id": "number", "text": 42},
        good[1],
        "[1, 2]",
        {"id": "big", "text": "x" * 5000},
        good[2],
        {"text": "An anonymous document about Paris."},
    ]
    src = _write_jsonl(tmp_path / "bad.jsonl", lines)
    with open(src, "ab") as handle:
        handle.write(b'{"id": "latin", "text": "caf\xe9"}\n')
    errors = tmp_path / "errors.jsonl"
    report = run_job(
        RunOptions(inputs=[str(src)], output=str(tmp_path / "e.parquet"), errors=str(errors), max_doc_chars=4000),
        tiny_pipeline,
    )
    assert report.docs_in == 11
    assert report.docs_ok == 4 and report.docs_failed == 7
    records = [json.loads(line) for line in errors.read_text().splitlines()]
    kinds = [r["reason"].split(":")[0] for r in records]
    assert kinds == ["malformed_json", "missing_text", "empty_text", "non_string_text", "not_object",
                     "oversized", "invalid_utf8"]
    assert [r["position"] for r in records] == [2, 3, 4, 5, 7, 8, 11]
    assert all(r["source"] == str(src) for r in records)
    ids = set(pq.read_table(tmp_path / "e.parquet").column("doc_id").to_pylist())
    assert ids <= {d["id"] for d in good} | {"bad.jsonl:10"}


def test_outcomes_give_every_document_one_row_in_input_order(tmp_path, tiny_pipeline, news_documents):
    lines = []
    for n, doc in enumerate(news_documents * 4):  # several chunks, failures between them
        lines.append(dict(doc, id=f"doc-{n}"))
        if n % 5 == 2:
            lines.append("{not json")
        if n % 7 == 3:
            lines.append({"id": f"quiet-{n}", "text": "... !"})  # annotated, no entity
    src = _write_jsonl(tmp_path / "news.jsonl", lines)
    out, outcomes = tmp_path / "e.parquet", tmp_path / "outcomes.jsonl"
    report = run_job(RunOptions(inputs=[str(src)], output=str(out), outcomes=str(outcomes), max_error_rate=1.0),
                     tiny_pipeline)

    rows = [json.loads(line) for line in outcomes.read_text().splitlines()]
    for row in rows:
        validate_record(row, "document_outcome.v1")
    assert [r["position"] for r in rows] == list(range(1, len(lines) + 1)) and len(rows) == report.docs_in
    assert {r["source"] for r in rows} == {str(src)} and {r["model"] for r in rows} == {tiny_pipeline.model_name}
    failed = [r for r in rows if r["outcome"] == "failed"]
    errors = [json.loads(line) for line in Path(report.errors).read_text().splitlines()]
    assert [(r["position"], r["error"]) for r in failed] == [(e["position"], "malformed_json") for e in errors]
    per_doc = Counter(pq.read_table(out, columns=["doc_id"]).column("doc_id").to_pylist())
    annotated = [r for r in rows if r["outcome"] != "failed"]
    assert {r["doc_id"]: r["entities"] for r in annotated if r["entities"]} == per_doc
    assert all((r["outcome"] == "entities") == (r["entities"] > 0) and r["error"] is None for r in annotated)
    quiet = [r for r in rows if (r["doc_id"] or "").startswith("quiet-")]
    assert quiet and {r["outcome"] for r in quiet} == {"no_entities"}
    assert sum(r["outcome"] == "no_entities" for r in rows) == report.docs_without_entities


def test_a_file_of_failing_documents_is_handed_on_in_chunks(tmp_path, tiny_pipeline):
    # A misspelt --text-field fails every row; the failures used to pile up until the file ended.
    rows = 3000
    src = tmp_path / "wrong-field.parquet"
    pq.write_table(pa.table({"id": [f"d{i}" for i in range(rows)], "body": ["Angela Merkel went to Paris."] * rows}),
                   src, row_group_size=500)
    progress = []
    out, outcomes = tmp_path / "e.parquet", tmp_path / "outcomes.parquet"
    report = run_job(RunOptions(inputs=[str(src)], output=str(out), outcomes=str(outcomes), max_error_rate=1.0),
                     tiny_pipeline, on_progress=lambda docs, tokens: progress.append(docs))
    assert (report.docs_in, report.docs_failed) == (rows, rows)
    assert progress[0] == 0 and max(progress) <= tiny_pipeline.chunk_sentences and sum(progress) == rows
    table = pq.read_table(outcomes)
    assert table.column("position").to_pylist() == list(range(rows))
    assert set(table.column("error").to_pylist()) == {"missing_text"}
    assert len(Path(report.errors).read_text().splitlines()) == rows


def test_unicode_torture_document(tmp_path, tiny_pipeline):
    text = (
        "Ångström visited Zürich 🇨🇭 with José Martí.\r\nThe café\u0301 in 東京 (Tokyo) opened on Monday!"
        " 👩‍👩‍👧 family\u00a0trip to São Paulo\x07 and Κρήτη. שלום Jerusalem. e\u0301te\u0301 in Paris."
    )
    src = _write_jsonl(tmp_path / "u.jsonl", [{"id": "u", "text": text}])
    out = tmp_path / "u.parquet"
    report = run_job(RunOptions(inputs=[str(src)], output=str(out)), tiny_pipeline)
    assert report.docs_ok == 1 and report.tokens > 20
    _check_offsets(pq.read_table(out).to_pylist(), {"u": text})


def test_missing_input_and_unwritable_output(tmp_path, tiny_pipeline):
    with pytest.raises(NerbatchError, match="no input files match"):
        run_job(RunOptions(inputs=[str(tmp_path / "nothing*.jsonl")], output=str(tmp_path / "o.parquet")),
                tiny_pipeline)
    src = _write_jsonl(tmp_path / "d.jsonl", [{"id": 1, "text": "Paris."}])
    with pytest.raises(NerbatchError, match="does not exist"):
        run_job(RunOptions(inputs=[str(src)], output=str(tmp_path / "no" / "dir" / "o.parquet")), tiny_pipeline)
    with pytest.raises(TypeError, match="run_job takes a NerPipeline, not Bundle"):  # a common slip
        run_job(RunOptions(inputs=[str(src)], output=str(tmp_path / "o.parquet")), tiny_pipeline.bundle)
    with pytest.raises(NerbatchError, match="model bundle path is empty"):  # Path("") would be "."
        run_job(RunOptions(inputs=[str(src)], output=str(tmp_path / "o.parquet"), model=""))
    assert not (tmp_path / "o.parquet").exists()


def test_cli_run_exit_codes(tmp_path, tiny_bundle, news_documents):
    from typer.testing import CliRunner

    from nerbatch.cli import app

    src = _write_jsonl(tmp_path / "d.jsonl", news_documents[:2] + ["{broken"])
    runner = CliRunner()
    args = ["run", "-i", str(src), "-o", str(tmp_path / "o.parquet"), "--model", str(tiny_bundle), "-q"]
    assert runner.invoke(app, args).exit_code == 1  # 1 of 3 failed > 1%
    assert runner.invoke(app, args + ["--max-error-rate", "0.5"]).exit_code == 0
    result = runner.invoke(app, ["run", "-i", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "x.parquet"),
                                 "--model", str(tiny_bundle)])
    assert result.exit_code == 2 and "does not exist" in result.output


def _run_cli(args, **kwargs):
    # The CLI's own logging defaults, not whatever the test process set.
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.Popen([sys.executable, "-m", "nerbatch", "run", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, **kwargs)


def test_a_stop_while_the_model_loads_is_told_too(tmp_path, tiny_bundle, news_documents):
    src = _write_jsonl(tmp_path / "news.jsonl", news_documents)
    proc = _run_cli(["-i", str(src), "-o", str(tmp_path / "o.parquet"), "--model", str(tiny_bundle), "-q"])
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:  # TensorFlow's start-up output is silenced
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{proc.pid}/fd/2") == os.devnull:
                break
        time.sleep(0.005)
    assert proc.poll() is None, "the model loaded before the test could stop it"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert stderr.decode().startswith("nerbatch: SIGTERM received: run stopped before it finished"), stderr


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM])
def test_killed_run_resumes_to_the_same_records(tmp_path, tiny_bundle, news_documents, stop):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for n in range(12):
        docs = [dict(d, id=f"{n}-{d['id']}") for d in news_documents] * 1
        _write_jsonl(inputs / f"news-{n:02d}.jsonl", docs * 4 if n else docs)
    common = ["-i", str(inputs), "--model", str(tiny_bundle), "-q", "--batch-size", "32"]

    whole = tmp_path / "whole.parquet"
    complete = _run_cli([*common, "-o", str(whole), "--outcomes", str(tmp_path / "whole-outcomes.parquet")])
    _, stderr = complete.communicate(timeout=300)
    assert complete.returncode == 0
    # A quiet run says nothing: no TensorFlow C++ log line ("E0000 00:00:...") that reads like an error.
    assert not re.findall(rb"(?m)^[IWEF]\d{4} ", stderr), stderr.decode(errors="replace")

    out = tmp_path / "resumed.parquet"
    journal = tmp_path / ".resumed.parquet.nerbatch-work" / "completed.jsonl"
    proc = _run_cli([*common, "-o", str(out), "--outcomes", str(tmp_path / "resumed-outcomes.parquet")])
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.is_file() and journal.read_text().count("\n") >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "run finished before it could be interrupted"
    proc.send_signal(stop)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == (-signal.SIGKILL if stop == signal.SIGKILL else 128 + stop)
    if stop == signal.SIGTERM:  # Airflow's timeout, docker stop: one line, and the run is left as a crash leaves it
        assert stderr.decode() == ("nerbatch: SIGTERM received: run stopped before it finished; the same command "
                                   "with --resume skips the inputs it finished\n")
    assert not out.exists()  # a crashed run leaves nothing that looks complete
    done_before = journal.read_text().count("\n")
    assert 2 <= done_before < 12

    resumed = _run_cli([*common, "-o", str(out), "--outcomes", str(tmp_path / "resumed-outcomes.parquet"),
                        "--resume", "--report", str(tmp_path / "r.json")])
    assert resumed.wait(timeout=300) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert len(report["resumed_inputs"]) == done_before
    cols = ["doc_id", "sentence", "label", "text", "start", "end"]
    assert pq.read_table(out, columns=cols).to_pylist() == pq.read_table(whole, columns=cols).to_pylist()
    assert report["docs_in"] == 12 * 4 * len(news_documents) - 3 * len(news_documents)
    outcomes = pq.read_table(tmp_path / "resumed-outcomes.parquet")
    assert outcomes.equals(pq.read_table(tmp_path / "whole-outcomes.parquet"))
    assert outcomes.num_rows == report["docs_in"]


def test_outputs_never_overwrite_inputs_or_each_other(tmp_path, tiny_pipeline, news_documents):
    src = _write_jsonl(tmp_path / "news.jsonl", news_documents[:2])
    before = src.read_bytes()
    out = str(tmp_path / "o.jsonl")
    for options, message in [
        (dict(output=str(src)), "the output .* is also an input"),
        (dict(output=out, errors=str(src)), "the errors file .* is also an input"),
        (dict(output=out, report=str(src)), "the report .* is also an input"),
        (dict(output=out, errors=out), "the errors file .* is also the output"),
        (dict(output=out, report=str(tmp_path / "_o.jsonl.errors.jsonl")), "the report .* is also the errors file"),
        (dict(output=out, outcomes=str(src)), "the outcomes file .* is also an input"),
        (dict(output=out, outcomes=out), "the outcomes file .* is also the output"),
        (dict(output=str(tmp_path / "ds") + "/", outcomes=str(tmp_path / "ds" / "o.parquet")),
         "the outcomes file .* is inside the output folder"),
        (dict(output=str(tmp_path / "ds") + "/", errors=str(tmp_path / "ds" / "sub" / "e.jsonl")),
         "the errors file .* is inside the output folder"),
    ]:
        with pytest.raises(NerbatchError, match=message):
            run_job(RunOptions(inputs=[str(src)], **options), tiny_pipeline)
    assert src.read_bytes() == before

    folder = tmp_path / "dataset"
    folder.mkdir()
    pq.write_table(pa.table({"id": ["a"], "text": ["Angela Merkel visited Paris."]}), folder / "part-00000.parquet")
    with pytest.raises(NerbatchError, match="output folder .* holds input"):
        run_job(RunOptions(inputs=[str(folder)], output=str(folder) + "/"), tiny_pipeline)
    assert pq.read_table(folder / "part-00000.parquet").column("id").to_pylist() == ["a"]
    assert not list(tmp_path.glob(".*nerbatch-work"))


def test_an_output_folder_with_another_writers_parts_is_refused_before_any_work(tmp_path, tiny_pipeline,
                                                                                 news_documents):
    src = _write_jsonl(tmp_path / "news.jsonl", news_documents[:2])
    folder = tmp_path / "lake"
    folder.mkdir()
    pq.write_table(pa.table({"x": [1]}), folder / "part-00000-1b2c3d4e-c000.snappy.parquet")
    with pytest.raises(NerbatchError, match="holds part files nerbatch did not write"):
        run_job(RunOptions(inputs=[str(src)], output=str(folder) + "/"), tiny_pipeline)
    assert not list(tmp_path.glob(".*nerbatch-work"))  # no input was read
    assert os.listdir(folder) == ["part-00000-1b2c3d4e-c000.snappy.parquet"]


def test_unwritable_errors_or_report_fail_before_any_work(tmp_path, tiny_pipeline, news_documents):
    src = _write_jsonl(tmp_path / "news.jsonl", news_documents[:2])
    out = tmp_path / "o.parquet"
    for options in (dict(errors=str(tmp_path / "no" / "e.jsonl")), dict(report=str(tmp_path / "no" / "r.json")),
                    dict(report=str(tmp_path)), dict(outcomes=str(tmp_path / "no" / "d.parquet"))):
        with pytest.raises(NerbatchError, match="cannot write"):
            run_job(RunOptions(inputs=[str(src)], output=str(out), **options), tiny_pipeline)
    for outcomes in ("d.csv", "outcomes/"):  # no folder of outcomes and no format option: say what works
        with pytest.raises(NerbatchError, match="^--outcomes .*: name a .parquet, .jsonl or .jsonl.gz file$"):
            run_job(RunOptions(inputs=[str(src)], output=str(out), outcomes=str(tmp_path / outcomes)), tiny_pipeline)
    for errors in ("e.parquet", "e.log"):  # error records are JSON lines, and are named so
        with pytest.raises(NerbatchError, match="^--errors .*: error records are JSON lines; name a .jsonl or "):
            run_job(RunOptions(inputs=[str(src)], output=str(out), errors=str(tmp_path / errors)), tiny_pipeline)
    with pytest.raises(NerbatchError, match="o.parquet' is named as a parquet file, not jsonl"):
        run_job(RunOptions(inputs=[str(src)], output=str(out), fmt="jsonl"), tiny_pipeline)
    assert not out.exists() and not list(tmp_path.glob(".*nerbatch-work"))


@pytest.mark.parametrize("option, value", [("batch_size", 0), ("batch_size", -5), ("max_error_rate", float("nan")),
                                           ("max_error_rate", -1.0), ("max_doc_chars", 0), ("id_field", " ")])
def test_bad_options_are_refused_before_any_work(tmp_path, tiny_pipeline, news_documents, option, value):
    src = _write_jsonl(tmp_path / "news.jsonl", news_documents[:1])
    with pytest.raises(NerbatchError, match=option):
        run_job(RunOptions(inputs=[str(src)], output=str(tmp_path / "o.parquet"), **{option: value}), tiny_pipeline)
    assert not list(tmp_path.glob(".*nerbatch-work"))


def test_a_kept_field_name_that_is_not_utf8_is_refused_on_one_line(tmp_path, news_documents):
    """A shell argument's bytes that are not UTF-8 reach Python as a lone surrogate; no column can be named so."""
    src = _write_jsonl(tmp_path / "news.jsonl", news_documents[:1])
    done = subprocess.run([sys.executable, "-m", "nerbatch", "run", "-i", str(src), "-o", str(tmp_path / "o.parquet"),
                           "-q", b"--keep-fields=ti\xfftle"], capture_output=True)
    assert done.returncode == 2, done.stderr
    assert done.stderr.decode(errors="replace").strip().splitlines() == [
        "nerbatch: error: kept field name 'ti\\udcfftle' is not valid UTF-8"]
    assert not list(tmp_path.glob(".*nerbatch-work"))


def test_an_input_not_read_to_its_end_fails_the_run(tmp_path, tiny_bundle, news_documents):
    from typer.testing import CliRunner

    from nerbatch.cli import app

    docs = [dict(d, id=f"{n}-{d['id']}") for n in range(40) for d in news_documents]
    whole = _write_jsonl(tmp_path / "whole.jsonl.gz", docs, compress=True).read_bytes()
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    report = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["run", "-i", str(cut), "-o", str(tmp_path / "o.parquet"), "-q",
                                      "--model", str(tiny_bundle), "--report", str(report), "--max-error-rate", "0.5"])
    assert result.exit_code == 1
    assert "1 input(s) could not be read to the end" in result.output
    saved = json.loads(report.read_text())
    assert saved["incomplete_inputs"] == [str(cut)]
    assert saved["docs_failed"] == 1 and 0 < saved["docs_ok"] < len(docs)  # one error stands for the unread rest


def test_an_input_that_vanishes_while_the_model_loads_is_an_error_record(tmp_path, tiny_bundle, news_documents,
                                                                           monkeypatch):
    from typer.testing import CliRunner

    from nerbatch import bundle
    from nerbatch.cli import app

    kept = _write_jsonl(tmp_path / "kept.jsonl", news_documents[:2])
    gone = _write_jsonl(tmp_path / "gone.jsonl", news_documents[2:4])
    load_bundle = bundle.load_bundle

    def load_while_the_input_is_deleted(path):
        gone.unlink()
        return load_bundle(path)

    monkeypatch.setattr(bundle, "load_bundle", load_while_the_input_is_deleted)
    report = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["run", "-i", str(kept), "-i", str(gone), "-o", str(tmp_path / "o.parquet"),
                                      "-q", "--model", str(tiny_bundle), "--report", str(report)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "could not be read to the end" in result.output
    saved = json.loads(report.read_text())
    assert saved["docs_ok"] == 2 and saved["docs_failed"] == 1 and saved["incomplete_inputs"] == [str(gone)]
    errors = [json.loads(line) for line in (tmp_path / "_o.parquet.errors.jsonl").read_text().splitlines()]
    assert [(e["source"], e["reason"].split(":")[0]) for e in errors] == [(str(gone), "read_error")]
    assert saved["seconds"] >= saved["model_load_seconds"] > 0 and saved["tokens_per_s"] > 0


def test_progress_is_told_when_the_model_has_loaded_then_of_every_document(tmp_path, tiny_bundle, news_documents,
                                                                            monkeypatch):
    from nerbatch import bundle

    src = _write_jsonl(tmp_path / "news.jsonl", news_documents[:5])
    events = []
    load = bundle.load_bundle
    monkeypatch.setattr(bundle, "load_bundle", lambda path: events.append("loading") or load(path))
    report = run_job(RunOptions(inputs=[str(src)], output=str(tmp_path / "o.parquet"), model=str(tiny_bundle)),
                     on_progress=lambda docs, tokens: events.append((docs, tokens)))
    assert events[:2] == ["loading", (0, 0)]  # progress rates count from here, not from the model's load
    assert sum(docs for docs, _ in events[2:]) == 5 and sum(t for _, t in events[2:]) == report.tokens


def test_a_second_run_on_the_same_output_is_refused(tmp_path, tiny_pipeline, news_documents):
    from nerbatch.runner import WorkFolder

    src = _write_jsonl(tmp_path / "news.jsonl", news_documents[:2])
    out = tmp_path / "o.parquet"
    first = WorkFolder(str(out))  # as a run in progress holds it
    first.begin({"any": 1}, resume=False)
    (first.path / "records-00000.parquet.work").write_bytes(b"in progress")
    with pytest.raises(NerbatchError, match="another nerbatch run is writing"):
        run_job(RunOptions(inputs=[str(src)], output=str(out)), tiny_pipeline)
    with pytest.raises(NerbatchError, match="another nerbatch run is writing"):  # before loading a model
        run_job(RunOptions(inputs=[str(src)], output=str(out), model=str(tmp_path / "no-bundle")))
    assert (first.path / "records-00000.parquet.work").read_bytes() == b"in progress"
    first.remove()
    with pytest.raises(NerbatchError, match="model bundle not found"):
        run_job(RunOptions(inputs=[str(src)], output=str(out), model=str(tmp_path / "no-bundle")))
    assert not first.path.exists()  # a run that never started leaves no work folder
    assert run_job(RunOptions(inputs=[str(src)], output=str(out)), tiny_pipeline).docs_ok == 2


def test_resume_refuses_another_output_format_and_keeps_the_parts(tmp_path, tiny_pipeline, news_documents):
    from nerbatch.runner import WorkFolder, _fingerprint

    src = _write_jsonl(tmp_path / "news.jsonl", news_documents[:2])
    out = str(tmp_path / "ds") + "/"
    parquet = RunOptions(inputs=[str(src)], output=out)
    work = WorkFolder(out)
    work.begin(_fingerprint(parquet, [str(src)], tiny_pipeline.model_name), resume=False)
    work.mark_complete("elsewhere.jsonl", {"part": "records-00000.parquet.work"})  # as a killed run leaves it
    work.release()
    with pytest.raises(NerbatchError, match="cannot resume"):
        run_job(RunOptions(inputs=[str(src)], output=out, fmt="jsonl", resume=True), tiny_pipeline)
    assert work.manifest_path.is_file()


def test_temp_files_of_a_killed_merge_are_removed(tmp_path, tiny_pipeline, news_documents):
    src = _write_jsonl(tmp_path / "news.jsonl", news_documents[:2])
    stale = [tmp_path / ".o.jsonl.tmp-99999-0", tmp_path / "._o.jsonl.errors.jsonl.tmp-99999-1"]
    for path in stale:
        path.write_text("half written")
    run_job(RunOptions(inputs=[str(src)], output=str(tmp_path / "o.jsonl")), tiny_pipeline)
    assert not any(path.exists() for path in stale)

    folder = tmp_path / "ds"
    folder.mkdir()
    stale = [folder / ".part-00000.parquet.tmp-staged-99999", folder / "..part-00001.parquet.tmp-staged-99999.tmp-99999-1"]
    for path in stale:
        path.write_text("half written")
    run_job(RunOptions(inputs=[str(src)], output=f"{folder}/"), tiny_pipeline)
    assert sorted(os.listdir(folder)) == ["part-00000.parquet"]

    # an output name is not a glob pattern: another output's live temp file is not this run's to remove
    others = tmp_path / ".o1.jsonl.tmp-4242-0"
    own = tmp_path / ".o[1].jsonl.tmp-99999-0"
    for path in (others, own):
        path.write_text("half written")
    run_job(RunOptions(inputs=[str(src)], output=str(tmp_path / "o[1].jsonl")), tiny_pipeline)
    assert others.exists() and not own.exists()


def test_hard_links_work_folder_and_temp_names_never_cost_an_input(tmp_path, tiny_pipeline, news_documents):
    src = _write_jsonl(tmp_path / "news.jsonl", news_documents[:2])
    before = src.read_bytes()
    os.link(src, tmp_path / "same-file.json")
    with pytest.raises(NerbatchError, match="the report .* is also an input"):
        run_job(RunOptions(inputs=[str(src)], output=str(tmp_path / "o.jsonl"), report=str(tmp_path / "same-file.json")),
                tiny_pipeline)
    work = tmp_path / ".o.jsonl.nerbatch-work"
    work.mkdir()
    hidden = _write_jsonl(work / "in.jsonl", news_documents[:1])
    with pytest.raises(NerbatchError, match="inside .* which the run deletes"):
        run_job(RunOptions(inputs=[str(hidden)], output=str(tmp_path / "o.jsonl")), tiny_pipeline)
    assert hidden.is_file()
    named_like_temp = _write_jsonl(tmp_path / ".x.jsonl.tmp-keep", news_documents[:1])
    assert run_job(RunOptions(inputs=[str(named_like_temp)], output=str(tmp_path / "x.jsonl")), tiny_pipeline).docs_ok == 1
    assert named_like_temp.is_file() and src.read_bytes() == before


def test_an_output_folder_that_is_a_file_fails_before_any_work(tmp_path, tiny_pipeline, news_documents):
    src = _write_jsonl(tmp_path / "news.jsonl", news_documents[:2])
    (tmp_path / "afile").write_text("x")
    with pytest.raises(NerbatchError, match="a file has that name"):
        run_job(RunOptions(inputs=[str(src)], output=str(tmp_path / "afile") + "/"), tiny_pipeline)
    assert not list(tmp_path.glob(".*nerbatch-work"))


def test_progress_is_appended_once_per_input_and_a_torn_line_is_done_again(tmp_path, tiny_pipeline, news_documents,
                                                                           monkeypatch):
    # Rewriting a whole manifest per finished input made runs over thousands of files quadratic.
    from nerbatch import runner

    sources = [str(_write_jsonl(tmp_path / f"in{i}.jsonl", news_documents[i * 2:(i + 1) * 2])) for i in range(4)]
    out = str(tmp_path / "o.jsonl")
    options = RunOptions(inputs=sources, output=out, resume=True)
    run_job(options, tiny_pipeline)
    expected = Path(out).read_text()
    work = runner.work_folder_path(out)
    manifests = []
    complete_input = runner._complete_input

    def killed_at_the_fourth(work_folder, current):
        manifests.append(os.stat(work / "manifest.json"))
        if current.source == sources[3]:
            raise KeyboardInterrupt
        complete_input(work_folder, current)

    monkeypatch.setattr(runner, "_complete_input", killed_at_the_fourth)
    with pytest.raises(KeyboardInterrupt):
        run_job(RunOptions(inputs=sources, output=out), tiny_pipeline)
    monkeypatch.undo()
    assert len({(m.st_ino, m.st_mtime_ns) for m in manifests}) == 1  # written once, at the start
    journal = work / "completed.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    assert [json.loads(line)[0] for line in lines] == sources[:3]
    journal.write_bytes(b"".join(lines[:2]) + lines[2][:-9])  # the kill tore the third line
    report = run_job(options, tiny_pipeline)
    assert report.resumed_inputs == sources[:2] and report.docs_in == 8 and Path(out).read_text() == expected
    assert "tokens/s over the inputs done now; 2 resumed)" in report.summary()


def test_a_run_first_completes_a_publish_that_a_crash_interrupted(tmp_path, tiny_pipeline, news_documents,
                                                                   monkeypatch):
    # Its staged parts would otherwise be removed as stale temp files, leaving old and new parts mixed.
    from nerbatch import runner
    from tests.crash_helpers import publish_killed_at_the_second_part

    out = tmp_path / "entities"
    row = {"doc_id": "old", "sentence": 0, "label": "geo", "text": "Paris", "start": 0, "end": 5, "score": 0.9,
           "model": "m"}
    publish_killed_at_the_second_part(out, [dict(row, doc_id=f"old-{i}") for i in range(3)],
                                      [dict(row, doc_id=f"new-{i}") for i in range(3)], monkeypatch)

    def killed_reading(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_complete_input", killed_reading)
    src = _write_jsonl(tmp_path / "news.jsonl", news_documents[:2])
    with pytest.raises(KeyboardInterrupt):  # the next run dies before it completes an input
        run_job(RunOptions(inputs=[str(src)], output=str(out) + "/"), tiny_pipeline)
    assert sorted(pq.read_table(out).column("doc_id").to_pylist()) == ["new-0", "new-1", "new-2"]


def test_a_kill_while_the_work_folder_is_removed_does_not_stick_resume(tmp_path, tiny_pipeline, news_documents,
                                                                       monkeypatch):
    from nerbatch import runner

    sources = [str(_write_jsonl(tmp_path / f"in{i}.jsonl", news_documents[i * 3:(i + 1) * 3])) for i in range(3)]
    out = str(tmp_path / "o.jsonl")
    options = RunOptions(inputs=sources, output=out, outcomes=str(tmp_path / "outcomes.jsonl"), resume=True)
    run_job(options, tiny_pipeline)
    expected = Path(out).read_text()
    work = runner.work_folder_path(out)

    def killed(path, ignore_errors=False):  # the process dies as removal starts
        raise KeyboardInterrupt

    monkeypatch.setattr(runner.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        run_job(RunOptions(inputs=sources, output=out, outcomes=options.outcomes), tiny_pipeline)
    monkeypatch.undo()
    assert work.is_dir() and not (work / "manifest.json").exists()  # the manifest goes first
    assert run_job(options, tiny_pipeline).docs_in == 9 and Path(out).read_text() == expected

    # A manifest that lists parts which are gone (left so by an older nerbatch): those inputs are done again.
    worker = runner.WorkFolder(out)
    worker.begin(runner._fingerprint(options, sources, tiny_pipeline.model_name), resume=False)
    worker.mark_complete(sources[1], {"part": "part-00001.jsonl", "errors_part": "errors-00001.jsonl",
                                      "outcomes_part": "outcomes-00001.jsonl", "counts": {}, "incomplete": False})
    worker.release()
    report = run_job(options, tiny_pipeline)
    assert report.resumed_inputs == [] and report.docs_in == 9 and Path(out).read_text() == expected


def _interrupted_after(n_inputs: int, options, pipeline, monkeypatch) -> Path:
    """Run ``options`` until ``n_inputs`` inputs are finished, then stop as a kill would; the work folder."""
    from nerbatch import runner

    real = runner._complete_input
    done = []

    def complete(work, current):
        if len(done) == n_inputs:
            raise KeyboardInterrupt
        real(work, current)
        done.append(current.source)

    monkeypatch.setattr(runner, "_complete_input", complete)
    with pytest.raises(KeyboardInterrupt):
        run_job(options, pipeline)
    monkeypatch.undo()
    return runner.work_folder_path(options.output)


def test_an_interrupted_run_leaves_no_file_that_a_lake_glob_takes_for_records(tmp_path, tiny_pipeline,
                                                                               news_documents, monkeypatch):
    """DuckDB's and polars' `lake/**/part-*.parquet` (or `**/*.parquet`) descend into hidden folders:
    the work folder's parts must match neither, or readers see a half-done day twice."""
    import glob

    sources = [str(_write_jsonl(tmp_path / f"in{i}.jsonl", news_documents[i * 3:(i + 1) * 3])) for i in range(3)]
    (tmp_path / "lake").mkdir()
    options = RunOptions(inputs=sources, output=str(tmp_path / "lake" / "day=1") + "/", resume=True,
                         outcomes=str(tmp_path / "outcomes.parquet"), errors=str(tmp_path / "errors.jsonl"))
    published = run_job(options, tiny_pipeline).entities
    work = _interrupted_after(2, options, tiny_pipeline, monkeypatch)
    assert len(list(work.iterdir())) > 3  # the finished inputs' parts are there

    def lake_glob(pattern: str) -> list[str]:
        return sorted(glob.glob(str(tmp_path / "lake" / "**" / pattern), recursive=True, include_hidden=True))

    parts = lake_glob("part-*.parquet")
    assert parts == [str(tmp_path / "lake" / "day=1" / "part-00000.parquet")]
    assert lake_glob("*.parquet") == parts
    assert pq.read_table(parts[0]).num_rows == published


def test_resume_takes_the_finished_inputs_however_their_paths_are_written(tmp_path, tiny_pipeline, news_documents,
                                                                        monkeypatch):
    """Cron runs with absolute paths through a link to a volume; an operator resumes by hand from the
    folder, with relative ones (and the working directory is the volume's real path). Error and outcome
    records name every input as the resuming run does, as an uninterrupted run of its command would."""
    (tmp_path / "volume" / "in").mkdir(parents=True)
    (tmp_path / "data").symlink_to(tmp_path / "volume")
    for i in range(3):
        _write_jsonl(tmp_path / "volume" / "in" / f"{i}.jsonl",
                     [*news_documents[i * 2:(i + 1) * 2], {"id": f"bad{i}", "text": 5}])

    def options(inputs, name, resume=False):
        return RunOptions(inputs=inputs, output=f"{name}.jsonl", errors=str(tmp_path / f"{name}-errors.jsonl"),
                          outcomes=str(tmp_path / f"{name}-outcomes.jsonl"), resume=resume)

    _interrupted_after(2, options([str(tmp_path / "data" / "in")], str(tmp_path / "data" / "o"), resume=True),
                       tiny_pipeline, monkeypatch)
    monkeypatch.chdir(tmp_path / "data")
    whole = run_job(options(["./in/"], str(tmp_path / "whole")), tiny_pipeline)
    report = run_job(options(["./in/"], "o", resume=True), tiny_pipeline)
    assert report.resumed_inputs == ["./in/0.jsonl", "./in/1.jsonl"] and report.docs_in == whole.docs_in == 9
    assert (tmp_path / "volume" / "o.jsonl").read_text() == (tmp_path / "whole.jsonl").read_text()
    for kind in ("errors", "outcomes"):
        resumed = (tmp_path / f"o-{kind}.jsonl").read_text()
        assert resumed == (tmp_path / f"whole-{kind}.jsonl").read_text()
        assert {json.loads(line)["source"] for line in resumed.splitlines()} == {f"./in/{i}.jsonl" for i in range(3)}


def test_resume_redoes_a_finished_input_now_named_otherwise(tmp_path, tiny_pipeline, news_documents, monkeypatch):
    """Documents without an id are named after their file: read before through a link of another name,
    an input is read again, so that its records are those an uninterrupted run of the command gives."""
    (tmp_path / "real").mkdir()
    _write_jsonl(tmp_path / "real" / "news.jsonl", [{"text": news_documents[0]["text"]}])
    (tmp_path / "link.jsonl").symlink_to(tmp_path / "real" / "news.jsonl")
    _write_jsonl(tmp_path / "b.jsonl", news_documents[1:3])

    def options(first, name, resume=False):
        return RunOptions(inputs=[str(tmp_path / first), str(tmp_path / "b.jsonl")], output=str(tmp_path / name),
                          outcomes=str(tmp_path / f"{name}-outcomes.jsonl"), resume=resume)

    _interrupted_after(1, options("link.jsonl", "o.jsonl", resume=True), tiny_pipeline, monkeypatch)
    whole = run_job(options("real/news.jsonl", "whole.jsonl"), tiny_pipeline)
    report = run_job(options("real/news.jsonl", "o.jsonl", resume=True), tiny_pipeline)
    assert report.resumed_inputs == [] and report.docs_in == whole.docs_in == 3
    assert (tmp_path / "o.jsonl").read_text() == (tmp_path / "whole.jsonl").read_text()
    assert (tmp_path / "o.jsonl-outcomes.jsonl").read_text() == (tmp_path / "whole.jsonl-outcomes.jsonl").read_text()
    assert '"doc_id": "news.jsonl:1"' in (tmp_path / "o.jsonl").read_text()


def test_two_inputs_whose_paths_only_look_alike_are_both_read(tmp_path, tiny_pipeline, news_documents):
    """``lnk/../a.jsonl`` through a link to ``other/real`` is ``other/a.jsonl``, not ``a.jsonl``."""
    (tmp_path / "other" / "real").mkdir(parents=True)
    (tmp_path / "lnk").symlink_to(tmp_path / "other" / "real")
    _write_jsonl(tmp_path / "a.jsonl", [dict(news_documents[0], id="A")])
    _write_jsonl(tmp_path / "other" / "a.jsonl", [dict(news_documents[1], id="B")])
    out = tmp_path / "o.jsonl"
    report = run_job(RunOptions(inputs=[str(tmp_path / "a.jsonl"), str(tmp_path / "lnk" / ".." / "a.jsonl")],
                                output=str(out)), tiny_pipeline)
    assert report.resumed_inputs == [] and report.docs_in == 2
    assert {json.loads(line)["doc_id"] for line in out.read_text().splitlines()} == {"A", "B"}


def test_resume_redoes_inputs_whose_parts_were_damaged(tmp_path, tiny_pipeline, news_documents, monkeypatch):
    sources = [str(_write_jsonl(tmp_path / f"in{i}.jsonl", news_documents[i * 3:(i + 1) * 3] + ["{not json"]))
               for i in range(4)]

    def options(name: str) -> RunOptions:
        return RunOptions(inputs=sources, output=str(tmp_path / f"{name}.parquet"), max_error_rate=1.0,
                          outcomes=str(tmp_path / f"{name}-outcomes.jsonl"), resume=True)

    whole = run_job(options("whole"), tiny_pipeline)
    work = _interrupted_after(3, options("resumed"), tiny_pipeline, monkeypatch)
    (work / "errors-00000.jsonl.work").write_text("")  # emptied
    part = work / "records-00001.parquet.work"
    part.write_bytes(part.read_bytes()[:300])  # truncated
    report = run_job(options("resumed"), tiny_pipeline)
    assert report.resumed_inputs == [sources[2]]
    assert (report.docs_in, report.docs_failed, report.entities) == (whole.docs_in, whole.docs_failed, whole.entities)
    assert pq.read_table(tmp_path / "resumed.parquet").equals(pq.read_table(tmp_path / "whole.parquet"))
    assert Path(report.errors).read_text() == Path(whole.errors).read_text()
    assert (tmp_path / "resumed-outcomes.jsonl").read_text() == (tmp_path / "whole-outcomes.jsonl").read_text()

    # A part damaged without changing its size is done again too; a manifest cut short starts afresh.
    work = _interrupted_after(2, options("more"), tiny_pipeline, monkeypatch)
    part = work / "records-00000.parquet.work"
    part.write_bytes(b"\0" * part.stat().st_size)
    report = run_job(options("more"), tiny_pipeline)
    assert report.resumed_inputs == [sources[1]]
    assert pq.read_table(tmp_path / "more.parquet").equals(pq.read_table(tmp_path / "whole.parquet"))
    work = _interrupted_after(2, options("again"), tiny_pipeline, monkeypatch)
    (work / "manifest.json").write_text('{"version": 4, "finger')
    assert run_job(options("again"), tiny_pipeline).resumed_inputs == []


def test_a_work_part_damaged_during_the_run_is_named(tmp_path, tiny_pipeline, news_documents, monkeypatch):
    from nerbatch import runner

    src = _write_jsonl(tmp_path / "in.jsonl", news_documents[:3])
    real = runner._merge_parts

    def damage_then_merge(work, *args):
        (work.path / "records-00000.parquet.work").write_bytes(b"PAR1")
        real(work, *args)

    monkeypatch.setattr(runner, "_merge_parts", damage_then_merge)
    with pytest.raises(OutputError, match=r"work part '.*records-00000.parquet.work' is damaged \(ArrowInvalid: .*\); "
                                          "rerun without --resume, or remove '.*nerbatch-work' to start afresh"):
        run_job(RunOptions(inputs=[str(src)], output=str(tmp_path / "o.parquet")), tiny_pipeline)
    assert not (tmp_path / "o.parquet").exists()


@pytest.mark.parametrize("failing, message", [("report.json", "report .* cannot be written: No space left"),
                                               ("manifest.json", "cannot record progress in .*: No space left")])
def test_a_full_disk_leaves_no_half_written_report_or_manifest(tmp_path, tiny_pipeline, news_documents, monkeypatch,
                                                                 failing, message):
    from nerbatch import sinks

    src = _write_jsonl(tmp_path / "news.jsonl", news_documents[:2])
    report = tmp_path / "report.json"
    report.write_text('{"previous": "run"}')
    real_fsync = os.fsync

    def disk_full(fd):
        if f"/.{failing}.tmp-" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(sinks.os, "fsync", disk_full)
    with pytest.raises(NerbatchError, match=message):
        run_job(RunOptions(inputs=[str(src)], output=str(tmp_path / "o.jsonl"), report=str(report)), tiny_pipeline)
    assert json.loads(report.read_text()) == {"previous": "run"}
    leftovers = [p.name for p in tmp_path.rglob(f".{failing}.tmp-*")]
    assert leftovers == []


def test_relative_paths_with_a_colon_are_local_files_not_uris(tmp_path, tiny_pipeline, news_documents, monkeypatch):
    # Time-stamped names ("…T10:00…") and "local:x" would be read by pyarrow as URIs when relative.
    monkeypatch.chdir(tmp_path)
    docs = news_documents[:3]
    pq.write_table(pa.Table.from_pylist(docs), tmp_path / "news-2024-01-01T10:00:00.parquet")
    pq.write_table(pa.Table.from_pylist(docs[:1]), tmp_path / "local:x.parquet")
    pq.write_table(pa.Table.from_pylist(news_documents[3:5]), tmp_path / "x.parquet")  # what "local:x" must not read
    expected = run_job(RunOptions(inputs=["news-2024-01-01T10:00:00.parquet"], output="plain.parquet"),
                       tiny_pipeline)
    assert expected.docs_ok == 3 and expected.entities > 0
    plain = pq.read_table("plain.parquet").to_pylist()
    os.mkdir("day-2024-01-01T10:00")
    for output in ("ents-2024-01-01T10:00.parquet", "day-2024-01-01T10:00/e.parquet", "ents-2024-01-01T10:00/"):
        report = run_job(RunOptions(inputs=["news-2024-01-01T10:00:00.parquet"], output=output), tiny_pipeline)
        assert (report.docs_ok, report.docs_failed) == (3, 0), output
        assert pq.read_table(tmp_path / output).to_pylist() == plain, output
    # a second run into that folder knows the parts there for its own and replaces them
    run_job(RunOptions(inputs=["news-2024-01-01T10:00:00.parquet"], output="ents-2024-01-01T10:00/"), tiny_pipeline)
    assert pq.read_table(tmp_path / "ents-2024-01-01T10:00").to_pylist() == plain
    report = run_job(RunOptions(inputs=["local:x.parquet"], output="local:e.jsonl"), tiny_pipeline)
    assert (report.docs_in, report.docs_ok) == (1, 1)
    texts = {d["id"]: d["text"] for d in docs[:1]}
    rows = [json.loads(line) for line in Path("local:e.jsonl").read_text(encoding="utf-8").splitlines()]
    assert rows and {r["doc_id"] for r in rows} == set(texts)
    _check_offsets(rows, texts)


def test_the_output_is_published_after_its_errors_and_outcomes(tmp_path, tiny_pipeline, news_documents, monkeypatch):
    # A job that starts when the output appears must not find it beside the previous run's errors.
    from nerbatch import runner

    first = _write_jsonl(tmp_path / "first.jsonl", news_documents[:2] + ["{not json"])
    second = _write_jsonl(tmp_path / "second.jsonl", news_documents[2:5] + ["[1]"])
    out, outcomes = tmp_path / "e.parquet", tmp_path / "outcomes.jsonl"
    options = dict(output=str(out), outcomes=str(outcomes), max_error_rate=1.0)
    run_job(RunOptions(inputs=[str(first)], **options), tiny_pipeline)
    before = out.read_bytes()
    real_open_sink = runner.open_sink

    def crash_at_outcomes(path, *args, **kwargs):
        if str(path) == str(outcomes):
            raise KeyboardInterrupt  # a stop or crash between the files
        return real_open_sink(path, *args, **kwargs)

    monkeypatch.setattr(runner, "open_sink", crash_at_outcomes)
    with pytest.raises(KeyboardInterrupt):
        run_job(RunOptions(inputs=[str(second)], **options), tiny_pipeline)
    monkeypatch.undo()
    assert out.read_bytes() == before  # not yet published: the previous run's output stays
    report = run_job(RunOptions(inputs=[str(second)], resume=True, **options), tiny_pipeline)
    assert report.resumed_inputs == [str(second)]
    sources = {json.loads(line)["source"] for line in outcomes.read_text().splitlines()}
    errors = {json.loads(line)["source"] for line in Path(report.errors).read_text().splitlines()}
    assert sources == errors == {str(second)}
    assert json.loads(pq.read_metadata(out).metadata[b"inputs"]) == [str(second)]


def _small_inputs(tmp_path, news_documents) -> list[str]:
    """Small files as a corpus of one file per article gives them: failures, an empty file, a file of failures
    only, a gzip file cut part-way, between files of documents."""
    whole = _write_jsonl(tmp_path / "whole.jsonl.gz", [dict(d, id=f"cut-{n}-{d['id']}") for n in range(3)
                                                        for d in news_documents], compress=True).read_bytes()
    cut = tmp_path / "c3.jsonl.gz"
    cut.write_bytes(whole[: len(whole) // 2])
    (tmp_path / "whole.jsonl.gz").unlink()
    files = [
        _write_jsonl(tmp_path / "c0.jsonl", [news_documents[0], "{not json", news_documents[1]]),
        _write_jsonl(tmp_path / "c1.jsonl", []),
        _write_jsonl(tmp_path / "c2.jsonl", [{"id": "no-text"}, "[1, 2]"]),
        cut,
        *[_write_jsonl(tmp_path / f"c{4 + i}.jsonl", [news_documents[2 + i]]) for i in range(6)],
        _write_jsonl(tmp_path / "c10.jsonl", [{"id": "blank", "text": " "}]),
    ]
    return [str(f) for f in files]


def test_small_inputs_share_prediction_batches(tmp_path, tiny_pipeline, news_documents, monkeypatch):
    # A model call costs milliseconds whatever its batch; one call per file made a folder of one-article
    # files ten times slower than the same articles in one file.
    sources = _small_inputs(tmp_path, news_documents)
    calls = []
    tag = tiny_pipeline.tagger.tag
    monkeypatch.setattr(tiny_pipeline.tagger, "tag", lambda sentences: calls.append(len(sentences)) or tag(sentences))
    report = run_job(RunOptions(inputs=sources, output=str(tmp_path / "o.parquet")), tiny_pipeline)
    # every chunk but the last holds at least chunk_sentences sentences (or items), whichever files they come from
    assert sum(calls) == report.sentences and len(calls) <= -(-report.sentences // tiny_pipeline.chunk_sentences)
    assert len(calls) < len(sources) // 2


@pytest.mark.parametrize("chunk_sentences", [1, 3, 2048])
def test_inputs_annotated_together_keep_their_own_records(tmp_path, tiny_bundle, news_documents, chunk_sentences,
                                                          monkeypatch):
    """Whether a chunk ends inside a file, at its end or holds them all, the records, errors, outcomes and
    per-input figures (which --resume reuses) are those of running each input alone."""
    from nerbatch import runner
    from nerbatch.bundle import load_bundle
    from nerbatch.pipeline import NerPipeline

    pipeline = NerPipeline(load_bundle(tiny_bundle), batch_size=64, chunk_sentences=chunk_sentences)
    sources = _small_inputs(tmp_path, news_documents)
    journalled = {}
    mark_complete = runner.WorkFolder.mark_complete

    def journal(work, source, entry):
        journalled[source] = (entry["counts"], entry["incomplete"])
        mark_complete(work, source, entry)

    monkeypatch.setattr(runner.WorkFolder, "mark_complete", journal)

    def run(inputs, name):
        options = RunOptions(inputs=inputs, output=str(tmp_path / f"{name}.jsonl"),
                             outcomes=str(tmp_path / f"{name}-outcomes.jsonl"))
        report = run_job(options, pipeline)
        return report, [Path(p).read_text() for p in (options.output, options.outcomes, report.errors)]

    alone = [run([source], f"alone{i}") for i, source in enumerate(sources)]
    alone_entries = dict(journalled)
    journalled.clear()
    report, files = run(sources, "together")
    assert journalled == alone_entries
    assert files == ["".join(texts) for texts in zip(*(f for _, f in alone))]
    for figure in ("docs_in", "docs_ok", "docs_failed", "docs_without_entities", "sentences", "tokens", "entities"):
        assert getattr(report, figure) == sum(getattr(r, figure) for r, _ in alone), figure
    assert report.incomplete_inputs == [sources[3]] and report.docs_failed == 5 and report.entities > 0


def test_resumed_inputs_keep_their_field_counts_and_an_older_journal_leaves_them_unknown(
        tmp_path, tiny_pipeline, news_documents, monkeypatch):
    for i in range(3):  # documents without ids, and without the kept field
        _write_jsonl(tmp_path / f"{i}.jsonl", [{"text": d["text"]} for d in news_documents[i * 2:(i + 1) * 2]])
    inputs = [str(tmp_path / f"{i}.jsonl") for i in range(3)]

    def options(name):
        return RunOptions(inputs=inputs, output=str(tmp_path / f"{name}.jsonl"), keep_fields=("titel",), resume=True)

    whole = run_job(options("whole"), tiny_pipeline)
    assert (whole.docs_ok, whole.docs_with_generated_id, whole.kept_fields_missing) == (6, 6, {"titel": 6})
    _interrupted_after(2, options("resumed"), tiny_pipeline, monkeypatch)
    resumed = run_job(options("resumed"), tiny_pipeline)
    assert (resumed.docs_with_generated_id, resumed.kept_fields_missing) == (6, {"titel": 6})
    assert len(resumed.field_warnings("id", id_field_given=False)) == 1

    work = _interrupted_after(2, options("older"), tiny_pipeline, monkeypatch)
    journal = work / "completed.jsonl"
    entries = [json.loads(line) for line in journal.read_text().splitlines()]
    for _, entry in entries:  # as an earlier nerbatch wrote them
        del entry["counts"]["docs_with_generated_id"], entry["counts"]["kept_fields_missing"]
    journal.write_text("".join(json.dumps(e) + "\n" for e in entries))
    older = run_job(options("older"), tiny_pipeline)
    assert older.docs_ok == 6 and (older.docs_with_generated_id, older.kept_fields_missing) == (None, None)
    assert older.field_warnings("id", id_field_given=True) == []  # unknown, so no warning from a partial count
