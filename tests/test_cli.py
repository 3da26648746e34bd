import json
import re
import shlex
import shutil
import signal
import sys
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from nerbatch.cli import app

runner = CliRunner()


def test_info_and_evaluate_through_the_cli(tiny_bundle, gmb_sample, tmp_path):
    result = runner.invoke(app, ["info", "--model", str(tiny_bundle)])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["arch"] == "default" and info["model"].startswith("gmb-default@")

    report = tmp_path / "report.json"
    result = runner.invoke(app, ["evaluate", "--model", str(tiny_bundle), "--data", str(gmb_sample),
                                 "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert "micro" in result.output and "geo" in result.output
    saved = json.loads(report.read_text())
    assert saved["test"]["sentences"] == 108
    assert saved["data"]["file"] == "gmb_sample.csv" and saved["data"]["same_as_training"] is True
    assert "warning" not in result.output

    # The same sentences in another order: the test split now holds sentences the model trained on.
    lines = gmb_sample.read_text(encoding="latin1").splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith("Sentence:")] + [len(lines)]
    sentences = [lines[a:b] for a, b in zip(starts, starts[1:])]
    reordered = tmp_path / "reordered.csv"
    reordered.write_text("".join([lines[0], *(line for s in sentences[::-1] for line in s)]), encoding="latin1")
    result = runner.invoke(app, ["evaluate", "--model", str(tiny_bundle), "--data", str(reordered),
                                 "--report", str(report)])
    assert result.exit_code == 0, result.output
    assert (f"warning: {reordered} does not hold the sentences, in their order, of the corpus this model was trained "
            "on (gmb_sample.csv, sha256 ") in result.output
    saved = json.loads(report.read_text())
    assert saved["data"]["same_as_training"] is False
    assert saved["data"]["trained_on"]["file"] == "gmb_sample.csv" and saved["data"]["trained_on"]["sha256"] != \
        saved["data"]["sha256"]

    # The same sentences zipped: another file, the same corpus.
    zipped = tmp_path / "gmb_sample.csv.zip"
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(gmb_sample, "ner_dataset.csv")
    result = runner.invoke(app, ["evaluate", "--model", str(tiny_bundle), "--data", str(zipped),
                                 "--report", str(report)])
    assert result.exit_code == 0 and "warning" not in result.output, result.output
    saved = json.loads(report.read_text())
    assert saved["data"]["same_as_training"] is True and saved["data"]["sha256"] != saved["data"]["trained_on"]["sha256"]


def test_user_errors_are_one_line_and_exit_2(tmp_path, gmb_sample):
    result = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "missing"), "--data", str(gmb_sample)])
    assert result.exit_code == 2
    assert "model bundle not found" in result.output
    assert "Traceback" not in result.output

    bad = tmp_path / "bad.csv"
    bad.write_text("Sentence #,Word,POS,Tag\n,orphan,NN,O\n")
    result = runner.invoke(app, ["train", "--data", str(bad), "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "line 2" in result.output


@pytest.mark.parametrize("args, message", [
    (["run", "-i", "{news}", "-o", "-", "--format", "jsonl"], "'-': outputs are files, not standard output"),
    (["run", "-i", "-", "-o", "o.jsonl"], "input '-': inputs are files, not standard input; save it to a file first"),
    (["info", "--model", "{model_file}"], "model.keras: a file; a model bundle is the folder that holds manifest.json"),
])
def test_a_dash_or_a_bundles_file_is_refused_saying_what_to_give(tmp_path, tiny_bundle, monkeypatch, args, message):
    # "-o - --format jsonl" wrote a file named "-"; "-i -" said the input did not exist
    monkeypatch.chdir(tmp_path)
    news = tmp_path / "news.jsonl"
    news.write_text('{"id": "a", "text": "Angela Merkel visited Paris."}\n')
    result = runner.invoke(app, [a.format(news=news, model_file=tiny_bundle / "model.keras") for a in args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["news.jsonl"]


@pytest.mark.parametrize("args", [
    ["evaluate", "--data", "{sample}", "--report", ""],
    ["evaluate", "--data", "", "--report", "r.json"],
    ["info", "--model", ""],
    ["run", "-i", "{news}", "-o", "o.parquet", "--errors", ""],
    ["run", "-i", "{news}", "-o", "o.parquet", "--outcomes="],
    ["run", "-i", "{news}", "-o", "o.parquet", "--report", ""],
    ["run", "-i", "{news}", "-o", "o.parquet", "-m", ""],
    ["train", "--data", "{sample}", "--out", ""],
    ["train", "--data", "{sample}", "--out", "b", "--vectors", ""],
    ["consume", "-b", "127.0.0.1:1", "-t", "news", "-g", "ner", "--output-dir", "", "--report", "r.json"],
])
def test_an_empty_path_is_refused_not_taken_for_a_default(tmp_path, gmb_sample, monkeypatch, args):
    # "--report $REPORT" with REPORT unset: the report must not be silently skipped, nor "." be the model
    monkeypatch.chdir(tmp_path)
    news = tmp_path / "news.jsonl"
    news.write_text('{"id": "a", "text": "Angela Merkel visited Paris."}\n')
    result = runner.invoke(app, [a.format(sample=gmb_sample, news=news) for a in args])
    assert result.exit_code == 2, result.output
    assert "an empty path names no file or folder" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["news.jsonl"]


def test_train_through_the_cli(gmb_sample, tmp_path):
    out = tmp_path / "cli-bundle"
    result = runner.invoke(app, ["train", "--data", str(gmb_sample), "--out", str(out), "--arch", "seed",
                                 "--epochs", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    assert (out / "manifest.json").is_file() and "bundle written" in result.output


def test_train_refuses_unreadable_vectors_before_training(gmb_sample, tmp_path):
    ragged = tmp_path / "vectors.txt"
    ragged.write_text("the 0.1 0.2\nof 0.3\n", encoding="utf-8")
    for vectors, message in ((ragged, "vectors.txt, line 2"), (tmp_path / "missing.txt", "no such word-vector file"),
                            (tmp_path, "is a folder; give the word-vector file"),
                            (Path("/dev/null"), "is not a regular file (a pipe or a device)")):
        result = runner.invoke(app, ["train", "--data", str(gmb_sample), "--out", str(tmp_path / "v"),
                                     "--vectors", str(vectors), "--quiet"])
        assert result.exit_code == 2 and message in result.output, result.output
        assert not (tmp_path / "v").exists()


def test_unreadable_corpus_or_bundle_is_one_line_and_exit_2(tmp_path, gmb_sample, tiny_bundle, monkeypatch):
    partial = tmp_path / "partial.csv.zip"
    with zipfile.ZipFile(partial, "w") as archive:
        archive.write(gmb_sample, "ner_dataset.csv")
    partial.write_bytes(partial.read_bytes()[:2000])  # an interrupted download
    one = tmp_path / "one.csv"
    one.write_text("Sentence #,Word,POS,Tag\nSentence: 1,Paris,NNP,B-geo\n")
    for data, message in [(partial, "cannot read corpus (BadZipFile"), (one, "one.csv: has 1 sentence(s)")]:
        result = runner.invoke(app, ["evaluate", "--model", str(tiny_bundle), "--data", str(data)])
        assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output

    def unreadable(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr("nerbatch.bundle._sha256", unreadable)
    result = runner.invoke(app, ["info", "--model", str(tiny_bundle)])
    assert result.exit_code == 2 and "is unreadable (Permission denied)" in result.output


def test_evaluate_checks_its_report_path_before_scoring(tmp_path, gmb_sample, tiny_bundle):
    result = runner.invoke(app, ["evaluate", "--model", str(tiny_bundle), "--data", str(gmb_sample),
                                 "--report", str(tmp_path / "missing" / "scores.json")])
    assert result.exit_code == 2 and "cannot write" in result.output and "micro" not in result.output


@pytest.mark.parametrize("command", ["evaluate", "run"])
def test_a_report_name_ending_in_a_slash_is_refused_not_written_as_a_file(tmp_path, gmb_sample, tiny_bundle,
                                                                           news_documents, command):
    folder = tmp_path / "reports"
    documents = tmp_path / "docs.jsonl"
    documents.write_text("".join(json.dumps(d) + "\n" for d in news_documents[:2]))
    args = (["--data", str(gmb_sample)] if command == "evaluate"
            else ["-i", str(documents), "-o", str(tmp_path / "out.jsonl")])
    result = runner.invoke(app, [command, "--model", str(tiny_bundle), *args, "--report", f"{folder}/"])
    assert result.exit_code == 2 and "the name ends in /" in result.output, result.output
    assert not folder.exists() and not (tmp_path / "out.jsonl").exists()


def test_evaluate_refuses_a_corpus_without_a_type_the_model_knows(tmp_path, gmb_sample, tiny_bundle):
    import pandas as pd

    frame = pd.read_csv(gmb_sample, encoding="latin1", dtype=str, keep_default_na=False)
    frame["Tag"] = frame["Tag"].str.replace(r"^([BI])-.*", r"\1-PER", regex=True)
    corpus = tmp_path / "conll-style.csv"
    frame.to_csv(corpus, index=False, encoding="latin1")
    result = runner.invoke(app, ["evaluate", "--model", str(tiny_bundle), "--data", str(corpus)])
    assert result.exit_code == 2 and "(PER) and the model's (art, eve, geo" in result.output, result.output
    assert "micro" not in result.output

    frame = pd.read_csv(gmb_sample, encoding="latin1", dtype=str, keep_default_na=False)
    frame["Tag"] = frame["Tag"].str.replace("-nat", "-NAT")
    frame.to_csv(corpus, index=False, encoding="latin1")
    report = tmp_path / "scores.json"
    result = runner.invoke(app, ["evaluate", "--model", str(tiny_bundle), "--data", str(corpus), "--report", str(report)])
    assert result.exit_code == 0 and "does not know the corpus's type(s) NAT" in result.output, result.output
    assert "micro" in result.output
    # every type of the model and the corpus has its row, found or not: a report's keys do not depend on the sample
    per_type = json.loads(report.read_text())["test"]["per_type"]
    assert sorted(per_type) == ["NAT", "art", "eve", "geo", "gpe", "nat", "org", "per", "tim"]
    assert per_type["nat"]["support"] == 0 and per_type["NAT"]["predicted"] == 0
    assert all(re.search(rf"^{name} ", result.output, re.M) for name in per_type)


def test_a_report_never_overwrites_the_corpus_or_the_model(tmp_path, gmb_sample, tiny_bundle, news_documents):
    import shutil

    corpus = shutil.copy(gmb_sample, tmp_path / "corpus.csv")
    model = shutil.copytree(tiny_bundle, tmp_path / "model")
    before = {path: path.read_bytes() for path in [tmp_path / "corpus.csv", *model.iterdir()]}
    for report in (corpus, model / "metrics.json", model / "new.json"):
        result = runner.invoke(app, ["evaluate", "--model", str(model), "--data", str(corpus), "--report", str(report)])
        assert result.exit_code == 2 and "would overwrite the" in result.output, result.output
    news = tmp_path / "news.jsonl"
    news.write_text("".join(json.dumps(d) + "\n" for d in news_documents[:2]))
    for option, path in [("--report", model / "history.json"), ("--output", model / "records.parquet"),
                         ("--outcomes", model / "outcomes.parquet"), ("--output", f"{model}/"),
                         ("--output", f"{model}/parts/")]:
        result = runner.invoke(app, ["run", "--input", str(news), "--output", str(tmp_path / "o.parquet"),
                                     "--model", str(model), option, str(path)])
        assert result.exit_code == 2 and "would overwrite the model" in result.output, result.output
    assert {path: path.read_bytes() for path in before} == before and sorted(model.iterdir()) == sorted(
        p for p in before if p.parent == model)


def test_train_refuses_a_folder_it_would_wipe_and_bad_settings_before_reading(tmp_path, gmb_sample):
    precious = tmp_path / "project"
    (precious / "data").mkdir(parents=True)
    (precious / "notes.txt").write_text("keep me")
    for out in (precious, tmp_path / "project" / "notes.txt"):
        result = runner.invoke(app, ["train", "--data", str(gmb_sample), "--out", str(out), "--arch", "seed",
                                     "--epochs", "1", "-q"])
        assert result.exit_code == 2 and "Traceback" not in result.output
    assert (precious / "notes.txt").read_text() == "keep me" and (precious / "data").is_dir()

    missing = str(tmp_path / "no-such-corpus.csv")  # settings are refused before the corpus is even looked for
    for option, value in [("--epochs", "0"), ("--batch-size", "0"), ("--ensemble", "0"), ("--seed", "-1"),
                          ("--rare-copies", "0"), ("--max-train-sentences", "0"), ("--patience", "0")]:
        result = runner.invoke(app, ["train", "--data", missing, "--out", str(tmp_path / "m"), option, value])
        assert result.exit_code == 2 and option.lstrip("-") in result.output, (option, result.output)
    result = runner.invoke(app, ["train", "--data", missing, "--out", str(tmp_path / "m"), "--vector-words", "5"])
    assert result.exit_code == 2 and "needs --vectors" in result.output


def test_corrupt_corpus_zip_is_one_line(tmp_path, gmb_sample, tiny_bundle):
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(gmb_sample, "ner_dataset.csv")
    data = bytearray(good.read_bytes())
    for i in range(200, 5000):
        data[i] ^= 0x55  # damaged in the middle, not cut short
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(bytes(data))
    result = runner.invoke(app, ["evaluate", "--model", str(tiny_bundle), "--data", str(corrupt)])
    assert result.exit_code == 2 and "cannot read corpus" in result.output and "Traceback" not in result.output


def test_predict_prints_entities_and_refuses_text_that_is_not_utf8(tiny_bundle):
    text = "Thousands of demonstrators have marched through London to protest the war in Iraq ."
    for args, stdin in ((["predict", text], None), (["predict", "-"], text.encode("utf-8"))):
        result = runner.invoke(app, [*args, "--model", str(tiny_bundle)], input=stdin)
        assert result.exit_code == 0, result.output
        records = [json.loads(line) for line in result.output.splitlines()]
        assert records and all(text[r["start"]:r["end"]] == r["text"] for r in records)
    for args, stdin, source in ((["predict", "-"], b"Barack \xffObama visited London .", "<stdin>"),
                                (["predict", "Barack \udcffObama visited London ."], None, "<argument>")):
        result = runner.invoke(app, [*args, "--model", str(tiny_bundle)], input=stdin)
        assert result.exit_code == 2 and f"{source}: not valid UTF-8 at byte 7" in result.output, result.output


def test_train_refuses_a_corpus_without_entities_and_an_ensemble_seed_past_the_range(tmp_path, gmb_sample):
    import pandas as pd

    frame = pd.read_csv(gmb_sample, encoding="latin1", dtype=str, keep_default_na=False)
    frame["Tag"] = "O"
    only_o = tmp_path / "only_o.csv"
    frame.to_csv(only_o, index=False, encoding="latin1")
    result = runner.invoke(app, ["train", "--data", str(only_o), "--out", str(tmp_path / "o"), "--arch", "seed", "-q"])
    assert result.exit_code == 2 and "holds no entity tags" in result.output, result.output
    assert not (tmp_path / "o").exists()
    result = runner.invoke(app, ["train", "--data", str(gmb_sample), "--out", str(tmp_path / "e"),
                                 "--seed", str(2**32 - 1), "--ensemble", "2"])
    assert result.exit_code == 2 and "seed must be below 4294967295 with ensemble 2" in result.output


def test_outputs_that_are_links_or_pipes_are_refused_before_any_work(tmp_path, tiny_bundle, gmb_sample):
    import os

    # The finished file is renamed over its path, which would replace the link or pipe itself.
    fifo, target, link = tmp_path / "entities.jsonl", tmp_path / "real.json", tmp_path / "report.json"
    os.mkfifo(fifo)
    target.write_text("{}")
    link.symlink_to(target)
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": "a", "text": "Angela Merkel visited Paris."}\n')
    for args, message in (
        (["run", "-i", str(src), "-o", str(fifo)], r"it is not a regular file \(a device, pipe or socket\)"),
        (["run", "-i", str(src), "-o", str(tmp_path / "o.parquet"), "--report", str(link)],
         f"it is a symbolic link \\(to '{target}'\\)"),
        (["evaluate", "--data", str(gmb_sample), "--report", str(fifo)], "it is not a regular file"),
        # a legal name, whose temporary file's name is too long: refused before the work, not after it
        (["evaluate", "--data", str(gmb_sample), "--report", str(tmp_path / ("r" * 240 + ".json"))],
         r"File name too long \(it is written through a temporary file whose name is \d+ bytes longer\)"),
        (["run", "-i", str(src), "-o", str(tmp_path / ("o" * 240 + ".parquet"))], "File name too long"),
    ):
        result = runner.invoke(app, [*args, "--model", str(tiny_bundle)])
        assert result.exit_code == 2 and re.search(message, result.output), result.output
    assert fifo.is_fifo() and link.is_symlink() and target.read_text() == "{}"
    assert not (tmp_path / "o.parquet").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entities.jsonl", "in.jsonl", "real.json", "report.json"]


def test_kept_fields_whose_names_differ_only_in_case_are_refused(tmp_path, tiny_bundle):
    # DuckDB and Spark compare column names without case: `Text` would read back as the entity's text.
    src = tmp_path / "in.jsonl"
    src.write_text('{"id": "a", "text": "Angela Merkel visited Paris.", "Text": "t", "Title": "T", "title": "t"}\n')
    for keep, message in (("Text", "collides with the entity record field 'text'"),
                          ("DOC_ID", "collides with the entity record field 'doc_id'"),
                          ("Title,title", "kept fields 'Title' and 'title' differ only in case")):
        result = runner.invoke(app, ["run", "-i", str(src), "-o", str(tmp_path / "o.parquet"), "--keep-fields", keep,
                                     "--model", str(tiny_bundle)])
        assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "o.parquet").exists()
    result = runner.invoke(app, ["run", "-i", str(src), "-o", str(tmp_path / "o.parquet"), "--keep-fields",
                                 "Title,Title,Straße,STRASSE", "--model", str(tiny_bundle), "-q"])
    assert result.exit_code == 0, result.output  # the same name twice is one column; ß is not SS to a reader
    assert pq.read_schema(tmp_path / "o.parquet").names[-3:] == ["Title", "Straße", "STRASSE"]
    result = runner.invoke(app, ["run", "-i", str(src), "-o", str(tmp_path / "o.parquet"), "--keep-fields", "Title",
                                 "--keep-fields", "title,Title", "--model", str(tiny_bundle), "-q"])
    assert result.exit_code == 2 and "'Title' and 'title' differ only in case" in result.output, result.output
    result = runner.invoke(app, ["run", "-i", str(src), "-o", str(tmp_path / "o.parquet"), "--keep-fields", "Title",
                                 "--keep-fields", "Straße", "--model", str(tiny_bundle), "-q"])
    assert result.exit_code == 0, result.output  # a repeated --keep-fields adds its fields, as a repeated --input does
    assert pq.read_schema(tmp_path / "o.parquet").names[-2:] == ["Title", "Straße"]


def test_standard_streams_that_fail_or_are_closed_do_not_cost_results(tmp_path, tiny_bundle, gmb_sample):
    import os
    import subprocess

    def nerbatch(*args, stdout=subprocess.PIPE, shell_redirect="", env=None):
        command = " ".join(["exec", sys.executable, "-m", "nerbatch", *map(shlex.quote, args), shell_redirect])
        return subprocess.run(["bash", "-c", command], stdout=stdout, stderr=subprocess.PIPE,
                              env={**os.environ, **(env or {})}, timeout=300)

    report = tmp_path / "scores.json"
    with open("/dev/full", "w") as full:  # written to, never replaced
        done = nerbatch("evaluate", "--model", str(tiny_bundle), "--data", str(gmb_sample), "--report", str(report),
                        stdout=full)
    assert done.returncode == 2 and done.stderr.decode().strip().endswith(
        "nerbatch: error: cannot write to standard output: No space left on device"), done.stderr
    assert json.loads(report.read_text())["test"]["sentences"] == 108  # written before the table
    relabelled = tmp_path / "relabelled.csv"
    relabelled.write_bytes(gmb_sample.read_bytes().replace(b"-nat", b"-NAT"))
    report.unlink()
    done = nerbatch("evaluate", "--model", str(tiny_bundle), "--data", str(relabelled), "--report", str(report),
                    shell_redirect="2>/dev/full")  # its note on the unknown type cannot be written
    assert json.loads(report.read_text())["types_unknown_to_model"] == ["NAT"]

    src = tmp_path / "in.jsonl"
    src.write_text('{"id": "a", "text": "Angela Merkel visited Paris."}\n')
    for quiet in ((), ("-q",)):
        out = tmp_path / f"o{len(quiet)}.parquet"
        done = nerbatch("run", "-i", str(src), "-o", str(out), "--model", str(tiny_bundle), *quiet,
                        shell_redirect="2>&-")  # stderr closed, as some schedulers start jobs
        assert done.returncode == 0 and out.is_file()

    # JSON Lines are UTF-8 whatever the locale's encoding
    done = nerbatch("predict", "Lech Wałęsa visited Łódź.", "--model", str(tiny_bundle),
                    env={"PYTHONIOENCODING": "latin-1"})
    assert done.returncode == 0, done.stderr
    assert all(json.loads(line)["text"] in "Lech Wałęsa visited Łódź." for line in done.stdout.decode().splitlines())

    done = nerbatch("predict", "Paris", "--model", str(tiny_bundle), env={"KERAS_BACKEND": "no-such-backend"})
    assert done.returncode == 2 and "cannot use the Keras backend 'no-such-backend' named by KERAS_BACKEND" in \
        done.stderr.decode()

    # A command whose result is its standard output fails when that is closed, before any work (the
    # missing model is never looked at), whether or not it would have found something to print.
    closed = "nerbatch: error: cannot write to standard output: it is closed\n"
    for args in (("info",), ("predict", "the cat sat on the mat"), ("evaluate", "--data", str(gmb_sample))):
        done = nerbatch(*args, "--model", str(tmp_path / "no-model"), shell_redirect=">&-")
        assert done.returncode == 2 and done.stderr.decode() == closed, (args, done.stderr)
    # Standard input that is closed, empty or unreadable is no text to tag.
    for redirect, message in (
        ("<&-", "<stdin>: standard input is closed; give the text as the argument or pipe it in"),
        ("</dev/null", "<stdin>: no text to tag (empty)"),
        (f"0>{tmp_path / 'w'}", "<stdin>: cannot read standard input: Bad file descriptor"),
    ):
        done = nerbatch("predict", "-", "--model", str(tiny_bundle), shell_redirect=redirect)
        assert done.returncode == 2 and done.stderr.decode() == f"nerbatch: error: {message}\n", (redirect, done.stderr)
    report.unlink()  # with --report the scores are the report, and the table on standard output is a courtesy
    done = nerbatch("evaluate", "--model", str(tiny_bundle), "--data", str(gmb_sample), "--report", str(report),
                    shell_redirect=">&-")
    assert done.returncode == 0 and json.loads(report.read_text())["test"]["sentences"] == 108

    def piped(*args, into, redirect=""):  # nerbatch's exit code when its output goes to `into`, which reads nothing
        command = " ".join([sys.executable, "-m", "nerbatch", *map(shlex.quote, args), redirect])
        return subprocess.run(["bash", "-c", f"{command} | {into}; exit ${{PIPESTATUS[0]}}"], timeout=300).returncode

    # A reader that has gone: a user error keeps its code 2 (not click's 1, the code of failed documents),
    # and a result cut short ends as a process that SIGPIPE stopped (141).
    assert piped("run", "-i", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "x.parquet"), redirect="2>&1",
                 into="head -c0") == 2
    assert piped("info", "--model", str(tiny_bundle), into="head -c0") == 141
    report.unlink()  # with --report the result is the file: a reader gone from the table is no failure
    assert piped("evaluate", "--model", str(tiny_bundle), "--data", str(gmb_sample), "--report", str(report),
                 into="head -c0") == 0
    assert json.loads(report.read_text())["test"]["sentences"] == 108


def test_run_called_from_a_thread_other_than_the_main_one(tiny_bundle, tmp_path):
    import threading

    src = tmp_path / "in.jsonl"  # an application's worker thread, where no signal handler can be set
    src.write_text('{"id": "a", "text": "Angela Merkel visited Paris."}\n')
    results = []
    worker = threading.Thread(target=lambda: results.append(runner.invoke(
        app, ["run", "-i", str(src), "-o", str(tmp_path / "o.parquet"), "--model", str(tiny_bundle), "-q"])))
    worker.start()
    worker.join(timeout=300)
    assert results[0].exit_code == 0, (results[0].output, results[0].exception)
    assert (tmp_path / "o.parquet").is_file()


def test_a_consume_run_that_ends_with_work_uncommitted_exits_1(tiny_bundle, monkeypatch):
    from nerbatch import consumer

    def ended(stopped_by):
        def run(worker):
            return consumer.ConsumeReport(group=worker.options.group, model="m", stopped_by=stopped_by,
                                          unfinished=True)
        return run

    args = ["consume", "-b", "127.0.0.1:9", "-t", "in", "-g", "g", "--output-topic", "out", "--dead-letter-topic",
            "dlq", "--model", str(tiny_bundle)]
    for stopped_by, code in (("max_docs", 1), ("idle_timeout", 1), ("signal", 0)):  # a service's stop stays 0
        monkeypatch.setattr(consumer.Worker, "run", ended(stopped_by))
        result = runner.invoke(app, args)
        assert result.exit_code == code, result.output
        assert ("work not committed" in result.output) == bool(code)


@pytest.mark.parametrize("stop, at_validation", [(signal.SIGTERM, 1), (signal.SIGINT, 1), (signal.SIGTERM, 2)])
def test_a_stop_during_consume_start_up_exits_0_before_consuming(tiny_bundle, stop, at_validation, tmp_path):
    # The signal arrives while the options are checked (1: the command's own check, before the model
    # loads; 2: the worker's, after it): a pod deleted or a unit stopped just after it started.
    import subprocess

    script = f"""
import os, signal, sys
from nerbatch import cli, consumer
validate, calls = consumer.ConsumeOptions.validate, []
def validate_then_stopped(options):
    calls.append(1)
    if len(calls) == {at_validation}:
        os.kill(os.getpid(), signal.{stop.name})
    return validate(options)
consumer.ConsumeOptions.validate = validate_then_stopped
sys.argv = ["nerbatch", "consume", "-b", "127.0.0.1:9", "-t", "in", "-g", "g", "--output-topic", "out",
            "--dead-letter-topic", "dlq", "--model", {str(tiny_bundle)!r}, "--report", {str(tmp_path / "r.json")!r}]
cli.main()
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    assert f"nerbatch: {stop.name} during start-up; stopped before consuming\n" in done.stderr.decode()
    assert "worker starting" not in done.stderr.decode()  # nor a metrics port bound after the stop
    report = json.loads((tmp_path / "r.json").read_text())  # a scheduler reads what the worker did: nothing
    assert (report["stopped_by"], report["docs_in"], report["commits"]) == ("signal", 0, 0)


def test_a_command_running_as_a_containers_pid_1_stops_on_sigterm(tmp_path, gmb_sample, tiny_bundle):
    # PID 1 ignores a signal it has no handler for: `docker stop` of `predict` or `evaluate` waited out
    # its grace period and killed it. A new PID namespace stands in for the container.
    import contextlib
    import os
    import subprocess
    import time

    command = [sys.executable, "-m", "nerbatch", "evaluate", "--data", str(gmb_sample), "--model", str(tiny_bundle),
               "--report", str(tmp_path / "r.json")]
    try:
        namespace = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", *command],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        pytest.skip("unshare is not available")
    children = f"/proc/{namespace.pid}/task/{namespace.pid}/children"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not open(children).read().split():
        time.sleep(0.05)
    pids = open(children).read().split()
    if not pids:
        namespace.wait(timeout=60)
        pytest.skip("no PID namespace here (unshare needs privileges)")
    def catches_sigterm():  # once its handler is set (SigCgt), before the model is loaded
        with contextlib.suppress(OSError):
            for line in open(f"/proc/{pids[0]}/status"):
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
        return False

    while time.monotonic() < deadline and namespace.poll() is None and not catches_sigterm():
        time.sleep(0.02)
    assert namespace.poll() is None, "the command ended without ever handling SIGTERM"
    os.kill(int(pids[0]), signal.SIGTERM)
    assert namespace.wait(timeout=60) == 128 + signal.SIGTERM
    assert not (tmp_path / "r.json").exists()


def test_a_field_no_document_has_is_a_warning_and_counted_in_the_report(tmp_path, tiny_bundle):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.parquet"
    first.write_text('{"id": "a1", "text": "Angela Merkel visited Paris.", "title": "T"}\n'
                     '{"id": "a2", "text": "Barack Obama spoke in London."}\n')
    pq.write_table(pa.table({"id": ["b1"], "text": ["The UN met in Geneva."], "url": ["u"]}), second)
    report = tmp_path / "report.json"

    def run(*options):
        result = runner.invoke(app, ["run", "-i", str(first), "-i", str(second), "-o", str(tmp_path / "o.parquet"),
                                     "--report", str(report), "--model", str(tiny_bundle), "-q", *options])
        assert result.exit_code == 0, result.output
        return result.output, json.loads(report.read_text())

    output, saved = run("--id-field", "doc_id", "--keep-fields", "title,titel,url")
    assert saved["docs_with_generated_id"] == 3
    assert saved["kept_fields_missing"] == {"title": 2, "titel": 3, "url": 2}
    assert output.splitlines() == [
        "nerbatch: warning: no document has the id field 'doc_id': every id was generated as <file name>:<line or "
        "row>; is it spelt as in the documents?",
        "nerbatch: warning: no document has the kept field 'titel': it is null in every record; is it spelt as in the "
        "documents?",
    ]
    output, saved = run("--keep-fields", "title")  # fields some documents have, and the default id field
    assert output == "" and saved["docs_with_generated_id"] == 0 and saved["kept_fields_missing"] == {"title": 2}
    assert saved["docs_failed_by_kind"] == {}


def test_a_text_field_no_document_has_is_named_on_the_console(tmp_path, tiny_bundle):
    # Every document failed; the reason was only in the errors file, while a misspelt kept field got a warning.
    source = tmp_path / "body.jsonl"
    source.write_text('{"id": "a", "body": "Angela Merkel visited Paris."}\n{"id": "b", "body": "Rome."}\n{"id"\n')
    result = runner.invoke(app, ["run", "-i", str(source), "-o", str(tmp_path / "o.parquet"), "--model",
                                 str(tiny_bundle), "-q", "--report", str(tmp_path / "r.json")])
    assert result.exit_code == 1
    assert ("nerbatch: warning: no document has the text field 'text' (2 failed as missing_text): is it spelt as in "
            "the documents? Name it with --text-field") in result.output, result.output
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["docs_failed_by_kind"] == {"missing_text": 2, "malformed_json": 1} and saved["docs_failed"] == 3


def test_bad_run_settings_name_their_option(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "1", "text": "Angela Merkel visited Paris."}\n')
    for option, value, message in (("--max-doc-chars", "0", "must be a positive integer, got 0"),
                                   ("--id-field", " ", "must be a non-blank field name, got ' '")):
        result = runner.invoke(app, ["run", "-i", str(source), "-o", str(tmp_path / "o.jsonl"), option, value])
        assert result.exit_code == 2 and f"({option}) {message}" in result.output, result.output
        assert not (tmp_path / "o.jsonl").exists()


def test_files_of_one_name_in_two_folders_whose_documents_lack_ids_are_a_warning(tmp_path, tiny_bundle):
    # Their generated ids are the same (<file name>:<line>): an index keyed on doc_id would merge two articles.
    for day, text in (("d1", "Angela Merkel visited Berlin."), ("d2", "Barack Obama visited Chicago.")):
        (tmp_path / day).mkdir()
        (tmp_path / day / "news.jsonl").write_text(json.dumps({"text": text}) + "\n")
    (tmp_path / "d3").mkdir()
    (tmp_path / "d3" / "news.jsonl").write_text(json.dumps({"id": "x", "text": "The UN met in Geneva."}) + "\n")
    report = tmp_path / "report.json"
    inputs = [str(tmp_path / d / "news.jsonl") for d in ("d1", "d2", "d3")]
    result = runner.invoke(app, ["run", "-i", inputs[0], "-i", inputs[1], "-i", inputs[2], "-o",
                                 str(tmp_path / "o.jsonl"), "--report", str(report), "--model", str(tiny_bundle), "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads(report.read_text())["generated_id_clashes"] == [inputs[:2]]
    assert result.output == (
        f"nerbatch: warning: documents without an id in {inputs[0]!r}, {inputs[1]!r} got generated ids of the same "
        "form (news.jsonl:<line or row>), so their records may share doc_ids; give the documents ids (--id-field) or "
        "the files distinct names\n")
    result = runner.invoke(app, ["run", "-i", inputs[0], "-i", inputs[2], "-o", str(tmp_path / "p.jsonl"),
                                 "--report", str(report), "--model", str(tiny_bundle), "-q"])
    assert (result.exit_code, result.output) == (0, "")  # one of them has ids
    assert json.loads(report.read_text())["generated_id_clashes"] == []


def test_a_training_outlives_a_log_reader_that_goes_and_a_full_log_disk(tmp_path, gmb_sample):
    import subprocess

    def train(out, redirect, epochs):
        command = " ".join([sys.executable, "-m", "nerbatch", "train", "--data", shlex.quote(str(gmb_sample)),
                            "--out", shlex.quote(str(out)), "--arch", "seed", "--epochs", str(epochs), redirect])
        return subprocess.run(["bash", "-c", command], capture_output=True, timeout=300)

    # the reader takes the first epoch's line and goes: the second epoch's line meets a closed pipe
    done = train(tmp_path / "piped", "2>/dev/null | head -1; echo rc=${PIPESTATUS[0]} >&2", epochs=2)
    assert done.stdout.decode().startswith("epoch 1: loss") and done.stderr.decode() == "rc=0\n"
    assert (tmp_path / "piped" / "manifest.json").is_file()
    done = train(tmp_path / "full", ">/dev/full; echo rc=$? >&2", epochs=1)
    assert done.stderr.decode().endswith("rc=0\n") and "Traceback" not in done.stderr.decode(), done.stderr
    assert (tmp_path / "full" / "manifest.json").is_file()


def test_file_names_that_are_not_utf8_are_kept_as_escapes_and_a_model_name_must_be_text(tmp_path, gmb_sample):
    # A Latin-1 name from an old zip or a share: written into metrics.json, it failed the save after the training.
    data, vectors = tmp_path / "donn\udce9es.csv", tmp_path / "v\udce9c.txt"
    shutil.copy(gmb_sample, data)
    vectors.write_text("the 0.1 0.2\nparis 0.3 0.4\n", encoding="utf-8")
    out = tmp_path / "bundle"
    result = runner.invoke(app, ["train", "--data", str(data), "--vectors", str(vectors), "--out", str(out),
                                 "--arch", "seed", "--epochs", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert (metrics["data"]["file"], metrics["vectors"]["file"]) == ("donn\\xe9es.csv", "v\\xe9c.txt")
    report = tmp_path / "scores.json"
    result = runner.invoke(app, ["evaluate", "--model", str(out), "--data", str(data), "--report", str(report)])
    assert result.exit_code == 0 and json.loads(report.read_text())["data"]["same_as_training"] is True
    result = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "named"), "--name", "caf\udce9"])
    assert result.exit_code == 2 and "name must be non-empty UTF-8 text" in result.output, result.output
