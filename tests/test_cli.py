import json
import zipfile

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
    assert saved["data"]["file"] == "gmb_sample.csv"


def test_user_errors_are_one_line_and_exit_2(tmp_path, gmb_sample):
    result = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "missing"), "--data", str(gmb_sample)])
    assert result.exit_code == 2
    assert "model bundle not found" in result.output
    assert "Traceback" not in result.output

    bad = tmp_path / "bad.csv"
    bad.write_text("Sentence #,Word,POS,Tag\n,orphan,NN,O\n")
    result = runner.invoke(app, ["train", "--data", str(bad), "--out", str(tmp_path / "b")])
    assert result.exit_code == 2 and "line 2" in result.output


def test_train_through_the_cli(gmb_sample, tmp_path):
    out = tmp_path / "cli-bundle"
    result = runner.invoke(app, ["train", "--data", str(gmb_sample), "--out", str(out), "--arch", "seed",
                                 "--epochs", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    assert (out / "manifest.json").is_file() and "bundle written" in result.output


def test_train_refuses_unreadable_vectors_before_training(gmb_sample, tmp_path):
    ragged = tmp_path / "vectors.txt"
    ragged.write_text("the 0.1 0.2\nof 0.3\n", encoding="utf-8")
    for vectors, message in ((ragged, "vectors.txt, line 2"), (tmp_path / "missing.txt", "no such word-vector file")):
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
    for data, message in [(partial, "cannot read corpus (BadZipFile"), (one, "the corpus has 1 sentence(s)")]:
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
