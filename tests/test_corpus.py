import io
import json
import os
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from nerbatch.corpus import protocol_split, read_corpus, validation_split
from nerbatch.errors import CorpusError


def test_reads_sample_sentences_and_tags(gmb_sample):
    corpus = read_corpus(gmb_sample)
    assert len(corpus) == 540
    assert corpus.words[0][:3] == ["Thousands", "of", "demonstrators"]
    assert corpus.tags[0][6] == "B-geo"  # London
    assert all(len(w) == len(t) for w, t in zip(corpus.words, corpus.tags))
    assert max(len(w) for w in corpus.words) > 50


def test_null_like_words_stay_words(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text(
        "Sentence #,Word,POS,Tag\nSentence: 1,None,NN,O\n,NA,NNP,B-org\n,null,NN,O\n,NaN,NN,O\n", encoding="latin1"
    )
    corpus = read_corpus(path)
    assert corpus.words == [["None", "NA", "null", "NaN"]]
    assert corpus.tags == [["O", "B-org", "O", "O"]]


def test_latin1_words(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes("Sentence #,Word,POS,Tag\nSentence: 1,Caf\xe9,NN,O\n".encode("latin1"))
    assert read_corpus(path).words == [["Café"]]


def test_utf8_reencoded_corpus_is_read_as_utf8(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes("Sentence #,Word,POS,Tag\nSentence: 1,Caf\xe9,NN,O\n,Z\xfcrich,NNP,B-geo\n".encode("utf-8"))
    assert read_corpus(path).words == [["Café", "Zürich"]]
    with_bom = tmp_path / "bom.csv"  # a spreadsheet's "CSV UTF-8" export starts with a byte-order mark
    with_bom.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert read_corpus(with_bom).words == [["Café", "Zürich"]]
    quoted = tmp_path / "quoted.csv"  # every field quoted, as R's write.csv does
    quoted.write_bytes(b"\xef\xbb\xbf" + '"Sentence #","Word","POS","Tag"\n"Sentence: 1","Café","NN","O"\n'.encode())
    assert read_corpus(quoted).words == [["Café"]]


def test_a_corpus_mixing_utf8_and_latin1_words_is_refused_naming_a_line_of_each(tmp_path):
    path = tmp_path / "mixed.csv"  # a UTF-8 export with one cp1252 word pasted in
    path.write_bytes(b"Sentence #,Word,POS,Tag\nSentence: 1,K\xc3\xb6ln,NNP,B-geo\n,is,VBZ,O\n"
                     b"Sentence: 2,caf\xe9,NN,O\n,M\xc3\xbcller,NNP,B-per\n,Z\xc3\xbcrich,NNP,B-geo\n")
    with pytest.raises(CorpusError, match=r"mixed.csv: mixes encodings: line 2 holds UTF-8 \('Köln'\) "
                                          r"but line 4 does not \('café' as latin1\)"):
        read_corpus(path)
    few = tmp_path / "few.csv"  # one UTF-8 name is enough beside a cp1252 quote
    few.write_bytes(b"Sentence #,Word,POS,Tag\nSentence: 1,M\xc3\xbcller,NNP,B-per\n,said,VBD,O\n"
                    b"Sentence: 2,It\x92s,PRP,O\n")
    with pytest.raises(CorpusError, match=r"few.csv: mixes encodings: line 2 holds UTF-8 \('Müller'\)"):
        read_corpus(few)
    scripts = tmp_path / "scripts.csv"  # UTF-8 words of scripts other than Europe's count as UTF-8 too
    scripts.write_bytes("Sentence #,Word,POS,Tag\nSentence: 1,北京,NNP,B-geo\n,and,CC,O\n,دبي,NNP,B-geo\n".encode()
                        + b"Sentence: 2,caf\xe9,NN,O\n")
    with pytest.raises(CorpusError, match=r"scripts.csv: mixes encodings: line 2 holds UTF-8 \('北京'\) "
                                          r"but line 5 does not"):
        read_corpus(scripts)
    arabic = tmp_path / "arabic.csv"
    arabic.write_bytes("Sentence #,Word,POS,Tag\nSentence: 1,دبي,NNP,B-geo\n".encode() + b",caf\xe9,NN,O\n")
    with pytest.raises(CorpusError, match=r"arabic.csv: mixes encodings: line 2 holds UTF-8 \('دبي'\)"):
        read_corpus(arabic)
    latin1 = tmp_path / "latin1.csv"  # "Gauß’s", "JOSÉ’S", "là »", "olé…”" in cp1252 happen to be valid UTF-8
    latin1.write_bytes(b"Sentence #,Word,POS,Tag\nSentence: 1,Gau\xdf\x92s,NNP,B-per\n,law,NN,O\n"
                       b"Sentence: 2,Fran\xe7ois,NNP,B-per\n,JOS\xc9\x92S,NNP,B-per\n,l\xe0\xa0\xbb,RB,O\n"
                       b",ol\xe9\x85\x94,UH,O\n")
    assert read_corpus(latin1).words == [["Gau\xdf\x92s", "law"],
                                         ["François", "JOS\xc9\x92S", "là\xa0»", "olé\x85\x94"]]
    only_chance = tmp_path / "chance.csv"  # when such words are a file's only non-ASCII ones, it is latin1 still
    only_chance.write_bytes(b"Sentence #,Word,POS,Tag\nSentence: 1,Gau\xdf\x92s,NNP,B-per\n,law,NN,O\n"
                            b",l\xe0\xa0\xbb,RB,O\n")
    assert read_corpus(only_chance).words == [["Gau\xdf\x92s", "law", "là\xa0»"]]


def test_iob1_tags_are_read_as_iob2_with_the_same_spans(tmp_path, gmb_sample):
    # Kept as I-, no gold path was IOB2-valid: a default network trained on such a corpus found nothing.
    from nerbatch.decode import iob2_spans

    published = read_corpus(gmb_sample)
    iob1 = tmp_path / "iob1.csv"
    iob1.write_bytes(gmb_sample.read_bytes().replace(b",B-", b",I-"))
    read = read_corpus(iob1)
    assert read.tags == published.tags
    path = tmp_path / "adjacent.csv"
    path.write_text("Sentence #,Word,POS,Tag\nSentence: 1,Paris,NNP,I-geo\n,London,NNP,B-geo\n,Rome,NNP,I-geo\n"
                    ",and,CC,O\n,UN,NNP,I-org\n,EU,NNP,I-geo\n")
    tags = read_corpus(path).tags[0]
    assert tags == ["B-geo", "B-geo", "I-geo", "O", "B-org", "B-geo"]
    assert iob2_spans(tags) == iob2_spans(["I-geo", "B-geo", "I-geo", "O", "I-org", "I-geo"])


def test_sentence_ids_repeated_on_every_row(tmp_path, gmb_sample):
    # A common preprocessing step fills the id down every row of its sentence.
    import pandas as pd

    frame = pd.read_csv(gmb_sample, encoding="latin1", dtype=str, keep_default_na=False)
    frame["Sentence #"] = frame["Sentence #"].replace("", None).ffill()
    path = tmp_path / "filled.csv"
    frame.to_csv(path, index=False, encoding="latin1")
    filled, published = read_corpus(path), read_corpus(gmb_sample)
    assert filled.words == published.words and filled.tags == published.tags


def test_sentence_ids_of_spaces_are_no_ids(tmp_path):
    path = tmp_path / "padded.csv"  # spreadsheet exports pad empty cells
    path.write_text("Sentence #,Word,POS,Tag\nSentence: 1 ,Paris,NNP,B-geo\n  ,is,VBZ,O\n ,big,JJ,O\n"
                    "Sentence: 2,Rome,NNP,B-geo\n\t,too,RB,O\n", encoding="latin1")
    corpus = read_corpus(path)
    assert corpus.words == [["Paris", "is", "big"], ["Rome", "too"]]
    assert corpus.sentence_ids == ["Sentence: 1", "Sentence: 2"]


def test_a_header_that_spans_lines_moves_the_lines_named_after_it(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('Sentence #,Word,"PO\nS",Tag\nSentence: 1,Paris,NNP,B-geo\n,x,NN,Q-geo\n', encoding="latin1")
    with pytest.raises(CorpusError, match="line 4: invalid IOB2 tag 'Q-geo'"):
        read_corpus(path)


def test_blank_lines_are_skipped_and_lines_still_named(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("Sentence #,Word,POS,Tag\nSentence: 1,Paris,NNP,B-geo\n\n,is,VBZ,O\n\n,x,NN,Q-geo\n\n",
                    encoding="latin1")
    with pytest.raises(CorpusError, match="line 6: invalid IOB2 tag 'Q-geo'"):
        read_corpus(path)
    path.write_text("Sentence #,Word,POS,Tag\nSentence: 1,Paris,NNP,B-geo\n\n,is,VBZ,O\n\n", encoding="latin1")
    assert read_corpus(path).words == [["Paris", "is"]]


@pytest.mark.parametrize(
    "body, where",
    [
        (",Orphan,NN,O\n", "line 2"),
        ("Sentence: 1,Paris,NNP,B-geo\n,x,NN,Q-geo\n", "line 3"),
        ("Sentence: 1,Paris,NNP,B-geo\n,,NN,O\n", "line 3"),
        ("Sentence: 1,Paris,NNP,B-geo,extra,cols\n", "line 2"),
        ("Sentence: 1,Paris,NNP,B-geo\n, ,NN,O\n", "line 3: empty word"),
        # a quote left unescaped swallows the rows up to the next one into a cell, whichever its column
        ('Sentence: 1,He,PRP,O\n,",``,O\n,Paris,NNP,B-geo\n,",\'\',O\n', "line 3: the 'Word' cell holds a line break"),
        ('Sentence: 1,He,PRP,O\n,"""",",O\n,Paris,NNP,B-geo\n,"""",",O\n', "line 3: the 'POS' cell holds a line break"),
        ('Sentence: 1,He,PRP,O\n"Sentence: 2,Paris,NNP,B-geo\n,is,VBZ,O\n",x,NN,O\n', "line 3: the 'Sentence #' cell"),
        ('Sentence: 1,Paris,NNP,"B-geo\n"\n,is,VBZ,O\n', "line 2: the 'Tag' cell holds a line break"),
        # ... also where the parser gives up first, far below, counting records ("Expected 4 fields in line 5"),
        # or at the end of the file ("EOF inside string")
        ('Sentence: 1,He,PRP,O\n,",``,O\n,Paris,NNP,B-geo\n,is,VBZ,O\n,",\'\',O\n,x,NN,O\n,said,VBD,O,and,more\n',
         "line 3: the 'Word' cell holds a line break"),
        ('Sentence: 1,He,PRP,O\n,",``,O\n,Paris,NNP,B-geo\n,is,VBZ,O\n,",\'\',O\n,",NN,O\n,Rome,NNP,B-geo\n',
         "line 3: the 'Word' cell holds a line break"),
        # one field more than the header made pandas take the first column as the index, shifting the others
        ("Sentence: 1,Paris,NNP,B-geo,B-geo\n,is,VBZ,O,O\n", "line 2: 5 fields where the header has 4"),
        ("Sentence: 1,Paris,NNP,B-geo,\n,is,VBZ,O,\n", "line 2: 5 fields where the header has 4 .*trailing comma"),
    ],
)
def test_malformed_rows_name_the_line(tmp_path, body, where):
    path = tmp_path / "bad.csv"
    path.write_text("Sentence #,Word,POS,Tag\n" + body, encoding="latin1")
    with pytest.raises(CorpusError, match=where):
        read_corpus(path)


def test_missing_file_and_columns(tmp_path):
    with pytest.raises(CorpusError, match="not found"):
        read_corpus(tmp_path / "nope.csv")
    with pytest.raises(CorpusError, match="is a folder; give the corpus file"):
        read_corpus(tmp_path)
    # a spreadsheet's "CSV UTF-8" export (its mark keeps the first name quoted); a fifth column short rows leave out
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + b'"Sentence #","Word","POS","Tag"\r\n"Sentence: 1","Paris",'
                                       b'"NNP","B-geo"\r\n"","is","VBZ","O","x"\r\n')
    with pytest.raises(CorpusError, match=r"bom.csv: line 3: 5 fields where the header has 4"):
        read_corpus(tmp_path / "bom.csv")
    (tmp_path / "note.csv").write_text("Sentence #,Word,POS,Tag,Note\nSentence: 1,Paris,NNP,B-geo\n,is,VBZ,O,x\n"
                                       ",here,RB,O\n,.,.,O,,\n", encoding="latin1")
    with pytest.raises(CorpusError, match=r"note.csv: line 5: 6 fields where the header has 5"):
        read_corpus(tmp_path / "note.csv")
    # a tar the error path does not read again keeps the parser's message (not its tar header as a header)
    data = "Sentence #,Word,POS,Tag\nSentence: 1,Paris,NNP,B-geo\n,is,VBZ,O,and,more\n".encode("latin1")
    with tarfile.open(tmp_path / "corpus.tar.gz", "w:gz") as archive:
        member = tarfile.TarInfo("ner_dataset.csv")
        member.size = len(data)
        archive.addfile(member, io.BytesIO(data))
    with pytest.raises(CorpusError, match=r"corpus.tar.gz: cannot read corpus \(ParserError: .*Expected 4 fields"):
        read_corpus(tmp_path / "corpus.tar.gz")
    tabs = tmp_path / "tabs.csv"  # a comma in a word made the parser fail on that row, not on the header
    tabs.write_text("Sentence #\tWord\tPOS\tTag\nSentence: 1\tParis\tNNP\tB-geo\n\t,\t,\tO\n", encoding="latin1")
    with pytest.raises(CorpusError, match=r"tabs.csv: line 1: missing column\(s\) \['Sentence #', 'Word', 'Tag'\]"):
        read_corpus(tabs)
    fifo = tmp_path / "corpus.fifo"  # as --data <(unzip -p ...) gives
    os.mkfifo(fifo)
    with pytest.raises(CorpusError, match=r"is not a regular file \(a pipe or a device\)"):
        read_corpus(fifo)
    path = tmp_path / "cols.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(CorpusError, match="missing column"):
        read_corpus(path)


def test_documents_given_as_the_corpus_are_named_so_in_a_short_line(tmp_path):
    # A line of JSON read as a header is thousands of "column names": the message printed them all.
    docs = tmp_path / "news.jsonl"
    text = ", ".join(["Angela Merkel met Emmanuel Macron in Berlin"] * 2000)
    docs.write_text(json.dumps({"id": "a", "text": text}) + "\n")
    pq.write_table(pa.table({"id": ["a"], "text": [text]}), tmp_path / "news.parquet")
    for path, what in ((docs, "JSON"), (tmp_path / "news.parquet", "parquet")):
        with pytest.raises(CorpusError) as caught:
            read_corpus(path)
        message = str(caught.value)
        assert len(message) < 600, message
        assert f"this looks like {what} documents: --data takes the annotated corpus" in message, message
        assert "documents go to 'nerbatch run'" in message


def test_protocol_split_is_fixed_and_disjoint():
    train, test = protocol_split(1000)
    again_train, again_test = protocol_split(1000)
    assert np.array_equal(test, again_test) and len(test) == 200
    assert not set(train) & set(test)
    fit, val = validation_split(train, 0.1, seed=1)
    assert set(fit) | set(val) == set(train) and not set(val) & set(test)


def test_full_corpus_reads_in_seconds(full_corpus):
    corpus = read_corpus(full_corpus)
    assert len(corpus) == 47959
    assert corpus.n_tokens == 1048575


def test_a_zip_is_read_by_its_one_data_file(tmp_path, gmb_sample):
    import zipfile

    zipped = tmp_path / "corpus.zip"  # `zip -r` adds the folder; macOS adds its metadata
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("data/", "")
        archive.write(gmb_sample, "data/ner.csv")
        archive.writestr("__MACOSX/data/._ner.csv", b"\x00\x05\x16\x07")
    corpus = read_corpus(zipped)
    assert (corpus.words, corpus.tags) == (read_corpus(gmb_sample).words, read_corpus(gmb_sample).tags)
    with zipfile.ZipFile(zipped, "a") as archive:
        archive.write(gmb_sample, "data/other.csv")
    with pytest.raises(CorpusError, match=r"^\S*corpus.zip: expected one corpus file in the zip, found 2: "
                                          r"data/ner.csv, data/other.csv; unzip the one to use$"):
        read_corpus(zipped)
    zipped.write_bytes(b"not a zip")
    with pytest.raises(CorpusError, match=r"^\S*corpus.zip: cannot read corpus \(BadZipFile: File is not a zip file\)$"):
        read_corpus(zipped)


@pytest.mark.parametrize("name", ["c.csv.gz", "c.csv.bz2", "c.csv.xz", "c.csv.zst", "c.csv.zip", "c.tar", "c.tar.gz"])
def test_a_damaged_compressed_corpus_is_one_error(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"garbage, not what the name says" * 10)
    with pytest.raises(CorpusError, match=f"{name}: cannot read corpus"):
        read_corpus(path)
