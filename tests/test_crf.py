"""The CRF objective against brute force over every tag path of small sequences."""

import itertools

import numpy as np

from nerbatch.backend import keras
from nerbatch.crf import crf_layer, transition_matrix
from nerbatch.decode import allowed_transitions, constrained_viterbi

TAGS = ["O", "B-geo", "I-geo", "B-per", "I-per"]


def _valid(path) -> bool:
    allowed, _ = allowed_transitions(TAGS)
    return all(allowed[a, b] for a, b in zip(path, path[1:]))


def _path_score(logits, transitions, path) -> float:
    return float(sum(logits[t, y] for t, y in enumerate(path)) + sum(transitions[a, b] for a, b in zip(path, path[1:])))


def _crf_with_random_transitions(rng):
    layer = crf_layer(TAGS)
    layer.build(None)
    layer.transitions.assign(rng.normal(size=(len(TAGS), len(TAGS))).astype("float32"))
    return layer


def test_negative_log_likelihood_matches_enumeration_with_padding():
    rng = np.random.default_rng(3)
    layer = _crf_with_random_transitions(rng)
    transitions = transition_matrix(layer)
    lengths = [4, 2, 1]
    logits = rng.normal(size=(3, 4, len(TAGS))).astype("float32")
    gold = np.array([[1, 2, 0, 3], [3, 4, 0, 0], [0, 0, 0, 0]], dtype="int32")
    valid = np.arange(4)[None, :] < np.array(lengths)[:, None]
    nll = keras().ops.convert_to_numpy(layer(logits, gold, valid))
    for row, n in enumerate(lengths):
        paths = [p for p in itertools.product(range(len(TAGS)), repeat=n) if _valid(p)]
        log_z = np.logaddexp.reduce([_path_score(logits[row], transitions, p) for p in paths])
        expected = log_z - _path_score(logits[row], transitions, tuple(gold[row, :n]))
        np.testing.assert_allclose(nll[row], expected, rtol=1e-4, atol=1e-4)
    assert (nll > 0).all()


def test_viterbi_over_softmax_finds_the_crf_best_path():
    """Shipped bundles keep a softmax: per-position constants must not change the best path."""
    rng = np.random.default_rng(5)
    transitions = rng.normal(size=(len(TAGS), len(TAGS)))
    _, start_ok = allowed_transitions(TAGS)
    for _ in range(20):
        logits = rng.normal(scale=2.0, size=(5, len(TAGS)))
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        path = constrained_viterbi(probs[None].astype("float32"), np.array([5]), TAGS, transitions)[0]
        candidates = [p for p in itertools.product(range(len(TAGS)), repeat=5) if _valid(p) and start_ok[p[0]]]
        best = max(candidates, key=lambda p: _path_score(logits, transitions, p))
        assert tuple(path) == best


def test_training_learns_that_inside_follows_begin():
    k = keras()
    layer = crf_layer(TAGS)
    logits_in = k.layers.Input(shape=(None, len(TAGS)))
    tags_in = k.layers.Input(shape=(None,), dtype="int32")
    valid_in = k.layers.Input(shape=(None,), dtype="bool")
    model = k.Model([logits_in, tags_in, valid_in], layer(logits_in, tags_in, valid_in))
    model.compile(optimizer=k.optimizers.Adam(0.1), loss=lambda y_true, y_pred: y_pred)
    # Flat emissions: only the transitions can explain "B-per I-per O".
    gold = np.tile(np.array([[3, 4, 0]], dtype="int32"), (16, 1))
    flat = np.zeros((16, 3, len(TAGS)), dtype="float32")
    for _ in range(50):
        model.train_on_batch([flat, gold, np.ones((16, 3), bool)], np.zeros(16, "float32"))
    learned = transition_matrix(layer)
    assert learned[3, 4] > learned[3, 0] and learned[4, 0] > learned[4, 3]


def test_marginals_match_enumeration_and_score_the_viterbi_path():
    from nerbatch.decode import tag_marginals

    rng = np.random.default_rng(11)
    transitions = rng.normal(size=(len(TAGS), len(TAGS)))
    _, start_ok = allowed_transitions(TAGS)
    lengths = np.array([4, 1, 3])
    probs = rng.dirichlet(np.ones(len(TAGS)), size=(3, 4)).astype("float32")
    marginals = tag_marginals(probs, lengths, TAGS, transitions)
    for row, n in enumerate(lengths):
        paths = [p for p in itertools.product(range(len(TAGS)), repeat=n) if _valid(p) and start_ok[p[0]]]
        weights = np.array([np.exp(_path_score(np.log(probs[row]), transitions, p)) for p in paths])
        expected = np.zeros((n, len(TAGS)))
        for path, weight in zip(paths, weights / weights.sum()):
            expected[np.arange(n), list(path)] += weight
        np.testing.assert_allclose(marginals[row, :n], expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(marginals[row, :n].sum(axis=1), 1.0, rtol=1e-5)
    assert (marginals[:, 0, [2, 4]] < 1e-6).all()  # no sentence starts inside an entity
