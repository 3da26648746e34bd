"""Linear-chain CRF training objective, written with ``keras.ops`` only.

The network's per-token scores are trained jointly with a learned tag
transition matrix by maximising the likelihood of the whole gold tag sequence
(not of each tag alone), so the network stops paying for tag pairs that can
never follow each other and learns which ones do.

Nothing of this is needed at prediction time. A CRF's best path is unchanged
when a constant is added to every tag's score at one position, so the shipped
network keeps its per-token softmax and ``constrained_viterbi`` over its log
probabilities plus the learned transitions (stored in ``transitions.json``)
finds exactly the CRF's best valid IOB2 path. The bundle therefore holds only
stock Keras layers, and the network costs the same to run as before.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from nerbatch.backend import keras
from nerbatch.decode import allowed_transitions

# Added to forbidden transitions during training; large enough that exp() of it is 0 in float32.
FORBIDDEN = -1e4


def crf_layer(tags: Sequence[str], name: str = "crf"):
    """A layer ``(logits, tag_ids, valid) -> per-sequence negative log-likelihood``.

    ``transitions[prev, next]`` is its one weight; IOB2-invalid transitions
    (``O -> I-X``, ``B-X -> I-Y``) are fixed at ``FORBIDDEN`` so that training
    and constrained decoding search the same set of paths. (A path may start with
    ``I-X`` here: a training window cut from a long sentence can start inside an entity.)
    """
    k = keras()
    ops = k.ops
    allowed, _ = allowed_transitions(tags)
    forbidden = np.where(allowed, 0.0, FORBIDDEN).astype("float32")
    n_tags = len(tags)

    class ChainCRF(k.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.supports_masking = True  # padding arrives as ``valid``; Keras's mask is not needed

        def compute_mask(self, *args, **kwargs):
            return None

        def build(self, input_shape):
            self.transitions = self.add_weight(
                shape=(n_tags, n_tags), initializer="zeros", trainable=True, name="transitions"
            )

        def compute_output_shape(self, logits_shape, tag_ids_shape, valid_shape):
            return (logits_shape[0],)

        def call(self, logits, tag_ids, valid):
            logits = ops.cast(logits, "float32")
            # Not named ``mask``: Keras gives that argument name a meaning of its own.
            mask = ops.cast(valid, "float32")
            transitions = self.transitions + ops.convert_to_tensor(forbidden)
            onehot = ops.one_hot(tag_ids, n_tags, dtype="float32")
            # Score of the gold path: its emissions plus its transitions, padding excluded.
            emitted = ops.sum(ops.sum(logits * onehot, axis=-1) * mask, axis=-1)
            moved = ops.sum(ops.matmul(onehot[:, :-1], transitions) * onehot[:, 1:], axis=-1)
            path_score = emitted + ops.sum(moved * mask[:, 1:], axis=-1)

            # Forward algorithm: log of the summed scores of every path. The mask rides
            # along as one more channel: one scanned tensor keeps TensorFlow's scan happy
            # with an open time axis.
            def step(alpha, step_input):
                emission, on = step_input[:, :n_tags], step_input[:, n_tags:]
                candidate = ops.logsumexp(alpha[:, :, None] + transitions[None, :, :], axis=1) + emission
                alpha = ops.where(on > 0, candidate, alpha)
                return alpha, None

            steps = ops.concatenate([logits[:, 1:], mask[:, 1:, None]], axis=-1)
            alpha, _ = ops.scan(step, logits[:, 0], ops.transpose(steps, (1, 0, 2)))
            return ops.logsumexp(alpha, axis=-1) - path_score

    return ChainCRF(name=name)


def transition_matrix(layer) -> np.ndarray:
    """The learned transitions as float64 numpy, ready for ``constrained_viterbi``."""
    return np.asarray(keras().ops.convert_to_numpy(layer.transitions), dtype=np.float64)
