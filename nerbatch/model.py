"""Network definitions, named by architecture.

``seed`` is the tutorial network (Embedding 50, SpatialDropout1D 0.1, BiLSTM
100 with recurrent dropout 0.1, per-token softmax) with padding masked.
``default`` adds character and casing features to a larger word embedding.
Both use only stock Keras layers and ops, so a bundle loads with ``safe_mode=True``
under any Keras backend. (``TimeDistributed`` is avoided: in Keras 3 it loops
over the time axis and mishandles an open time dimension.) The time axis is left open: callers pad a batch to
the length bucket it needs, never past ``max_len``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from nerbatch.backend import keras
from nerbatch.vocab import CASING_CLASSES

ARCHITECTURES = ("seed", "default")


@dataclass(frozen=True)
class ModelShape:
    arch: str
    n_words: int
    n_tags: int
    n_chars: int = 0
    max_word_len: int = 16
    word_dim: int = 50
    char_dim: int = 25
    char_filters: int = 50
    casing_dim: int = 8
    lstm_units: int = 100
    lstm_layers: int = 1
    dropout: float = 0.1
    use_chars: bool = False
    use_casing: bool = False

    @property
    def input_names(self) -> tuple[str, ...]:
        return ("words",) + (("chars",) if self.use_chars else ()) + (("casing",) if self.use_casing else ())

    def to_dict(self) -> dict:
        return asdict(self)


def default_shape(arch: str, n_words: int, n_tags: int, n_chars: int, **overrides) -> ModelShape:
    """The architecture's shape; ``overrides`` change single fields (used by ablations)."""
    if arch == "seed":
        return ModelShape("seed", n_words, n_tags, **overrides)
    if arch == "default":
        # Sized for speed as well as accuracy: a wider BiLSTM or a second layer bought no
        # validation F1 (docs/ablation.md), and the character CNN dominates the cost.
        settings = dict(n_chars=n_chars, word_dim=100, char_dim=16, char_filters=32, lstm_units=100,
                        dropout=0.5, use_chars=True, use_casing=True)
        return ModelShape("default", n_words, n_tags, **{**settings, **overrides})
    raise ValueError(f"unknown architecture {arch!r}; choose one of {ARCHITECTURES}")


def build_model(shape: ModelShape, members: int = 1):
    """The network; with ``members > 1``, that many copies whose tag probabilities are averaged.

    Every layer with weights has a fixed name (prefixed ``m<i>_`` in an
    ensemble) so weights can be copied by name.
    """
    k = keras()
    layers = k.layers
    inputs = {"words": layers.Input(shape=(None,), dtype="int32", name="words")}
    if shape.use_chars:
        inputs["chars"] = layers.Input(shape=(None, shape.max_word_len), dtype="int32", name="chars")
    if shape.use_casing:
        inputs["casing"] = layers.Input(shape=(None,), dtype="int32", name="casing")
    if members == 1:
        outputs = _tag_probabilities(shape, inputs, prefix="")
    else:
        outputs = layers.Average(name="tags")(
            [_tag_probabilities(shape, inputs, prefix=f"m{i}_") for i in range(1, members + 1)]
        )
    suffix = "" if members == 1 else f"_ensemble{members}"
    return k.Model(inputs=inputs, outputs=outputs, name=f"nerbatch_{shape.arch}{suffix}")


def _tag_probabilities(shape: ModelShape, inputs: dict, prefix: str):
    layers = keras().layers
    if shape.arch == "seed":
        x = layers.Embedding(shape.n_words, shape.word_dim, mask_zero=True, name=f"{prefix}word_embedding")(
            inputs["words"]
        )
        x = layers.SpatialDropout1D(shape.dropout)(x)
        x = layers.Bidirectional(
            layers.LSTM(shape.lstm_units, return_sequences=True, recurrent_dropout=0.1), name=f"{prefix}bilstm"
        )(x)
        return _per_token_softmax(shape, x, prefix)

    features = [
        layers.Embedding(shape.n_words, shape.word_dim, mask_zero=True, name=f"{prefix}word_embedding")(
            inputs["words"]
        )
    ]
    if shape.use_chars:
        c = layers.Embedding(shape.n_chars, shape.char_dim, name=f"{prefix}char_embedding")(inputs["chars"])
        # A (1, 3) Conv2D over [token, char] is a per-token character CNN, and a
        # (1, max_word_len) max-pool its per-token max over characters.
        c = layers.Conv2D(shape.char_filters, (1, 3), padding="same", activation="relu", name=f"{prefix}char_cnn")(c)
        c = layers.MaxPooling2D((1, shape.max_word_len), name=f"{prefix}char_pool")(c)
        features.append(layers.Reshape((-1, shape.char_filters), name=f"{prefix}char_features")(c))
    if shape.use_casing:
        features.append(
            layers.Embedding(len(CASING_CLASSES), shape.casing_dim, name=f"{prefix}casing_embedding")(inputs["casing"])
        )
    x = layers.Concatenate(name=f"{prefix}token_features")(features) if len(features) > 1 else features[0]
    x = layers.Dropout(shape.dropout)(x)
    # Concatenate ORs its inputs' masks, and the character and casing features have none, so
    # the word mask is lost there; without it the backward LSTM reads the padding, and a
    # sentence's tags would depend on how far its batch is padded. It is passed explicitly.
    padding_mask = keras().ops.not_equal(inputs["words"], 0)
    for depth in range(1, shape.lstm_layers + 1):
        suffix = "" if depth == 1 else f"_{depth}"
        x = layers.Bidirectional(layers.LSTM(shape.lstm_units, return_sequences=True), name=f"{prefix}bilstm{suffix}")(
            x, mask=padding_mask
        )
        x = layers.Dropout(shape.dropout)(x)
    return _per_token_softmax(shape, x, prefix)


def _per_token_softmax(shape: ModelShape, x, prefix: str):
    """Tag scores per token (the CRF objective trains these), then their softmax.

    Dense on a sequence acts per time step: the tutorial's TimeDistributed(Dense).
    """
    layers = keras().layers
    logits = layers.Dense(shape.n_tags, name=f"{prefix}tags")(x)
    return layers.Activation("softmax", name=f"{prefix}tag_probs")(logits)
