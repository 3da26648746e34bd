import numpy as np

from nerbatch.decode import Span, constrained_viterbi, iob2_spans
from nerbatch.metrics import entity_scores

TAGS = ["O", "B-geo", "I-geo", "B-per", "I-per"]


def test_spans_from_iob2_with_stray_inside():
    tags = ["B-per", "I-per", "O", "I-geo", "I-geo", "B-geo", "I-per", "B-geo", "B-geo"]
    assert iob2_spans(tags) == [
        Span("per", 0, 2), Span("geo", 3, 5), Span("geo", 5, 6), Span("per", 6, 7), Span("geo", 7, 8), Span("geo", 8, 9),
    ]
    assert iob2_spans([]) == []


def test_viterbi_output_is_valid_iob2():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(len(TAGS)), size=(64, 30)).astype(np.float32)
    lengths = rng.integers(1, 31, size=64)
    paths = constrained_viterbi(probs, lengths, TAGS)
    for path, n in zip(paths, lengths):
        seq = [TAGS[i] for i in path[:n]]
        for prev, cur in zip(["O", *seq], seq):
            if cur.startswith("I-"):
                assert prev in ("B-" + cur[2:], cur), seq
        assert (path[n:] == 0).all()


def test_viterbi_prefers_valid_sequence_over_argmax():
    # argmax would give O I-per; the best valid path is B-per I-per or O O
    probs = np.array([[[0.5, 0, 0, 0.45, 0.05], [0.05, 0, 0, 0.05, 0.9]]], dtype=np.float32)
    path = constrained_viterbi(probs, np.array([2]), TAGS)
    assert [TAGS[i] for i in path[0]] == ["B-per", "I-per"]


def test_entity_scores_exact_match():
    gold = [["B-per", "I-per", "O", "B-geo"], ["B-geo", "O"]]
    pred = [["B-per", "O", "O", "B-geo"], ["B-geo", "B-per"]]
    scores = entity_scores(gold, pred)
    assert scores["micro"]["support"] == 3 and scores["micro"]["predicted"] == 4
    assert abs(scores["micro"]["precision"] - 2 / 4) < 1e-9
    assert abs(scores["micro"]["recall"] - 2 / 3) < 1e-9
    assert scores["per_type"]["geo"]["f1"] == 1.0
    assert scores["per_type"]["per"]["f1"] == 0.0


def test_agrees_with_seqeval_on_real_sequences(gmb_sample):
    from seqeval.metrics import f1_score

    from nerbatch.corpus import read_corpus

    corpus = read_corpus(gmb_sample)
    rng = np.random.default_rng(1)
    all_tags = sorted({t for s in corpus.tags for t in s})
    noisy = [[t if rng.random() > 0.15 else all_tags[rng.integers(len(all_tags))] for t in s] for s in corpus.tags]
    ours = entity_scores(corpus.tags, noisy)["micro"]["f1"]
    assert abs(ours - f1_score(corpus.tags, noisy)) < 1e-9
    assert ours < 0.95


def test_transition_prior_shifts_the_path_and_is_learned_from_bigrams():
    from nerbatch.decode import tag_bigram_log_probs

    log_probs = tag_bigram_log_probs([np.array([0, 3, 4, 0]), np.array([3, 4, 4])], len(TAGS))
    assert log_probs.shape == (5, 5)
    np.testing.assert_allclose(np.exp(log_probs).sum(axis=1), 1.0)
    assert log_probs[3, 4] > log_probs[3, 0]  # B-per is followed by I-per in the data
    # B-per then a token torn between O and I-per: the prior tips it to I-per
    probs = np.array([[[0.05, 0, 0, 0.95, 0], [0.5, 0, 0, 0, 0.5 - 1e-3]]], dtype=np.float32)
    plain = constrained_viterbi(probs, np.array([2]), TAGS)
    primed = constrained_viterbi(probs, np.array([2]), TAGS, 1.0 * log_probs)
    assert [TAGS[i] for i in plain[0]] == ["B-per", "O"]
    assert [TAGS[i] for i in primed[0]] == ["B-per", "I-per"]


def test_a_very_long_sentence_is_decoded_apart_from_short_ones():
    from nerbatch.predictor import DECODE_CELLS, Tagger

    rng = np.random.default_rng(5)
    lengths = list(rng.integers(3, 30, size=1500)) + [6000]
    probabilities = [rng.dirichlet(np.ones(len(TAGS)), size=n).astype(np.float32) for n in lengths]
    chunks = list(Tagger._padded_chunks(probabilities))
    assert sorted(i for chunk, _, _ in chunks for i in chunk) == list(range(len(lengths)))
    # without the cell bound, 1024 sentences would be padded to 6,000 positions each
    assert all(padded.shape[0] == 1 or padded.shape[0] * padded.shape[1] <= DECODE_CELLS for _, _, padded in chunks)
    tagger = Tagger(None, None, TAGS, max_len=50, decoder="viterbi")
    together = tagger.decode(probabilities)
    for index in (0, 700, len(lengths) - 1):
        alone = tagger.decode([probabilities[index]])[0]
        np.testing.assert_array_equal(together[index].tag_ids, alone.tag_ids)
        np.testing.assert_allclose(together[index].tag_probs, alone.tag_probs, rtol=1e-5, atol=1e-6)
