import re

import numpy as np
import pytest

from nerbatch.bundle import load_bundle
from nerbatch.decode import TagKinds, flat_spans, iob2_spans
from nerbatch.documents import Document
from nerbatch.text import segment
from nerbatch.windows import plan_windows

TAGS = ["O", "B-geo", "I-geo", "B-per", "I-per", "B-org", "I-org"]


def test_vectorised_spans_match_iob2_spans():
    rng = np.random.default_rng(7)
    kinds = TagKinds.from_tags(TAGS)
    lengths = rng.integers(1, 30, size=200)
    ids = rng.integers(0, len(TAGS), size=lengths.sum()).astype(np.int32)
    probs = rng.random(lengths.sum()).astype(np.float32)
    first = np.zeros(lengths.sum(), dtype=bool)
    first[np.cumsum(lengths) - lengths] = True
    spans = flat_spans(ids, probs, first, kinds)
    expected = []
    offset = 0
    for n in lengths:
        for span in iob2_spans([TAGS[i] for i in ids[offset : offset + n]]):
            expected.append((offset + span.start, offset + span.end, span.label,
                             float(probs[offset + span.start : offset + span.end].mean())))
        offset += n
    got = [(int(s), int(e), kinds.labels[t], float(p))
           for s, e, t, p in zip(spans.start, spans.end, spans.type_id, spans.score)]
    assert [g[:3] for g in got] == [e[:3] for e in expected]
    np.testing.assert_allclose([g[3] for g in got], [e[3] for e in expected], rtol=1e-5)


def test_a_tagger_given_an_iterator_tags_as_given_a_list(tiny_bundle):
    # The sentences are read twice; an iterator used to leave every probability 0 and every tag made up.
    tagger = load_bundle(tiny_bundle).tagger()
    sentences = [["Angela", "Merkel", "visited", "Paris", "."], ["He", "left", "on", "Monday", "."]]
    expected = tagger.tag_strings(sentences)
    assert tagger.tag_strings(iter(sentences)) == expected
    assert tagger.tag_strings(s for s in sentences) == expected
    assert all(p.sum(axis=1) == pytest.approx(1.0, abs=1e-4) for p in tagger.tag_probabilities(iter(sentences)))


def test_documents_come_back_once_in_order(tiny_pipeline, news_documents):
    docs = [Document(d["id"], d["text"], {}, "news.jsonl", i + 1) for i, d in enumerate(news_documents)]
    chunks = list(tiny_pipeline.annotate(iter(docs)))
    assert len(chunks) > 1  # small chunk_sentences: several chunks
    assert [d.doc_id for c in chunks for d in c.documents] == [d.doc_id for d in docs]
    for chunk in chunks:
        assert chunk.entities_per_document().sum() == len(chunk)
        for doc_records, doc in zip(chunk.records_by_document("m@1"), chunk.documents):
            for record in doc_records:
                assert doc.text[record["start"] : record["end"]] == record["text"]


def test_entity_across_a_window_cut_in_a_200_token_sentence(default_pipeline):
    clause = "the talks in the capital continued through the night , officials said"
    filler = " , ".join([clause] * 16)
    words = filler.split()
    # put a person's name on tokens 41-42: the ownership cut of the first two windows
    cut = plan_windows(200, 50)[0].own_end
    prefix = " ".join(words[: cut - 2])
    text = f"{prefix} President George Bush met Russian leader Vladimir Putin in Moscow {' '.join(words[cut - 2:])}"
    sentences = segment(text)
    assert len(sentences) == 1 and len(sentences[0]) > 200
    tokens = sentences[0].words
    assert tokens[cut - 1 : cut + 1] == ["George", "Bush"]  # the name straddles the cut
    chunk = default_pipeline.annotate_all([Document("long", text, {}, "test", 1)])
    records = chunk.records_by_document("m")[0]
    people = {r["text"] for r in records if r["label"] == "per"}
    assert any("George Bush" in p for p in people), records
    assert any("Vladimir Putin" in p for p in people), records
    assert "Moscow" in {r["text"] for r in records if r["label"] == "geo"}
    for record in records:
        assert text[record["start"] : record["end"]] == record["text"]


def test_default_model_on_a_real_article(default_pipeline, news_documents):
    article = news_documents[0]
    chunk = default_pipeline.annotate_all([Document(article["id"], article["text"], {}, "news.jsonl", 1)])
    found = {(r["label"], r["text"]) for r in chunk.records_by_document("m")[0]}
    assert ("geo", "Hyde Park") in found or ("org", "Hyde Park") in found
    assert any(label == "per" and "Mahmoud Ahmadinejad" in text for label, text in found)  # GMB spans keep titles
    assert ("gpe", "Iranian") in found


def test_html_character_references_and_mojibake_are_read_as_their_characters(default_pipeline):
    """Scraped text with references left in, UTF-8 read as cp1252: records span them in the document as written."""
    text = "Shares of AT&amp;T rose in New&nbsp;York on Monday, Britain&#39;s &quot;FTSE&quot; fell."
    chunk = default_pipeline.annotate_all([Document("scraped", text, {}, "mem", 1)])
    found = [(r["label"], r["text"], r["start"], r["end"]) for r in chunk.records_by_document("m")[0]]
    assert found[:3] == [("org", "AT&amp;T", 10, 18), ("geo", "New&nbsp;York", 27, 40), ("tim", "Monday", 44, 50)]
    assert ("geo", "Britain", 52, 59) in found and all(text[a:b] == t for _, t, a, b in found)

    # an invisible format character at an entity's edge is left out, written as a reference too
    text = "Officials in Ber&shy;lin&shy; and &zwj;\u00adParis\u00ad&zwnj; met."
    chunk = default_pipeline.annotate_all([Document("format", text, {}, "mem", 1)])
    assert [(r["text"], r["start"]) for r in chunk.records_by_document("m")[0]] == [("Ber&shy;lin", 13), ("Paris", 40)]

    text = "France\u00e2\u20ac\u2122s President Nicolas Sarkozy met Jos\u00c3\u00a9 Manuel Barroso in Brussels."  # mojibake
    chunk = default_pipeline.annotate_all([Document("read as cp1252", text, {}, "mem", 1)])
    found = [(r["label"], r["text"]) for r in chunk.records_by_document("m")[0]]
    assert found == [("geo", "France"), ("per", "President Nicolas Sarkozy"), ("per", "Jos\u00c3\u00a9 Manuel Barroso"),
                     ("geo", "Brussels")]


def _three_chunks_then(tail):
    """Documents that make exactly three chunks at chunk_sentences=2, then ``tail()``."""
    for i in range(3):
        yield Document(str(i), "Angela Merkel visited Paris on Monday. It rained in Berlin.", {}, "mem", i)
    tail()


def _stops_promptly(pipeline, documents) -> float:
    import threading
    import time

    started = time.perf_counter()
    for _ in pipeline.annotate(documents):
        time.sleep(0.3)  # the reader fills the queue meanwhile, then finishes or fails
        break
    elapsed = time.perf_counter() - started
    assert not any(t.name == "nerbatch-segment" for t in threading.enumerate())
    return elapsed


def test_a_consumer_that_stops_early_does_not_wait_for_the_reader(tiny_bundle):
    from nerbatch.pipeline import NerPipeline

    pipeline = NerPipeline(load_bundle(tiny_bundle), chunk_sentences=2)

    def fail():
        raise OSError("disk gone")

    # The reader finishing (or failing) while the queue is full used to block it for good,
    # and the consumer's clean-up waited 5 s for it.
    assert _stops_promptly(pipeline, _three_chunks_then(lambda: None)) < 3
    assert _stops_promptly(pipeline, _three_chunks_then(fail)) < 3


def test_a_consumer_that_stops_early_takes_nothing_more_from_a_slow_source(tiny_bundle):
    import threading
    import time

    from nerbatch.pipeline import NerPipeline

    pipeline = NerPipeline(load_bundle(tiny_bundle), chunk_sentences=20)
    pulled = []

    def source():  # a first chunk at once, then a document every 0.5 s (a slow query, a socket)
        for i in range(60):
            if i >= 20:
                time.sleep(0.5)
            pulled.append(i)
            yield Document(str(i), "Angela Merkel visited Paris on Monday.", {}, "mem", i)

    started = time.perf_counter()
    for chunk in pipeline.annotate(source()):
        assert len(chunk.documents) == 20
        break
    # The reader used to fill its next chunk first: 5 s of waiting, then a thread left taking documents.
    assert time.perf_counter() - started < 3
    assert not any(t.name == "nerbatch-segment" for t in threading.enumerate())
    taken = len(pulled)
    time.sleep(1.2)
    assert len(pulled) == taken <= 22


def test_pipelines_sharing_a_bundle_run_in_threads(tiny_bundle):
    import random
    from concurrent.futures import ThreadPoolExecutor

    from nerbatch.pipeline import NerPipeline

    bundle = load_bundle(tiny_bundle)

    def work(seed: int) -> int:
        rng = random.Random(seed)
        pipeline = NerPipeline(bundle)  # every pipeline's tagger shares the bundle's word-feature cache
        found = 0
        for _ in range(15):
            docs = [Document(str(i), " ".join(rng.choice("ABCDEFGH") + "".join(rng.choices("xyzuvw", k=6))
                                              for _ in range(12)) + ".", {}, "mem", i) for i in range(20)]
            found += len(pipeline.annotate_all(docs).documents)
        return found

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(work, range(4))) == [300] * 4


def test_empty_documents_still_come_in_bounded_chunks_and_kept_fields_are_checked(tiny_bundle):
    import pytest

    from nerbatch.errors import OutputError
    from nerbatch.pipeline import NerPipeline

    pipeline = NerPipeline(load_bundle(tiny_bundle), chunk_sentences=100)
    chunks = list(pipeline.annotate(Document(str(i), " ", {}, "mem", i) for i in range(1000)))
    assert [len(c.documents) for c in chunks] == [100] * 10
    chunk = pipeline.annotate_all([Document("1", "Angela Merkel visited Paris .", {"title": "T"}, "mem", 1)])
    with pytest.raises(OutputError, match="collides with the entity record field"):
        chunk.record_columns("m@1", ["text"])
    with pytest.raises(TypeError, match="not a string"):
        chunk.record_columns("m@1", "title")


def test_failed_documents_pass_through_in_bounded_chunks_in_input_order(tiny_bundle):
    from nerbatch.documents import DocumentError
    from nerbatch.pipeline import NerPipeline

    pipeline = NerPipeline(load_bundle(tiny_bundle), chunk_sentences=100)
    read = 0

    def items():
        # 5,000 failures, then one good document: failures must not wait for it in memory
        nonlocal read
        for i in range(5000):
            read += 1
            yield DocumentError("mem", i, str(i), "missing_text: no 'text' field", "")
        yield Document("last", "Angela Merkel visited Paris .", {}, "mem", 5000)

    chunks = pipeline.annotate(items())
    first = next(chunks)
    assert read < 1000  # handed on while the reader is still reading
    chunks = [first, *chunks]
    assert all(len(c.failed) + len(c.documents) <= 100 for c in chunks)
    assert [e.position for c in chunks for e in c.failed] == list(range(5000))
    assert [d.doc_id for c in chunks for d in c.documents] == ["last"]


def test_the_readme_library_example_runs_and_plain_texts_get_a_clear_error(default_pipeline, capsys):
    import re
    from pathlib import Path

    import pytest

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    (example,) = re.findall(r"```python\n(.*?)```", readme, re.S)
    exec(compile(example, "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "'label': 'per', 'text': 'Angela Merkel', 'start': 0" in printed
    assert "'text': 'Berlin'" in printed
    for call in (lambda: default_pipeline.annotate_all(["Obama in Paris."]),
                 lambda: list(default_pipeline.annotate(["Obama in Paris."]))):
        with pytest.raises(TypeError, match=r"annotates nerbatch.documents.Document items, not str"):
            call()
    with pytest.raises(TypeError, match=r"document '1' \(m:0\): text must be a str, not NoneType"):
        default_pipeline.annotate_all([Document("1", None, {}, "m", 0)])
    with pytest.raises(TypeError, match=r"document '2' \(m:1\): text must be a str, not NoneType"):
        list(default_pipeline.annotate([Document("2", None, {}, "m", 1)]))
    # what a record could not carry (entity_record.v1: doc_id a non-empty string)
    for doc_id in (5, None, ""):
        with pytest.raises(TypeError, match=r"document at m:3: doc_id must be a non-empty str"):
            default_pipeline.annotate_all([Document(doc_id, "Obama in Paris.", {}, "m", 3)])
    with pytest.raises(TypeError, match=r"document 'd' \(m:4\): fields must be a dict, not NoneType"):
        default_pipeline.annotate_all([Document("d", "Obama in Paris.", None, "m", 4)])
    kept = default_pipeline.annotate_all([Document("d", "Obama in Paris.", {"n": 5, "tags": ["a", 1]}, "m", 4)])
    records = kept.records_by_document("m@1", keep_fields=("n", "tags", "missing"))[0]
    assert records and all((r["n"], r["tags"], r["missing"]) == ("5", '["a",1]', None) for r in records)
    from nerbatch.pipeline import NerPipeline
    with pytest.raises(TypeError, match=r"NerPipeline takes a loaded bundle, not str .*load_bundle\(path\)"):
        NerPipeline("nerbatch/models/default")
    with pytest.raises(ValueError, match=r"chunk_sentences must be a positive integer, got '10'"):
        NerPipeline(default_pipeline.bundle, chunk_sentences="10")


def test_documents_read_before_a_failing_source_are_annotated_before_its_error(tiny_bundle):
    import pytest

    from nerbatch.pipeline import NerPipeline

    pipeline = NerPipeline(load_bundle(tiny_bundle), chunk_sentences=10)

    def source():
        for i in range(35):
            yield Document(f"d{i}", "Angela Merkel visited Paris.", {}, "db", i)
        raise ConnectionError("database went away")

    annotated = []
    with pytest.raises(ConnectionError, match="database went away"):
        for chunk in pipeline.annotate(source()):
            annotated += [d.doc_id for d in chunk.documents]
    assert annotated == [f"d{i}" for i in range(35)]


def test_invisible_characters_from_html_do_not_change_the_entities(default_pipeline):
    clean = "Palestinian President Mahmoud Abbas met Vietnamese officials in Hanoi. Emmanuel Macron spoke."
    soft = ("Pal\u00adestinian Pres\u00adident Mah\u00admoud Ab\u00adbas met Viet\u00adnamese of\u00adficials in "
            "Ha\u00adnoi. E\u200cmmanuel Macron spoke.")
    joined = ("Pales\u2060tinian President Mah\u2060moud Ab\u2060bas met Vietnamese officials in "
              "Ha\u2060noi. Emma\u2060nuel Mac\u2060ron spoke.")  # word joiners

    def entities(text):
        chunk = default_pipeline.annotate_all([Document("d", text, {}, "<test>", 1)])
        return [(r["label"], re.sub("[\u00ad\u200c\u2060]", "", r["text"]))
                for r in chunk.records_by_document("m")[0]]

    assert entities(soft) == entities(clean)
    assert entities(joined) == entities(clean)
    assert ("per", "Emmanuel Macron") in entities(clean)


def test_no_entity_runs_from_one_table_cell_into_the_next(default_pipeline):
    text = "Name\tCountry\nAngela Merkel\tGermany\nEmmanuel Macron\tFrance\nBoris Johnson\tBritain"
    chunk = default_pipeline.annotate_all([Document("d", text, {}, "<test>", 1)])
    found = [(r["label"], r["text"]) for r in chunk.records_by_document("m")[0]]
    assert [t for _, t in found] == ["Angela Merkel", "Germany", "Emmanuel Macron", "France", "Boris Johnson",
                                     "Britain"], found
    assert ("per", "Angela Merkel") in found and ("geo", "Germany") in found


def test_typographic_apostrophes_and_hyphens_give_the_entities_of_ascii_ones(default_pipeline):
    ascii_text = ("Cote d'Ivoire's President Laurent Gbagbo met rebels in Abidjan. "
                  "Massey Energy's Upper Big Branch South Mine reopened. Hewlett-Packard shares rose in New York.")
    typographic = ascii_text.replace("'", "\u2019").replace("-", "\u2011")

    def entities(text):
        chunk = default_pipeline.annotate_all([Document("d", text, {}, "<test>", 1)])
        return [(r["label"], r["start"], r["end"], r["score"]) for r in chunk.records_by_document("m")[0]]

    assert entities(typographic) == entities(ascii_text)
    assert ("gpe", "Cote d'Ivoire") in [(label, ascii_text[a:b]) for label, a, b, _ in entities(ascii_text)]


def test_entities_never_begin_or_end_with_quote_marks_bars_bullets_or_emphasis(default_pipeline):
    texts = {"> Officials said the talks resumed in\n> Jerusalem last November, but progress has been slow.": "Jerusalem",
             "| Talks resumed in | Jerusalem | last week |": "Jerusalem",
             "Talks resumed in * Jerusalem * last week.": "Jerusalem",
             "German Chancellor _Angela Merkel_ met French President Emmanuel Macron in Berlin.": "Angela Merkel",
             "German Chancellor __Angela Merkel__ met French President Emmanuel Macron in Berlin.": "Angela Merkel",
             "German Chancellor *Angela Merkel* met French President Emmanuel Macron in Berlin.": "Angela Merkel"}
    chunk = default_pipeline.annotate_all([Document(str(i), t, {}, "<test>", i) for i, t in enumerate(texts)])
    for (text, name), records in zip(texts.items(), chunk.records_by_document("m")):
        assert name in [r["text"] for r in records], text
        for r in records:
            assert r["text"] == text[r["start"]:r["end"]]
            assert r["text"][0].isalnum() and r["text"][-1].isalnum(), r


def test_a_list_items_number_is_no_entity_and_edges_hold_no_invisible_characters(default_pipeline):
    # The model reads "1 ." before a name as a date; the segmenter knows it is the item's number.
    digest = ("Top stories:\n1. Angela Merkel met Emmanuel Macron in Berlin.\n2. Oil prices rose in London.\n"
              "3. The United Nations warned of famine in Somalia.")
    speakers = "Speakers\n\n1. Angela Merkel\n2. Emmanuel Macron\n3) Boris Johnson"
    invisible = "Angela Merkel\u200d, the chancellor, visited Ber\u00adlin\u00ad and \u200dParis\u200c on Tuesday."
    texts = [digest, speakers, invisible]
    chunk = default_pipeline.annotate_all([Document(str(i), t, {}, "<test>", i) for i, t in enumerate(texts)])
    found = [[(r["label"], r["text"]) for r in records] for records in chunk.records_by_document("m")]
    assert found[0] == [("per", "Angela Merkel"), ("per", "Emmanuel Macron"), ("geo", "Berlin"), ("geo", "London"),
                        ("org", "United Nations"), ("geo", "Somalia")]
    assert found[1] == [("per", "Angela Merkel"), ("per", "Emmanuel Macron"), ("per", "Boris Johnson")]
    assert found[2] == [("per", "Angela Merkel"), ("geo", "Ber\u00adlin"), ("geo", "Paris"), ("tim", "Tuesday")]
    for text, records in zip(texts, chunk.records_by_document("m")):
        assert all(r["text"] == text[r["start"]:r["end"]] for r in records)
    # the model reads an item without its number or bullet, as the corpus's sentences are: "4 . The" made
    # "The World Health Organization" an organisation, "5 . Mr. Yanukovych" a person "Mr." and an org
    items = ("Top stories:\n4. The World Health Organization warned of famine.\n5. Mr. Yanukovych left Kiev.\n"
             "\u2022 Captain William Keeling sailed.\n")
    assert [(r["label"], r["text"]) for r in default_pipeline.annotate_all(
        [Document("items", items, {}, "<test>", 1)]).records_by_document("m")[0]] == [
        ("org", "World Health Organization"), ("per", "Mr. Yanukovych"), ("geo", "Kiev"), ("per", "William Keeling")]
    # in prose a number before a period stays what the model makes of it
    assert "1990" in [r["text"] for r in default_pipeline.annotate_all(
        [Document("p", "The wall fell in 1990. Germany was united a year later.", {}, "<test>", 1)]
    ).records_by_document("m")[0]]


def test_a_process_forked_after_the_model_loaded_gets_an_error_not_a_hang(tiny_bundle):
    # multiprocessing forks by default on Linux, and TensorFlow hangs for good in a forked copy.
    import os
    import time

    from nerbatch.errors import BackendError

    tagger = load_bundle(tiny_bundle).tagger()
    assert tagger.tag_strings([["Paris"]])  # the model has run in this process
    child = os.fork()
    if child == 0:  # the child never returns to pytest
        code = 4
        try:
            tagger.tag_strings([["Paris"]])
        except BackendError as exc:
            code = 3 if "multiprocessing.get_context('spawn')" in str(exc) else 5
            try:
                load_bundle(tiny_bundle)
            except BackendError:
                code = 0 if code == 3 else code
        finally:
            os._exit(code)
    deadline = time.monotonic() + 60
    while (done := os.waitpid(child, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    if done[0] == 0:
        os.kill(child, 9)
        os.waitpid(child, 0)
        pytest.fail("the forked process hung")
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert tagger.tag_strings([["Paris"]])  # the parent goes on
