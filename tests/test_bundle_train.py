import json
import re
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from nerbatch.bundle import FORMAT_VERSION, check_bundle_target, load_bundle, verify_bundle
from nerbatch.corpus import read_corpus
from nerbatch.errors import BundleError


def test_training_writes_a_complete_bundle(tiny_bundle):
    names = {p.name for p in tiny_bundle.iterdir()}
    assert {"model.keras", "vocab.json", "tags.json", "config.json", "metrics.json", "history.json",
            "training.png", "manifest.json", "transitions.json", "truecase.json"} <= names
    metrics = json.loads((tiny_bundle / "metrics.json").read_text())
    assert metrics["protocol"]["split"].startswith("sklearn train_test_split")
    assert len(metrics["data"]["sha256"]) == 64
    assert metrics["split"]["test"] == 108  # 20% of the 540 sample sentences
    assert metrics["training"]["epochs_run"] == 8
    # the default network trains with the CRF objective; decoding uses the transitions it learned
    assert metrics["validation"]["transitions"] == "crf"
    transitions = json.loads((tiny_bundle / "transitions.json").read_text())
    assert transitions["kind"] == "crf"
    scores = load_bundle(tiny_bundle).transition_scores
    assert scores.shape == (17, 17) and np.abs(scores).max() > 0
    assert 0.0 <= metrics["test"]["micro"]["f1"] <= 1.0
    # 432 training sentences are enough to find entities, provided that epochs in which the
    # network finds none yet neither count towards early stopping nor cut the learning rate
    assert metrics["validation"]["entity_f1"] > 0.2
    assert set(metrics["test"]["per_type"]) <= {"geo", "gpe", "org", "per", "tim", "art", "eve", "nat"}
    vocab = json.loads((tiny_bundle / "vocab.json").read_text())
    assert vocab["words"][:2] == ["<pad>", "<unk>"]
    assert (tiny_bundle / "training.png").read_bytes()[:4] == b"\x89PNG"


def test_round_trip_predicts_the_same(tiny_bundle, gmb_sample):
    corpus = read_corpus(gmb_sample)
    first = load_bundle(tiny_bundle).tagger().tag_probabilities(corpus.words[:20])
    second = load_bundle(tiny_bundle).tagger().tag_probabilities(corpus.words[:20])
    for a, b in zip(first, second):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_long_sentences_are_tagged_whole(tiny_bundle, gmb_sample):
    corpus = read_corpus(gmb_sample)
    long = [w for w in corpus.words if len(w) > 50]
    tagged = load_bundle(tiny_bundle).tagger().tag(long)
    assert [len(t.tag_ids) for t in tagged] == [len(w) for w in long]
    assert all(((t.tag_probs > 0) & (t.tag_probs <= 1)).all() for t in tagged)


def test_unknown_words_do_not_raise(tiny_bundle):
    tagger = load_bundle(tiny_bundle).tagger()
    tags = tagger.tag_strings([["Qwxzzy", "Blorptown", "ℵ", "🙂"], []])
    assert len(tags[0]) == 4 and tags[1] == []


def _copy(bundle, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(bundle, target)
    return target


def test_tampered_bundle_is_refused(tiny_bundle, tmp_path):
    copy = _copy(tiny_bundle, tmp_path)
    tags = json.loads((copy / "tags.json").read_text())
    tags[1], tags[2] = tags[2], tags[1]
    (copy / "tags.json").write_text(json.dumps(tags))
    with pytest.raises(BundleError, match="tags.json"):
        load_bundle(copy)


def test_truncated_model_is_refused(tiny_bundle, tmp_path):
    copy = _copy(tiny_bundle, tmp_path)
    data = (copy / "model.keras").read_bytes()
    (copy / "model.keras").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="truncated"):
        verify_bundle(copy)


def test_a_signed_model_file_that_is_no_keras_archive_is_named_as_such(tiny_bundle, tmp_path):
    from nerbatch.bundle import write_manifest
    from nerbatch.cli import app

    copy = _copy(tiny_bundle, tmp_path)
    (copy / "model.keras").write_bytes(bytes(range(256)) * 64)
    write_manifest(copy)  # signed again: only the contents are wrong
    with pytest.raises(BundleError, match=re.escape(f"{copy / 'model.keras'}: cannot load model "
                                                    "(not a Keras archive: not a zip file)")):
        load_bundle(copy)
    result = CliRunner().invoke(app, ["info", "--model", str(copy)])
    assert result.exit_code == 2 and "not a Keras archive" in result.output, result.output


def test_future_and_missing_manifest_are_refused(tiny_bundle, tmp_path):
    copy = _copy(tiny_bundle, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="newer"):
        load_bundle(copy)
    (copy / "manifest.json").unlink()
    with pytest.raises(BundleError, match="not a nerbatch model bundle"):
        load_bundle(copy)
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "absent")


@pytest.mark.parametrize("file, edit, message", [
    ("config.json", lambda c: c.pop("features"), "'features' is missing or not a list"),
    ("config.json", lambda c: c.update(format_version="2"), "format_version '2' is not an integer"),
    ("config.json", lambda c: c.update(decoder="beam"), "unknown decoder 'beam'"),
    ("config.json", lambda c: c.update(max_len=0), "'max_len' must be at least 2, got 0"),
    ("config.json", lambda c: c.update(max_word_len=-1), "'max_word_len' must be at least 1, got -1"),
    ("config.json", lambda c: c.update(max_word_len=8), "reads 16 characters a word, config.json says max_word_len 8"),
    ("vocab.json", lambda v: v.update(chars=None), "'chars' is not a list of strings"),
    ("vocab.json", lambda v: v.pop("words"), "'words' is not a list of strings"),
    ("tags.json", lambda t: t.pop(), "scores 17 tags, tags.json lists 16"),
    ("tags.json", lambda t: t.append(3), "not a list of IOB2 tags"),
    ("transitions.json", lambda t: t.pop("scores"), "transitions.json: malformed bundle file: no scores"),
    # what a bundle written before training refused such names and types, or edited by hand, holds
    ("config.json", lambda c: c.update(name="my model"), "model name 'my model' holds '@' or white space"),
    ("tags.json", lambda t: t.__setitem__(slice(None), [x.replace("-geo", "-LOC") for x in t]),
     "entity type(s) LOC are not labels of the entity records"),
    ("config.json", lambda c: c.update(features=["words", "chars"]),
     "reads casing, chars, words, config.json lists features chars, words"),
    ("config.json", lambda c: c.update(features=["words", 1, "casing"]),
     "features ['words', 1, 'casing'] are not distinct names among words, chars, casing"),
    ("config.json", lambda c: c.update(features=["words", "chars", "chars", "casing"]), "are not distinct names"),
    ("config.json", lambda c: c.update(features=["words", ["chars"]]), "are not distinct names"),
    ("vocab.json", lambda v: v["words"].insert(2, v["words"][3]), "'words' lists an item twice"),
    ("vocab.json", lambda v: v["words"].extend(["zzq1", "zzq2"]), "rows, vocab.json lists"),
])
def test_a_malformed_file_in_a_signed_bundle_is_one_error(tiny_bundle, tmp_path, file, edit, message):
    from nerbatch.bundle import write_manifest
    from nerbatch.cli import app

    copy = _copy(tiny_bundle, tmp_path)
    data = json.loads((copy / file).read_text())
    edit(data)
    (copy / file).write_text(json.dumps(data))
    write_manifest(copy)  # signed again: only the contents are wrong
    with pytest.raises(BundleError, match=re.escape(message)):
        load_bundle(copy)
    news = tmp_path / "news.jsonl"
    news.write_text(json.dumps({"id": "1", "text": "Angela Merkel visited Paris."}) + "\n")
    result = CliRunner().invoke(app, ["run", "--input", str(news), "--output", str(tmp_path / "o.parquet"),
                                      "--model", str(copy)])
    assert result.exit_code == 2 and message in result.output, result.output
    result = CliRunner().invoke(app, ["info", "--model", str(copy)])  # info describes only a usable bundle
    assert result.exit_code == 2 and message in result.output, result.output


def test_info_names_a_malformed_metrics_file(tiny_bundle, tmp_path):
    from nerbatch.bundle import write_manifest
    from nerbatch.cli import app

    copy = _copy(tiny_bundle, tmp_path)
    metrics = json.loads((copy / "metrics.json").read_text())
    metrics["test"]["per_type"]["geo"] = {"precision": 1.0}
    (copy / "metrics.json").write_text(json.dumps(metrics))
    write_manifest(copy)
    result = CliRunner().invoke(app, ["info", "--model", str(copy)])
    assert result.exit_code == 2 and "metrics.json: malformed bundle file (KeyError: 'f1')" in result.output


@pytest.mark.parametrize("which", ["tiny", "shipped"])
def test_padding_does_not_change_a_sentences_tags(tiny_bundle, which):
    # Batches are padded to the longest sentence's bucket: a short sentence must get the
    # same probabilities alone as beside a long one (the backward LSTM must not read padding).
    tagger = load_bundle(tiny_bundle if which == "tiny" else None).tagger()
    short = ["Prophet", "Muhammad", "spoke", "in", "Mecca", "."]
    alone = tagger.tag_probabilities([short])[0]
    beside_long = tagger.tag_probabilities([short, ["word"] * 45])[0]
    np.testing.assert_allclose(alone, beside_long, rtol=1e-5, atol=1e-6)


def test_unlisted_bundle_files_are_not_read(tiny_bundle, tmp_path):
    copy = _copy(tiny_bundle, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["files"]["transitions.json"]  # the file stays, but nothing vouches for it
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert load_bundle(copy).transition_scores is None
    manifest["files"] = sorted(manifest["files"])
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="malformed file list"):
        load_bundle(copy)


def test_only_a_bundle_folder_is_replaced(tiny_bundle, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "manifest.json").write_text('{"name": "web app"}')
    (site / "index.html").write_text("<html>")
    with pytest.raises(BundleError, match="not part of a nerbatch bundle"):
        check_bundle_target(site)
    copy = _copy(tiny_bundle, tmp_path)
    assert check_bundle_target(copy) == copy.resolve()
    (copy / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match="such as notes.txt"):
        check_bundle_target(copy)


def test_a_target_that_cannot_hold_a_bundle_is_one_error_before_training(tiny_bundle, gmb_sample, tmp_path):
    from nerbatch.train import TrainSettings, train

    settings = TrainSettings.for_arch("seed", epochs=1)
    copy = _copy(tiny_bundle, tmp_path)
    cases = {  # where os.access tells root it may write, a long name, a folder inside a bundle
        "/proc/nerbatch-model": "/proc/nerbatch-model: cannot be created (No such file or directory at /proc/",
        str(tmp_path / ("a" * 243)): "the folder name is longer than 242 bytes",
        str(tmp_path / ("b" * 256)): "the folder name is longer than 242 bytes",
        str(copy / "sub"): f"is inside the model bundle {copy.resolve()}",
    }
    for out, message in cases.items():
        with pytest.raises(BundleError, match=re.escape(message)):
            train(gmb_sample, out, settings, verbose=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]
    verify_bundle(copy)
    check_bundle_target(tmp_path / ("a" * 242))


def test_interrupted_replace_puts_the_previous_bundle_back(tiny_bundle, tmp_path, monkeypatch):
    import os

    from nerbatch import bundle as bundle_module

    copy = _copy(tiny_bundle, tmp_path)
    loaded = load_bundle(copy)
    real_replace, calls = os.replace, []

    def replace_then_interrupt(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the staged bundle's rename into place
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(bundle_module.os, "replace", replace_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        bundle_module.save_bundle(copy, model=loaded.model, encoder=loaded.encoder, tags=loaded.tags,
                                  config=loaded.config)
    monkeypatch.undo()
    verify_bundle(copy)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]


def test_a_failed_write_is_one_error_and_keeps_the_previous_bundle(tiny_bundle, tmp_path):
    from nerbatch import bundle as bundle_module

    copy = _copy(tiny_bundle, tmp_path)
    loaded = load_bundle(copy)

    def full_disk(path):
        raise OSError(28, "No space left on device")

    with pytest.raises(BundleError, match="cannot write the bundle \\(No space left on device\\); the previous"):
        bundle_module.save_bundle(copy, model=loaded.model, encoder=loaded.encoder, tags=loaded.tags,
                                  config=loaded.config, extra_files={"training.png": full_disk})
    verify_bundle(copy)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]


def test_a_staging_mark_that_cannot_be_removed_does_not_fail_the_save(tiny_bundle, tmp_path, monkeypatch):
    import pathlib

    from nerbatch import bundle as bundle_module

    loaded = load_bundle(tiny_bundle)
    unlink = pathlib.Path.unlink

    def stuck_mark(path, missing_ok=False):
        if path.name == ".nerbatch-staging":
            raise OSError(30, "Read-only file system")
        unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(pathlib.Path, "unlink", stuck_mark)
    saved = bundle_module.save_bundle(tmp_path / "m", model=loaded.model, encoder=loaded.encoder, tags=loaded.tags,
                                      config=loaded.config)
    monkeypatch.undo()
    verify_bundle(saved)
    assert bundle_module.recover_interrupted_save(saved) == ["removed the staging mark a killed write left in m"]
    assert sorted(p.name for p in saved.iterdir()) == sorted([*verify_bundle(saved)["files"], "manifest.json"])


def test_a_stop_while_the_previous_bundle_is_removed_says_the_new_one_is_written(tiny_bundle, gmb_sample,
                                                                                   tmp_path, monkeypatch):
    import shutil as shutil_module

    from nerbatch import bundle as bundle_module

    copy = _copy(tiny_bundle, tmp_path)
    loaded = load_bundle(copy)
    rmtree, stops = shutil_module.rmtree, []

    def stopped_once(path, *args, **kwargs):
        if ".old-" in str(path) and not stops:
            stops.append(path)
            raise KeyboardInterrupt  # SIGTERM's handler raises it
        return rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil_module, "rmtree", stopped_once)
    with pytest.raises(KeyboardInterrupt) as info:
        bundle_module.save_bundle(copy, model=loaded.model, encoder=loaded.encoder, tags=loaded.tags,
                                  config={**loaded.config, "name": "second"})
    monkeypatch.undo()
    assert info.value.bundle_written == copy.resolve()
    assert load_bundle(copy).config["name"] == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]  # the previous bundle removed all the same

    from nerbatch.cli import app  # and the command tells it so

    stops.clear()
    monkeypatch.setattr(shutil_module, "rmtree", stopped_once)
    result = CliRunner().invoke(app, ["train", "--data", str(gmb_sample), "--out", str(copy), "--arch", "seed",
                                      "--epochs", "1", "--max-train-sentences", "40", "-q"])
    monkeypatch.undo()
    assert result.exit_code == 130, result.output
    assert f"SIGINT received: stopped after the bundle was written to {copy}" in result.output
    assert load_bundle(copy).config["arch"] == "seed"


def test_a_save_whose_bundle_is_in_place_succeeds_though_its_cleanup_fails(tiny_bundle, tmp_path, monkeypatch):
    import os
    import shutil as shutil_module
    import subprocess

    from nerbatch import bundle as bundle_module

    copy = _copy(tiny_bundle, tmp_path)
    loaded = load_bundle(copy)
    rmtree = shutil_module.rmtree

    def busy_backup(path, *args, **kwargs):
        if ".old-" in str(path):
            raise OSError(16, "Device or resource busy")
        return rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil_module, "rmtree", busy_backup)
    saved = bundle_module.save_bundle(copy, model=loaded.model, encoder=loaded.encoder, tags=loaded.tags,
                                      config={**loaded.config, "name": "second"})
    monkeypatch.undo()
    assert load_bundle(saved).config["name"] == "second"
    assert not (saved / ".nerbatch-staging").exists()
    left = tmp_path / f".copy.old-{os.getpid()}"  # the previous bundle, for the next recovery once we are gone
    verify_bundle(left)
    proc = subprocess.Popen(["true"])
    proc.wait()
    left.rename(tmp_path / f".copy.old-{proc.pid}")
    assert bundle_module.recover_interrupted_save(saved) == [
        f"removed .copy.old-{proc.pid}, the previous bundle of a finished write"]


def test_what_a_killed_bundle_write_left_is_put_back_or_removed(tiny_bundle, tmp_path):
    import os
    import subprocess

    from nerbatch.bundle import recover_interrupted_save

    proc = subprocess.Popen(["true"])
    proc.wait()  # a writer that is gone
    previous = _copy(tiny_bundle, tmp_path).rename(tmp_path / f".copy.old-{proc.pid}")
    with pytest.raises(BundleError, match=f"a training killed while replacing it left the previous bundle in .*{previous.name}"):
        load_bundle(tmp_path / "copy")
    (tmp_path / ".copy.k1l2m3n4").mkdir()  # its staging folder, half written
    (tmp_path / ".copy.k1l2m3n4" / ".nerbatch-staging").write_text(".copy.k1l2m3n4")
    (tmp_path / ".copy.k1l2m3n4" / "model.keras").write_bytes(b"half")
    live = _copy(tiny_bundle, tmp_path).rename(tmp_path / f".other.old-{os.getpid()}")  # another writer, running
    done = recover_interrupted_save(tmp_path / "copy")
    assert done == [f"put back the previous bundle from {previous.name}",
                    "removed .copy.k1l2m3n4, the staging folder of a killed write"]
    verify_bundle(tmp_path / "copy")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["copy", live.name])


def test_a_killed_write_whose_pid_is_the_next_runs_own_is_put_back_and_trained_over(tiny_bundle, gmb_sample, tmp_path):
    # In a container every run has the same pid: the killed training's backup is named after this process.
    import os

    from nerbatch.train import TrainSettings, train

    previous = _copy(tiny_bundle, tmp_path).rename(tmp_path / f".m.old-{os.getpid()}")
    train(gmb_sample, tmp_path / "m", TrainSettings.for_arch("seed", epochs=1, max_train_sentences=40), verbose=0)
    verify_bundle(tmp_path / "m")
    assert load_bundle(tmp_path / "m").config["arch"] == "seed"
    assert not previous.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_a_bundle_replaced_while_it_loads_is_loaded_whole_never_mixed(tiny_bundle, tmp_path, monkeypatch):
    import os
    import shutil

    import numpy as np

    from nerbatch.backend import keras
    from nerbatch.bundle import write_manifest

    live = _copy(tiny_bundle, tmp_path).rename(tmp_path / "m")
    replacement = shutil.copytree(live, tmp_path / ".m.q1w2e3r4")  # what a training is about to rename into place
    config = json.loads((replacement / "config.json").read_text())
    (replacement / "config.json").write_text(json.dumps({**config, "name": "second"}))
    transitions = json.loads((replacement / "transitions.json").read_text())
    transitions["scores"] = (np.asarray(transitions["scores"]) + 1.0).tolist()
    (replacement / "transitions.json").write_text(json.dumps(transitions))
    write_manifest(replacement)
    saving = keras().saving
    load_model = saving.load_model
    swaps = []

    def load_while_replaced(path, **kwargs):  # the training's two renames land while the network loads
        if not swaps:
            os.replace(live, tmp_path / ".m.old-1")
            os.replace(replacement, live)
            swaps.append(path)
        return load_model(path, **kwargs)

    monkeypatch.setattr(saving, "load_model", load_while_replaced)
    loaded = load_bundle(live)
    assert swaps and loaded.config["name"] == "second"
    np.testing.assert_allclose(loaded.transition_scores, np.asarray(transitions["scores"]), rtol=1e-6)


def test_recovery_leaves_a_users_folders_beside_the_bundle_alone(tiny_bundle, gmb_sample, tmp_path):
    import subprocess

    from nerbatch.bundle import recover_interrupted_save
    from nerbatch.train import TrainSettings, train

    proc = subprocess.Popen(["true"])
    proc.wait()
    for name in (".model.snapshot", f".model.old-{proc.pid}"):  # names that fit a killed write's folders
        (tmp_path / name).mkdir()
        (tmp_path / name / "notes.txt").write_text("precious")
    dated = _copy(tiny_bundle, tmp_path).rename(tmp_path / ".model.20240611")  # a user's dated copy of a bundle
    (dated / ".nerbatch-staging").write_text(".model.k1l2m3n4")  # copied with the mark a killed write left
    (tmp_path / ".model.a1b2c3d4").mkdir()  # a staging folder killed before it was marked: empty
    assert recover_interrupted_save(tmp_path / "model") == [
        "removed .model.a1b2c3d4, the staging folder of a killed write"]
    train(gmb_sample, tmp_path / "model", TrainSettings.for_arch("seed", epochs=1, max_train_sentences=40), verbose=0)
    verify_bundle(tmp_path / "model")
    verify_bundle(tmp_path / ".model.20240611")
    assert not (tmp_path / "model" / ".nerbatch-staging").exists()
    for name in (".model.snapshot", f".model.old-{proc.pid}"):
        assert (tmp_path / name / "notes.txt").read_text() == "precious"


def test_a_write_killed_while_hashing_or_right_after_its_renames_is_cleaned_up(tiny_bundle, tmp_path):
    import subprocess

    from nerbatch.bundle import recover_interrupted_save

    proc = subprocess.Popen(["true"])
    proc.wait()
    hashing = _copy(tiny_bundle, tmp_path).rename(tmp_path / ".m.q1w2e3r4")  # killed while writing its manifest
    (hashing / "manifest.json").write_text("{")
    (hashing / ".nerbatch-staging").write_text(hashing.name)
    (tmp_path / f".m.old-{proc.pid}").mkdir()  # an empty --out that was replaced
    bundle = _copy(tiny_bundle, tmp_path).rename(tmp_path / "m")
    (bundle / ".nerbatch-staging").touch()  # killed between the rename and removing the mark
    assert sorted(recover_interrupted_save(tmp_path / "m")) == sorted([
        f"removed .m.old-{proc.pid}, the previous bundle of a finished write",
        "removed the staging mark a killed write left in m",
        "removed .m.q1w2e3r4, the staging folder of a killed write"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    verify_bundle(bundle)
    check_bundle_target(bundle)


def test_a_second_training_into_the_same_folder_or_a_mount_point_is_refused_before_training(
        gmb_sample, tmp_path, monkeypatch):
    import os

    from nerbatch.bundle import lock_bundle_target
    from nerbatch.train import TrainSettings, train

    settings = TrainSettings.for_arch("seed", epochs=1)
    with lock_bundle_target(tmp_path / "m"):  # as a training in progress holds it
        with pytest.raises(BundleError, match="another nerbatch train is writing this bundle"):
            train(gmb_sample, tmp_path / "m", settings, verbose=0)
    (tmp_path / "volume").mkdir()
    monkeypatch.setattr(os.path, "ismount", lambda path: str(path) == str(tmp_path / "volume"))
    with pytest.raises(BundleError, match="is a mount point; write the bundle to a folder inside it"):
        train(gmb_sample, tmp_path / "volume", settings, verbose=0)


def test_a_network_that_finds_nothing_on_validation_keeps_its_latest_epoch(gmb_sample, tmp_path):
    import pandas as pd

    from nerbatch.corpus import read_corpus
    from nerbatch.train import TrainSettings, protocol_parts, train

    settings = TrainSettings.for_arch("seed", epochs=2)
    _, validation, _ = protocol_parts(read_corpus(gmb_sample), settings)
    frame = pd.read_csv(gmb_sample, encoding="latin1", dtype=str, keep_default_na=False)
    sentence = frame["Sentence #"].replace("", pd.NA).ffill()
    frame.loc[sentence.isin(set(validation.sentence_ids)), "Tag"] = "O"  # nothing to find there
    corpus = tmp_path / "no-validation-entities.csv"
    frame.to_csv(corpus, index=False, encoding="latin1")
    metrics = train(corpus, tmp_path / "m", settings, verbose=0)
    member = metrics["validation"]["members"][0]
    assert member["best_entity_f1"] == 0.0 and member["best_epoch"] == 2  # not the least trained one


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_sigterm_stops_a_training_with_a_message_and_no_bundle(gmb_sample, tmp_path, backend):
    # Under JAX an interrupt raised by the signal handler into its native code could end in a segfault.
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "m"
    proc = subprocess.Popen([sys.executable, "-m", "nerbatch", "train", "--data", str(gmb_sample), "--out", str(out),
                             "--arch", "seed", "--epochs", "200"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL, env={**os.environ, "KERAS_BACKEND": backend})
    try:
        for line in proc.stdout:  # the first epoch has ended: it is training now
            if line.startswith("epoch 1:"):
                break
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM and time.monotonic() - started < 30
    assert "SIGTERM received: training stopped, no bundle written" in stderr and "Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []


# The signal lands while Keras is half imported (the first seconds of a training), where the module has
# no attributes yet: the stop handler must not depend on them.
_SIGNAL_DURING_THE_KERAS_IMPORT = """
import os, signal, sys
from importlib.abc import MetaPathFinder
from nerbatch.cli import main

class SignalDuringTheKerasImport(MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.startswith("keras.") and "keras" in sys.modules:
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGTERM)
        return None

sys.meta_path.insert(0, SignalDuringTheKerasImport())
sys.argv = ["nerbatch", *sys.argv[1:]]
main()
"""


def test_a_sigterm_while_keras_imports_stops_with_the_message(gmb_sample, tmp_path):
    import signal
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", _SIGNAL_DURING_THE_KERAS_IMPORT, "train", "--data", str(gmb_sample),
                           "--out", str(tmp_path / "m"), "--arch", "seed", "--epochs", "1", "-q"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert done.returncode == 128 + signal.SIGTERM and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "SIGTERM received: training stopped, no bundle written" in done.stderr
    assert list(tmp_path.iterdir()) == []


# The signal lands while a garbage-collector callback runs (JAX registers one), where Python
# reports the handler's KeyboardInterrupt as "Exception ignored" instead of raising it.
_SIGNAL_INSIDE_A_GC_CALLBACK = """
import gc, os, signal, sys
import nerbatch.train
from nerbatch.cli import main

original_epoch = nerbatch.train._train_epoch

def signal_inside_a_gc_callback(phase, info):
    if phase == "start":
        gc.callbacks.remove(signal_inside_a_gc_callback)
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs here, inside the callback
            pass

def epoch_that_gets_a_signal(*args, **kwargs):
    gc.callbacks.append(signal_inside_a_gc_callback)
    gc.collect()
    return original_epoch(*args, **kwargs)

nerbatch.train._train_epoch = epoch_that_gets_a_signal
sys.argv = ["nerbatch", *sys.argv[1:]]
main()
"""


def test_a_sigterm_whose_interrupt_a_gc_callback_swallows_still_stops_the_training(gmb_sample, tmp_path):
    import signal
    import subprocess
    import sys

    out = tmp_path / "m"
    done = subprocess.run([sys.executable, "-c", _SIGNAL_INSIDE_A_GC_CALLBACK, "train", "--data", str(gmb_sample),
                           "--out", str(out), "--arch", "seed", "--epochs", "1", "-q"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    assert "Exception ignored" in done.stderr  # the handler's raise was lost, as in the field
    assert done.returncode == 128 + signal.SIGTERM, done.stderr[-2000:]
    assert "SIGTERM received: training stopped, no bundle written" in done.stderr
    assert not out.exists()


def test_a_tag_seen_only_in_the_test_part_is_not_an_output(gmb_sample, tmp_path, monkeypatch):
    import pandas as pd

    from nerbatch import train as training
    from nerbatch.corpus import protocol_split

    frame = pd.read_csv(gmb_sample, encoding="latin1", dtype=str, keep_default_na=False)
    starts = frame.index[frame["Sentence #"] != ""].tolist()
    _, test_idx = protocol_split(len(starts))
    frame.loc[frame["Tag"].str.endswith("-nat"), "Tag"] = "O"
    frame.loc[starts[int(test_idx[0])], "Tag"] = "B-nat"
    corpus = tmp_path / "c.csv"
    frame.to_csv(corpus, index=False, encoding="latin1")
    built = []

    def stop(corpus, tagset, *args):
        built.append(tagset.tags)
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "_training_inputs", stop)
    with pytest.raises(KeyboardInterrupt):
        training.train(corpus, tmp_path / "b", training.TrainSettings.for_arch("seed", epochs=1), verbose=0)
    assert built and "B-nat" not in built[0] and "B-geo" in built[0]


def test_entity_types_outside_the_record_labels_and_bad_names_are_refused_before_training(gmb_sample, tmp_path):
    import pandas as pd

    from nerbatch.errors import CorpusError
    from nerbatch.train import TrainConfigError, TrainSettings, train

    frame = pd.read_csv(gmb_sample, encoding="latin1", dtype=str, keep_default_na=False)
    frame["Tag"] = frame["Tag"].str.replace("-per", "-PER")
    corpus = tmp_path / "conll-style.csv"
    frame.to_csv(corpus, index=False, encoding="latin1")
    with pytest.raises(CorpusError, match=r"entity type\(s\) PER are not labels .*'PER' first tags sentence 'Sentence: \d+'"):
        train(corpus, tmp_path / "b", TrainSettings.for_arch("seed", epochs=1), verbose=0)
    for name in ("my model", "a@b", ""):
        with pytest.raises(TrainConfigError, match="name must be"):
            train(gmb_sample, tmp_path / "b", TrainSettings.for_arch("seed", epochs=1, name=name), verbose=0)
    assert not (tmp_path / "b").exists()


def test_seed_arch_trains_one_epoch(gmb_sample, tmp_path):
    from nerbatch.train import TrainSettings, train

    metrics = train(gmb_sample, tmp_path / "seed", TrainSettings.for_arch("seed", epochs=1), verbose=0)
    bundle = load_bundle(tmp_path / "seed")
    assert bundle.config["arch"] == "seed" and bundle.config["decoder"] == "argmax"
    assert bundle.config["features"] == ["words"]
    assert metrics["training"]["epochs_run"] == 1
    layer_types = {type(layer).__name__ for layer in bundle.model.layers}
    assert {"Embedding", "SpatialDropout1D", "Bidirectional", "Dense"} <= layer_types
    expected = bundle.tagger().tag_strings([["Angela", "Merkel", "visited", "Paris", "."]])
    # a characters list in vocab.json (a hand edit, another tool) is not fed to a network that reads none
    from nerbatch.bundle import write_manifest
    from nerbatch.vocab import PAD_TOKEN, UNK_TOKEN

    vocab = json.loads((tmp_path / "seed" / "vocab.json").read_text())
    vocab["chars"] = [PAD_TOKEN, UNK_TOKEN, *"abcdefghijklmnopqrstuvwxyz"]
    (tmp_path / "seed" / "vocab.json").write_text(json.dumps(vocab))
    write_manifest(tmp_path / "seed")
    edited = load_bundle(tmp_path / "seed")
    assert edited.tagger().tag_strings([["Angela", "Merkel", "visited", "Paris", "."]]) == expected


def test_training_is_reproducible_with_a_seed(gmb_sample, tmp_path):
    from nerbatch.train import TrainSettings, train

    settings = TrainSettings.for_arch("default", epochs=2, seed=11, max_train_sentences=200)
    first = train(gmb_sample, tmp_path / "a", settings, verbose=0)
    second = train(gmb_sample, tmp_path / "b", settings, verbose=0)
    assert json.loads((tmp_path / "a" / "history.json").read_text()) == json.loads(
        (tmp_path / "b" / "history.json").read_text()
    )
    assert first["test"]["micro"] == second["test"]["micro"]


def test_ensemble_bundle_averages_members_and_loads_safely(gmb_sample, tmp_path):
    from nerbatch.train import TrainSettings, train

    train(gmb_sample, tmp_path / "ens", TrainSettings.for_arch("default", epochs=1, ensemble=2,
                                                               max_train_sentences=200), verbose=0)
    bundle = load_bundle(tmp_path / "ens")  # safe_mode=True
    names = {layer.name for layer in bundle.model.layers}
    assert {"m1_bilstm", "m2_bilstm", "m1_tag_probs", "m2_tag_probs", "tags"} <= names
    assert type(bundle.model.get_layer("tags")).__name__ == "Average"
    batch = bundle.encoder.encode_batch([["Paris", "is", "big"]], 16)
    averaged = np.asarray(bundle.model.predict_on_batch(batch))
    from nerbatch.backend import keras

    k = keras()
    members = [k.Model(bundle.model.inputs, bundle.model.get_layer(f"m{i}_tag_probs").output) for i in (1, 2)]
    expected = np.mean([np.asarray(m.predict_on_batch(batch)) for m in members], axis=0)
    np.testing.assert_allclose(averaged, expected, rtol=1e-5, atol=1e-6)


def test_softmax_objective_decodes_with_a_bigram_prior_chosen_on_validation(gmb_sample, tmp_path):
    from nerbatch.train import TRANSITION_WEIGHTS, TrainSettings, train

    metrics = train(gmb_sample, tmp_path / "softmax", TrainSettings.for_arch(
        "default", objective="softmax", epochs=1, max_train_sentences=200), verbose=0)
    transitions = json.loads((tmp_path / "softmax" / "transitions.json").read_text())
    assert transitions["kind"] == "bigram-prior" and transitions["weight"] in TRANSITION_WEIGHTS
    assert metrics["validation"]["transition_weight"] == transitions["weight"]
    log_probs = np.asarray(transitions["scores"]) / (transitions["weight"] or 1.0)
    assert transitions["weight"] == 0 or np.allclose(np.exp(log_probs).sum(axis=1), 1.0, atol=1e-3)


def test_the_bigram_prior_weight_is_the_one_scoring_best_on_validation(gmb_sample):
    # A trained network (the shipped one) makes the weights score differently; the one-epoch
    # network of the test above scores 0 with every weight, so it cannot show the choice.
    from nerbatch.bundle import load_bundle
    from nerbatch.corpus import read_corpus
    from nerbatch.decode import tag_bigram_log_probs
    from nerbatch.train import TRANSITION_WEIGHTS, _fit_transition_prior
    from nerbatch.vocab import TagSet

    bundle, corpus = load_bundle(), read_corpus(gmb_sample)
    tagset = TagSet(bundle.tags)
    fit, val = corpus.subset(range(0, 540, 2)), corpus.subset(range(1, 540, 2))
    prior = _fit_transition_prior(bundle.model, bundle.encoder, tagset, fit, val, bundle.max_len)
    by_weight = {float(w): f for w, f in prior["validation_f1_by_weight"].items()}
    assert sorted(by_weight) == sorted(TRANSITION_WEIGHTS) and len(set(by_weight.values())) > 1
    assert prior["weight"] > 0 and by_weight[prior["weight"]] == max(by_weight.values())
    expected = prior["weight"] * tag_bigram_log_probs([tagset.encode(t) for t in fit.tags], len(tagset))
    np.testing.assert_allclose(prior["scores"], expected, atol=1e-6)


def test_rare_type_sentences_are_oversampled(gmb_sample):
    from nerbatch.train import _training_windows
    from nerbatch.vocab import TagSet

    corpus = read_corpus(gmb_sample)
    tagset = TagSet.build(corpus.tags)
    once, _ = _training_windows(corpus, tagset, 50, rare_copies=1)
    four, _ = _training_windows(corpus, tagset, 50, rare_copies=4)
    from nerbatch.windows import plan_windows

    rare = [s for s in corpus.tags if {"B-art", "B-eve", "B-nat"} & set(s)]
    assert rare
    assert len(four) - len(once) == 3 * sum(len(plan_windows(len(s), 50)) for s in rare)


def test_refit_learns_from_the_whole_training_part_for_the_epochs_validation_chose(gmb_sample, tmp_path):
    from nerbatch.train import TrainSettings, protocol_parts, train
    from nerbatch.vocab import Vocabulary, normalize_word

    settings = TrainSettings.for_arch("default", epochs=6, patience=6, seed=5, refit=True, learning_rate=0.005)
    metrics = train(gmb_sample, tmp_path / "refit", settings, verbose=0)
    fit, val, _ = protocol_parts(read_corpus(gmb_sample), settings)
    refit = metrics["training"]["refit"]
    assert refit["sentences"] == len(fit) + len(val)
    # as many epochs as validation chose, at the learning rates they had
    assert refit["epochs"] == [metrics["validation"]["members"][0]["best_epoch"]]
    assert len(refit["learning_rates"][0]) == len(refit["loss"][0]) == refit["epochs"][0]
    # the shipped vocabulary is the whole training part's, so words seen only in validation are known
    whole = Vocabulary.build((normalize_word(w, True) for s in fit.words + val.words for w in s), 2)
    bundle = load_bundle(tmp_path / "refit")  # safe_mode=True
    assert bundle.encoder.words.items == whole.items
    only_in_validation = set(whole.items) - set(
        Vocabulary.build((normalize_word(w, True) for s in fit.words for w in s), 2).items)
    assert only_in_validation
    assert bundle.model.get_layer("word_embedding").input_dim == len(whole)
    # the refit network is trained, not freshly initialised: it learns and finds entities
    assert refit["loss"][0][-1] < refit["loss"][0][0]
    assert metrics["test"]["micro"]["f1"] > 0.1


def test_model_from_a_newer_keras_is_refused_naming_both_versions(monkeypatch):
    """An older Keras fails deep inside deserialisation with many lines; the user needs the versions."""
    import keras

    def old_keras_load(*args, **kwargs):
        raise TypeError("<class 'Functional'> could not be deserialized.\n\nconfig={...}\n\nException encountered: "
                        "GlorotUniform.__init__() got an unexpected keyword argument 'input_axes'")

    saved_with = load_bundle(None).metrics["versions"]["keras"]
    monkeypatch.setattr(keras.saving, "load_model", old_keras_load)
    monkeypatch.setattr(keras, "__version__", "3.13.0")
    with pytest.raises(BundleError) as refused:
        load_bundle(None)
    message = str(refused.value)
    assert f"saved with Keras {saved_with} under Keras 3.13.0" in message
    assert f"pip install 'keras>={saved_with}'" in message and "\n" not in message
    monkeypatch.setattr(keras, "__version__", saved_with)  # the same Keras: what failed and why, on one line
    with pytest.raises(BundleError, match=r"cannot load model \(TypeError: <class 'Functional'> could not be "
                                          r"deserialized\. Exception encountered: GlorotUniform.__init__\(\) got an "
                                          r"unexpected keyword argument 'input_axes'\)$"):
        load_bundle(None)


def test_declared_keras_loads_the_shipped_bundle():
    """The dependency's lower bound admits no Keras release older than the one that saved the model."""
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
    bound = next(d for d in pyproject["project"]["dependencies"] if re.match(r"keras\b", d))
    lowest = tuple(int(n) for n in re.fullmatch(r"keras>=([\d.]+),<\d+", bound).group(1).split("."))
    saved_with = json.loads((Path(__file__).parents[1] / "nerbatch" / "models" / "default" / "metrics.json")
                            .read_text(encoding="utf-8"))["versions"]["keras"]
    assert lowest >= tuple(int(n) for n in saved_with.split(".")[:2]), (bound, saved_with)


def test_training_leaves_the_callers_random_generators_and_plotting_backend(gmb_sample, tmp_path):
    """A notebook that trains keeps its own random sequences and its inline plots."""
    import random

    import matplotlib

    from nerbatch.train import TrainSettings, train

    previous_backend = matplotlib.get_backend()
    matplotlib.use("svg")
    try:
        random.seed(7)
        np.random.seed(7)
        expected = (random.random(), float(np.random.rand()))
        random.seed(7)
        np.random.seed(7)
        train(gmb_sample, tmp_path / "model", TrainSettings.for_arch("seed", epochs=1, max_train_sentences=40),
              verbose=0)
        assert (tmp_path / "model" / "training.png").read_bytes().startswith(b"\x89PNG")
        assert (random.random(), float(np.random.rand())) == expected
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.use(previous_backend)
