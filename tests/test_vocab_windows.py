import numpy as np
import pytest

from nerbatch.vocab import PAD_ID, UNK_ID, FeatureEncoder, TagSet, Vocabulary, casing_class, composed, normalize_word
from nerbatch.windows import plan_windows


def test_reserved_ids_and_unknown_words_never_raise():
    vocab = Vocabulary.build(["the", "the", "cat", "rare"], min_freq=2)
    assert vocab.items[:2] == ["<pad>", "<unk>"]
    ids = vocab.lookup(["the", "cat", "never-seen", "<pad>"])
    assert ids[0] == 2 and ids[1] == UNK_ID and ids[2] == UNK_ID
    assert ids[3] == UNK_ID  # a token spelt like the padding is a word, not padding the network masks
    assert PAD_ID not in vocab.lookup(["the"])


def test_normalisation_and_casing():
    assert normalize_word("Iraq2003", lowercase=True) == "iraq0000"
    assert normalize_word("Iraq", lowercase=False) == "Iraq"
    assert [casing_class(w) for w in ["the", "London", "NATO", "iPhone", "2003", "G8", ",", "naïve"]] == [
        1, 2, 3, 4, 5, 6, 7, 1,
    ]


def test_encode_batch_pads_with_zero_and_maps_chars():
    words = Vocabulary.build(["london", "is", "big"])
    chars = Vocabulary.build("Londisbg")
    encoder = FeatureEncoder(words, chars, lowercase=True, max_word_len=6)
    batch = encoder.encode_batch([["London", "is", "big"], ["Zanzibarxyz"]], width=4)
    assert batch["words"].shape == (2, 4)
    assert batch["words"][0, 3] == PAD_ID and batch["words"][1, 0] == UNK_ID
    assert batch["chars"].shape == (2, 4, 6)
    assert batch["chars"][0, 0, 0] == chars.lookup(["L"])[0]
    assert (batch["chars"][0, 3] == 0).all()
    # a long word keeps prefix and suffix
    assert batch["chars"][1, 0].tolist() == chars.lookup(list("Zanxyz")).tolist()
    assert batch["casing"][0].tolist() == [2, 1, 1, 0]


def test_ligatures_full_width_forms_and_accents_for_apostrophes_read_as_the_corpus_writes_them():
    # PDF text ("\ufb01ve"), East Asian input methods ("\uff0c"), an acute accent or prime typed for an apostrophe
    assert [composed(w) for w in ["\ufb01ve", "in\ufb02uential", "\uff0c", "\uff08", "\uff34\uff4f\uff4b\uff59\uff4f",
                                  "Britain\u00b4s", "\u2032s"]] == [
        "five", "influential", ",", "(", "Tokyo", "Britain's", "'s"]
    assert composed("\u00e9t\u00e9") == "\u00e9t\u00e9" and composed("\u2153") == "\u2153"  # NFKC elsewhere: no


def test_decomposed_text_gets_the_features_of_its_composed_form():
    import unicodedata

    from nerbatch.bundle import load_bundle

    words = Vocabulary.build(["ségolène", "royal"])
    encoder = FeatureEncoder(words, Vocabulary.build("Ségolène"), lowercase=True)
    nfc = ["Ségolène", "Royal"]
    nfd = [unicodedata.normalize("NFD", w) for w in nfc]
    assert nfd != nfc
    composed, decomposed = encoder.encode_batch([nfc], width=2), encoder.encode_batch([nfd], width=2)
    assert all((composed[name] == decomposed[name]).all() for name in composed)
    assert composed["words"][0, 0] != UNK_ID

    tagger = load_bundle(None).tagger()
    sentence = "Ségolène Royal visited Besançon and Orléans on Tuesday .".split()
    tagged = tagger.tag_strings([sentence, [unicodedata.normalize("NFD", w) for w in sentence]])
    assert tagged[0] == tagged[1]


def test_a_word_of_many_combining_marks_is_encoded_in_linear_time():
    import time

    # CPython puts a run of combining marks of alternating classes into NFC in quadratic time
    encoder = FeatureEncoder(Vocabulary.build(["a"]), Vocabulary.build("a"), lowercase=True)
    started = time.perf_counter()
    batch = encoder.encode_batch([["a" + "\u0301\u0316" * 50_000]], width=1)
    assert time.perf_counter() - started < 1.0
    assert batch["words"][0, 0] == UNK_ID


def test_unique_long_tokens_do_not_grow_the_feature_cache_without_bound():
    encoder = FeatureEncoder(Vocabulary.build(["a"]), Vocabulary.build("abc"), lowercase=True, cache_chars=100_000)
    for batch in range(50):  # 50 x 10 distinct 5,000-character tokens
        encoder.encode_batch([[f"{batch}-{i}-" + "a" * 5000 for i in range(10)]], width=10)
        assert encoder._cached_chars <= 100_000 + 10 * 5010
    assert len(encoder._rows) <= 30


def test_tagset_orders_o_first():
    tagset = TagSet.build([["O", "B-per", "I-per"], ["B-geo", "O"]])
    assert tagset.tags == ["O", "B-geo", "B-per", "I-per"]
    assert tagset.encode(["B-per", "O"]).tolist() == [2, 0]


@pytest.mark.parametrize("length", [0, 1, 49, 50, 51, 84, 104, 200, 1000])
def test_windows_cover_every_token_once(length):
    windows = plan_windows(length, 50, 16)
    owned = np.zeros(length, dtype=int)
    for w in windows:
        assert 0 <= w.start <= w.own_start <= w.own_end <= w.end <= length
        assert w.end - w.start <= 50
        owned[w.own_start : w.own_end] += 1
    assert (owned == 1).all()
    if length > 50:
        # every owned token has context on both sides of a cut
        for left, right in zip(windows, windows[1:]):
            assert left.end - left.own_end >= 8 and right.own_start - right.start >= 8


def test_a_large_max_len_pads_a_batch_only_to_what_its_longest_window_needs():
    from nerbatch.predictor import length_buckets

    assert length_buckets(50) == (16, 32, 50)  # the shipped setting's shapes
    widths = length_buckets(100_000)
    assert widths[-1] == 100_000 and len(widths) < 20
    assert next(w for w in widths if w >= 40) == 64  # not 100,000 columns for a 40-token sentence
