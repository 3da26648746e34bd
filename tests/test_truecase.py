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
    "World Bank officials met the world 's health officials at the World Health Organization .".split(),
]


def test_the_usual_form_of_a_word_is_learnt_away_from_a_sentences_start():
    truecaser = Truecaser.build(CORPUS)
    assert {"the", "says", "must", "stop", "meets", "leaders", "and", "in", "world", "health"} <= truecaser.lowercase
    assert truecaser.cased == {"un": "UN", "iran": "Iran", "geneva": "Geneva", "european": "European",
                               "union": "Union", "brussels": "Brussels", "monday": "Monday",
                               "organization": "Organization", "bank": "Bank"}
    assert "he" not in truecaser.lowercase and "he" not in truecaser.cased
    # pairs written capitalised most often, with a word that is not: a sentence's first word says nothing
    assert truecaser.names == {"world health", "health organization"}
    # the same table from the sentences in any order, a tie going to the lower-case form
    tied = [["A", "word", "."], ["A", "Word", "."]]
    assert Truecaser.build(tied).lowercase == Truecaser.build(tied[::-1]).lowercase == {"word"}
    assert Truecaser.from_json(json.loads(json.dumps(truecaser.to_json()))) == truecaser
    without_names = {"lowercase": ["says"], "cased": {"un": "UN"}}  # as the first bundles with the file wrote it
    assert Truecaser.from_json(without_names) == Truecaser(frozenset(["says"]), {"un": "UN"})
    with pytest.raises(ValueError, match="not an object with"):
        Truecaser.from_json({"lowercase": 3, "cased": {}})


@pytest.mark.parametrize("words, read", [
    ("UN SAYS IRAN MUST STOP IN GENEVA .", "UN says Iran must stop in Geneva ."),
    ('" THE UN SAYS IRAN MUST STOP', '" The UN says Iran must stop'),  # the first word is capitalised
    ("SAYS XINHUA AND AP", "Says Xinhua and AP"),  # unknown: a long word a name, a short one an acronym
    ("Obama Meets Leaders of the European Union in Brussels", "Obama meets leaders of the European Union in Brussels"),
    ("The UN Says Iran Must Stop", "The UN says Iran must stop"),
    # a name's words keep their capitals
    ("WORLD HEALTH ORGANIZATION SAYS IRAN MUST STOP", "World Health Organization says Iran must stop"),
    ("World Health Organization Says Iran Must Stop", "World Health Organization says Iran must stop"),
    ("Iran Says World Health Organization", "Iran says World Health Organization"),  # one word beside a name
    ("IRAN SAYS WORLD HEALTH ORGANIZATION", "Iran says World Health Organization"),
    # clitics, typographic apostrophes and numbers are no lower-case words of running text
    ("Iran \u2019s Leaders Must Stop 2nd Meets", "Iran \u2019s leaders must stop 2nd meets"),
    ("Iran Does n't Say Leaders Must Stop", "Iran Does n't say leaders must stop"),  # "does": not in the corpus
])
def test_capitals_and_title_case_read_as_running_text(words, read):
    assert Truecaser.build(CORPUS).sentence(words.split()) == read.split()


@pytest.mark.parametrize("words, read", [
    # the usual forms, names; no capital after a number; a word the corpus never wrote stays
    ("the un says iran must stop in geneva .", "The UN says Iran must stop in Geneva ."),
    ("officials met the world health organization .", "Officials met the World Health Organization ."),
    ("43 of the un met xinhua in geneva .", "43 of the UN met xinhua in Geneva ."),
])
def test_a_lower_case_documents_sentences_read_with_capitals(words, read):
    truecaser = Truecaser.build(CORPUS * 3)  # nearly always capitalised, and three times at least
    assert truecaser.lower_case_sentence(words.split()) == read.split()
    assert truecaser.sentence(words.split()) == words.split()  # within a cased document: as written


def test_only_words_nearly_always_capitalised_are_names_in_lower_case_text():
    corpus = [["The", "river", "rose", "."]] + [["He", "crossed", "the", "River", "Jordan", "."]] * 3 + \
             [["He", "saw", "the", "river", "Jordan", "."], ["They", "want", "a", "new", "car", "."],
              ["A", "New", "Job", "fair", "."]]
    truecaser = Truecaser.build(corpus)
    assert truecaser.cased["river"] == "River" and "jordan" in truecaser.proper
    assert "river" not in truecaser.proper  # 3 of 5: the noun as well
    assert "new job" in truecaser.names and "new job" not in truecaser.proper_names  # capitalised once
    assert truecaser.lower_case_sentence("he saw the river jordan .".split()) == "He saw the river Jordan .".split()


@pytest.mark.parametrize("words", [
    "The UN says Iran must stop .",
    "UN , IAEA and NATO .",  # acronyms only: nothing a running text writes otherwise
    "Officials say the UN Says Iran Must Stop campaign met in Geneva .",  # a title within running text
    "Meets Leaders .",  # two words: a name as likely as a headline
    "MEETS Leaders on Monday , the UN says .",
    "Welcome to the World Health Organization .",  # a name: not a headline
    "Contact the World Health Organization by e-mail .",
    "Welcome to the Leaders Meets near Geneva .",  # "near", "5pm": running text, though Title Case allows some
    "The Leaders Meets at 5pm .",
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
    ("AGASSI FINISHED 2005 RANKED NUMBER SEVEN BY THE ASSOCIATION OF TENNIS PROFESSIONALS.",
     [("per", "AGASSI", 0), ("tim", "2005", 16), ("org", "ASSOCIATION OF TENNIS PROFESSIONALS", 48)]),
    ("Europe Currently Relies On Russia For A Quarter Of Its Natural Gas.",
     [("geo", "Europe", 0), ("geo", "Russia", 27)]),
    # a document in lower case (a transcript): 20 tokens or more
    ("angela merkel met gordon brown in berlin on tuesday. they spoke for an hour about iran and the european union.",
     [("per", "angela merkel", 0), ("per", "gordon brown", 18), ("geo", "berlin", 34), ("tim", "tuesday", 44),
      ("geo", "iran", 82)]),
    # mojibake read as the letter it stands for is lower case too
    ("angela merkel met gordon brown in berlin on tuesday. they spoke for an hour about iran at a caf\u00c3\u00a9 in paris.",
     [("per", "angela merkel", 0), ("per", "gordon brown", 18), ("geo", "berlin", 34), ("tim", "tuesday", 44),
      ("geo", "iran", 82), ("geo", "paris", 101)]),
    # names only where the corpus nearly always writes them so: "river", "market", "rice" are no names
    ("we walked along the river to the market and bought rice and bread. then we went home and cooked dinner.", []),
    # shorter: a chat line, a caption, code are as likely, and read as written
    ("the quick brown fox jumps over the lazy dog.", []),
    ("angela merkel met emmanuel macron in berlin on tuesday.", [("tim", "tuesday", 47)]),
    ("Senator Obama Said Critical Questions About North Korea's Nuclear Program Remain Unanswered.",
     [("per", "Senator Obama", 0), ("geo", "North Korea", 44)]),
])
def test_the_shipped_model_reads_headlines(default_pipeline, text, entities):
    """Read as written, the model found other spans ("CROATIA HAS BANNED POULTRY" an organisation; in lower
    case nothing but "tuesday")."""
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
    with_forms = load_bundle(tiny_bundle).tagger()
    without = dataclasses.replace(load_bundle(tiny_bundle), truecaser=None).tagger()
    headline = "UN SAYS IRAN MUST STOP".split()
    assert with_forms.truecaser.sentence(headline) != headline
    read_as_written = without.tag_probabilities([headline])[0]
    assert (bundle.tagger().tag_probabilities([headline])[0] == read_as_written).all()
    assert not (with_forms.tag_probabilities([headline])[0] == read_as_written).all()


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.pop("cased"), "not an object with 'lowercase', 'names', 'proper', 'proper_names' lists and a 'cased' object"),
    (lambda t: t.update(names="world bank"),
     "not an object with 'lowercase', 'names', 'proper', 'proper_names' lists and a 'cased' object"),
    (lambda t: t["lowercase"].append(3), "holds an item that is not a string"),
    (lambda t: t["names"].append(None), "holds an item that is not a string"),
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


@pytest.mark.parametrize("name", ["truecase.json", "manifest.json"])
def test_a_bundle_file_nested_too_deep_is_one_error(tiny_bundle, tmp_path, name):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    (copy / name).write_text("[" * 200_000)
    if name != "manifest.json":
        write_manifest(copy)
    with pytest.raises(BundleError, match=re.escape(f"{copy / name}: unreadable")):
        load_bundle(copy)
