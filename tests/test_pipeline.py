import numpy as np

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
