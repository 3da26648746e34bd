import dataclasses
import json
import re
import shutil

import pytest

from nerbatch.bundle import load_bundle, write_manifest
from nerbatch.corpus import read_corpus
from nerbatch.documents import Document
from nerbatch.errors import BundleError
from nerbatch.train import TrainSettings, protocol_parts
from nerbatch.truecase import Truecaser

CORPUS = [
    "The UN says Iran must stop .".split(),
    "Officials say the UN and Iran met in Geneva .".split(),
    "Meets with leaders of the European Union in Brussels .".split(),  # first words say nothing of their case
    "He meets leaders on Monday and the UN says so .".split(),
]


def test_the_usual_form_of_a_word_is_learnt_away_from_a_sentences_start():
    truecaser = Truecaser.build(CORPUS)
    assert {"the", "says", "must", "stop", "meets", "leaders", "and", "in"} <= truecaser.lowercase
    assert truecaser.cased == {"un": "UN", "iran": "Iran", "geneva": "Geneva", "european": "European",
                               "union": "Union", "brussels": "Brussels", "monday": "Monday"}
    assert "officials" not in truecaser.lowercase and "officials" not in truecaser.cased
    # the same table from the sentences in any order, a tie going to the lower-case form
    tied = [["A", "word", "."], ["A", "Word", "."]]
    assert Truecaser.build(tied).lowercase == Truecaser.build(tied[::-1]).lowercase == {"word"}
    assert Truecaser.from_json(json.loads(json.dumps(truecaser.to_json()))) == truecaser


@pytest.mark.parametrize("words, read", [
    ("UN SAYS IRAN MUST STOP IN GENEVA .", "UN says Iran must stop in Geneva ."),
    ('" THE UN SAYS IRAN MUST STOP', '" The UN says Iran must stop'),  # the first word is capitalised
    ("SAYS XINHUA AND AP", "Says Xinhua and AP"),  # unknown: a long word a name, a short one an acronym
    ("Obama Meets Leaders of the European Union in Brussels", "Obama meets leaders of the European Union in Brussels"),
    ("The UN Says Iran Must Stop", "The UN says Iran must stop"),
])
def test_capitals_and_title_case_read_as_running_text(words, read):
    assert Truecaser.build(CORPUS).sentence(words.split()) == read.split()


@pytest.mark.parametrize("words", [
    "The UN says Iran must stop .",
    "UN , IAEA and NATO .",  # acronyms only: nothing a running text writes otherwise
    "Officials say the UN Says Iran Must Stop campaign met in Geneva .",  # a title within running text
    "Meets Leaders .",  # two words: a name as likely as a headline
    "MEETS Leaders on Monday , the UN says .",
])
def test_running_text_is_read_as_written(words):
    sentence = words.split()
    assert Truecaser.build(CORPUS).sentence(sentence) is sentence


def test_the_training_part_sentences_are_read_as_written(full_corpus):
    """Running text does not look like a headline: none of the corpus's sentences is recased but a few."""
    corpus = read_corpus(full_corpus)
    truecaser = load_bundle(None).truecaser
    recased = [words for words in corpus.words if truecaser.sentence(words) is not words]
    assert len(recased) <= 5, recased


@pytest.mark.parametrize("text, entities", [
    # test-split sentences of the corpus, in capitals and in Title Case
    ("MEANWHILE, CROATIA HAS BANNED POULTRY IMPORTS FROM HUNGARY FOLLOWING THE ANNOUNCEMENT.",
     [("geo", "CROATIA", 11), ("geo", "HUNGARY", 51)]),
    ("THE BRITISH EMBASSY HAS ADVISED BRITISH CITIZENS TO AVOID TRAVEL TO KHARTOUM.",
     [("gpe", "BRITISH", 4), ("gpe", "BRITISH", 32), ("geo", "KHARTOUM", 68)]),
    ("Europe Currently Relies On Russia For A Quarter Of Its Natural Gas.",
     [("geo", "Europe", 0), ("geo", "Russia", 27)]),
    ("Mujaddedi Said He Believed Pakistan's Intelligence Agency Organized The Bombing.",
     [("per", "Mujaddedi", 0), ("geo", "Pakistan", 27)]),
])
def test_the_shipped_model_reads_headlines(default_pipeline, text, entities):
    """Without the training part's written forms the model took these for organisations."""
    docs = [Document("h", text, {}, "<memory>", 1)]
    records = default_pipeline.annotate_all(docs).records_by_document(default_pipeline.model_name)[0]
    assert [(r["label"], r["text"], r["start"]) for r in records] == entities
    assert all(text[r["start"]:r["end"]] == r["text"] for r in records)  # offsets in the document as written


def _info(bundle) -> dict:
    from typer.testing import CliRunner

    from nerbatch.cli import app

    result = CliRunner().invoke(app, ["info", "--model", str(bundle)])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_a_trained_bundle_holds_its_training_parts_forms(tiny_bundle, gmb_sample):
    fit, val, _ = protocol_parts(read_corpus(gmb_sample), TrainSettings.for_arch("default"))
    truecaser = Truecaser.build(fit.words + val.words)
    assert load_bundle(tiny_bundle).truecaser == truecaser
    assert _info(tiny_bundle)["written_forms"] == len(truecaser) > 1000


def test_a_bundle_without_forms_reads_sentences_as_written(tiny_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    (copy / "truecase.json").unlink()
    write_manifest(copy)  # as a bundle written before the file existed
    bundle = load_bundle(copy)
    assert bundle.truecaser is None and bundle.tagger().truecaser is None
    assert _info(copy)["written_forms"] is None
    tagger = load_bundle(tiny_bundle).tagger()
    without = dataclasses.replace(load_bundle(tiny_bundle), truecaser=None).tagger()
    headline = "UN SAYS IRAN MUST STOP".split()
    assert (bundle.tagger().tag_probabilities([headline])[0] == without.tag_probabilities([headline])[0]).all()
    assert tagger.truecaser.sentence(headline) != headline


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.pop("cased"), "not an object with a 'lowercase' list and a 'cased' object"),
    (lambda t: t["lowercase"].append(3), "holds an item that is not a string"),
])
def test_a_malformed_forms_file_is_one_error(tiny_bundle, tmp_path, edit, message):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    data = json.loads((copy / "truecase.json").read_text())
    edit(data)
    (copy / "truecase.json").write_text(json.dumps(data))
    write_manifest(copy)
    with pytest.raises(BundleError, match=re.escape(f"truecase.json: malformed bundle file: {message}")):
        load_bundle(copy)
