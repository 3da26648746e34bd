"""Training: corpus -> model bundle.

Trains on the protocol's training part only (validation carved from it), stops
early on validation entity F1 with the best weights restored, then scores the
test part and writes the bundle.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm import tqdm

from nerbatch.backend import keras
from nerbatch.bundle import check_bundle_target, lock_bundle_target, recover_interrupted_save, save_bundle
from nerbatch.corpus import Corpus, CorpusError, file_name, file_sha256, protocol_split, read_corpus, validation_split
from nerbatch.crf import crf_layer, transition_matrix
from nerbatch.errors import NerbatchError
from nerbatch.evaluate import PROTOCOL, library_versions, score_corpus
from nerbatch.model import build_model, default_shape
from nerbatch.predictor import Tagger, length_buckets
from nerbatch.records import ENTITY_LABELS, MODEL_ID_PART
from nerbatch.truecase import Truecaser
from nerbatch.vectors import WordVectors, embedding_matrix, read_word_vectors
from nerbatch.vocab import UNK_ID, FeatureEncoder, TagSet, Vocabulary, composed, normalize_word
from nerbatch.windows import plan_windows


@dataclass(frozen=True)
class TrainSettings:
    """Every training choice. The field defaults are the plain baseline; the tuned recipe that
    ``nerbatch train --arch A`` uses is ``TrainSettings.for_arch(A, ...)``."""

    arch: str = "default"
    epochs: int = 15
    batch_size: int = 32
    max_len: int = 50
    seed: int = 1
    min_word_freq: int = 1
    word_dropout: float = 0.0
    learning_rate: float = 1e-3
    patience: int = 3  # epochs without a better validation F1 before stopping
    plateau_lr_factor: float = 1.0  # learning rate multiplied by this after each epoch without improvement
    ensemble: int = 1  # members trained with seeds seed, seed+1, ...; their probabilities averaged
    rare_copies: int = 1  # times each training sentence with an art/eve/nat entity is seen per epoch
    objective: str = "softmax"  # "crf": whole-sequence likelihood with learned transitions; "softmax": per token
    validation_fraction: float = 0.1
    refit: bool = False  # after choosing epochs on validation, retrain on the whole training part
    vector_words: int = 20_000  # with pretrained vectors: their most frequent words added to the vocabulary
    max_train_sentences: int | None = None  # for quick runs; None = the whole training part
    name: str | None = None
    lowercase: bool | None = None  # None: the architecture's choice (seed keeps case)
    shape_overrides: tuple[tuple[str, object], ...] = ()  # single ModelShape fields, for ablations

    def validate(self) -> None:
        """Raise :class:`TrainConfigError` (one line) for settings that cannot train a model."""
        from nerbatch.model import ARCHITECTURES

        if self.arch not in ARCHITECTURES:
            raise TrainConfigError(f"arch must be one of {', '.join(ARCHITECTURES)}, got {self.arch!r}")
        if self.objective not in OBJECTIVES:
            raise TrainConfigError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        least = {"epochs": 1, "batch_size": 1, "max_len": 2, "seed": 0, "min_word_freq": 1, "patience": 1,
                 "ensemble": 1, "rare_copies": 1, "vector_words": 0, "max_train_sentences": 10}
        for name, low in least.items():
            value = getattr(self, name)
            if value is None and name == "max_train_sentences":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise TrainConfigError(f"{name.replace('_', '-')} must be an integer of at least {low}, got {value!r}")
        seed_limit = 2**32 - (self.ensemble - 1)  # member i of an ensemble trains with seed + i
        if self.seed >= seed_limit:
            raise TrainConfigError(f"seed must be below {seed_limit} with ensemble {self.ensemble}, got {self.seed}")
        for name, low, high in (("word_dropout", 0.0, 0.99), ("validation_fraction", 0.01, 0.5),
                                ("plateau_lr_factor", 0.01, 1.0)):
            if not low <= getattr(self, name) <= high:
                raise TrainConfigError(f"{name.replace('_', '-')} must be from {low} to {high}, got {getattr(self, name)!r}")
        if self.name is not None and (not MODEL_ID_PART.fullmatch(self.name)
                                      or any("\ud800" <= c <= "\udfff" for c in self.name)):
            raise TrainConfigError(f"name must be non-empty UTF-8 text, without '@' or white space (records "
                                   f"carry name@version), got {self.name!r}")
        if not self.learning_rate > 0:
            raise TrainConfigError(f"learning-rate must be positive, got {self.learning_rate!r}")

    @classmethod
    def for_arch(cls, arch: str, **overrides) -> "TrainSettings":
        """Tuned defaults per architecture; explicit overrides win."""
        base = {"seed": {}, "default": {"min_word_freq": 2, "word_dropout": 0.05, "rare_copies": 4,
                                          "objective": "crf", "plateau_lr_factor": 0.5, "refit": True}}[arch]
        return cls(arch=arch, **{**base, **{k: v for k, v in overrides.items() if v is not None}})


class TrainConfigError(NerbatchError, ValueError):
    """A training setting that cannot work (one line, before the corpus is read)."""


class TrainingDivergedError(NerbatchError):
    """The training loss stopped being a finite number: the weights are lost."""


RARE_TYPES = ("art", "eve", "nat")
OBJECTIVES = ("crf", "softmax")


def _training_windows(
    corpus: Corpus, tagset: TagSet, max_len: int, rare_copies: int = 1
) -> tuple[list[list[str]], list[np.ndarray]]:
    """Every training sentence, long ones as overlapping windows (never truncated).

    Windows holding a rare entity type (art, eve, nat: well under 1% of the
    entities) appear ``rare_copies`` times, so the network sees them often enough.
    """
    rare_begins = {tag for tag in tagset.tags if tag[2:] in RARE_TYPES and tag.startswith("B-")}
    words, labels = [], []
    for sentence, tags in zip(corpus.words, corpus.tags):
        encoded = tagset.encode(tags)
        copies = rare_copies if rare_begins.intersection(tags) else 1
        for window in plan_windows(len(sentence), max_len):
            for _ in range(copies):
                words.append(sentence[window.start : window.end])
                labels.append(encoded[window.start : window.end])
    return words, labels


def _batches_by_length(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffled batches of similar length: shuffle, sort within pools, shuffle batches."""
    order = rng.permutation(len(lengths))
    pool = batch_size * 50
    batches = []
    for first in range(0, len(order), pool):
        chunk = order[first : first + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


class WindowBatches:
    """Shuffled, length-bucketed training batches, rebuilt every epoch.

    Batches are padded only to their length bucket, so an epoch spends little
    compute on padding; ``train_on_batch`` sees a few fixed shapes.
    """

    def __init__(self, words, labels, encoder: FeatureEncoder, settings: TrainSettings) -> None:
        self.words, self.labels, self.encoder, self.settings = words, labels, encoder, settings
        self.lengths = np.fromiter((len(w) for w in words), np.int64, len(words))
        self.buckets = length_buckets(settings.max_len)
        self.rng = np.random.default_rng(settings.seed)

    def __len__(self) -> int:
        return math.ceil(len(self.words) / self.settings.batch_size)

    def epoch(self):
        for rows in _batches_by_length(self.lengths, self.settings.batch_size, self.rng):
            yield self._batch(rows)

    def _batch(self, rows: np.ndarray):
        width = next(b for b in self.buckets if b >= self.lengths[rows].max())
        inputs = self.encoder.encode_batch([self.words[r] for r in rows], width)
        mask = inputs["words"] > 0
        if self.settings.word_dropout > 0:
            # Teaches the unknown-word id: known words randomly hidden.
            drop = mask & (self.rng.random(mask.shape) < self.settings.word_dropout)
            inputs["words"] = np.where(drop, UNK_ID, inputs["words"]).astype(np.int32)
        target = np.zeros((len(rows), width), dtype=np.int32)
        for i, r in enumerate(rows):
            target[i, : self.lengths[r]] = self.labels[r]
        return inputs, target, mask.astype(np.float32)


def _adam(learning_rate: float):
    """Adam that makes the same update under every Keras backend.

    Keras's TensorFlow backend hands Adam an embedding's gradient as one slice
    per occurrence and squares the slices before summing them, so a row seen
    n times in a batch gets a second moment up to n times too small and a step
    up to sqrt(n) times too large. Summing the slices first gives textbook Adam,
    which is what the JAX and PyTorch backends compute (their gradients are dense).
    """
    k = keras()
    if k.backend.backend() != "tensorflow":
        return k.optimizers.Adam(learning_rate=learning_rate)
    import tensorflow as tf

    class SummedSlicesAdam(k.optimizers.Adam):
        def apply(self, grads, trainable_variables=None):
            grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
            return super().apply(grads, trainable_variables)

    return SummedSlicesAdam(learning_rate=learning_rate)


def _compiled_trainer(model, tagset: TagSet, settings: TrainSettings):
    """What ``train_on_batch`` runs, and the CRF layer when the objective is the CRF's."""
    k = keras()
    optimizer = _adam(settings.learning_rate)
    if settings.objective == "softmax":
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
        return model, None
    crf = crf_layer(tagset.tags)
    tag_ids = k.layers.Input(shape=(None,), dtype="int32", name="tag_ids")
    mask = k.ops.not_equal(model.input["words"], 0)
    nll = crf(model.get_layer("tags").output, tag_ids, mask)
    trainer = k.Model(inputs={**model.input, "tag_ids": tag_ids}, outputs=nll)
    trainer.compile(optimizer=optimizer, loss=_model_output_is_the_loss)
    return trainer, crf


def _stop_if_requested(stop_requested: Callable[[], bool], progress=None) -> None:
    # A signal handler's KeyboardInterrupt is lost when it lands in a garbage-collector callback
    # (JAX registers one), and under JAX the handler does not raise at all, so the training also asks
    # between batches, around each validation, after reading its inputs and before it saves.
    if stop_requested():
        if progress is not None:
            progress.close()
        raise KeyboardInterrupt


def _model_output_is_the_loss(y_true, y_pred):
    return y_pred


class _ProgressStream:
    """Training's progress text (the bars on stderr, the epoch lines on stdout): a reader that has gone
    (`| head`, a log collector) or a full disk ends the text, never hours of training."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except OSError:
            # what is left to write, and the interpreter's last flush, go nowhere instead of failing
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), self._stream.fileno())

    def flush(self) -> None:
        self.write("")

    @property
    def encoding(self) -> str | None:  # tqdm draws its bars in Unicode only where the stream's encoding has it
        return getattr(self._stream, "encoding", None)

    def fileno(self) -> int:  # and sizes them to the terminal through it
        return self._stream.fileno()

    def isatty(self) -> bool:
        try:
            return self._stream.isatty()
        except (OSError, ValueError):
            return False


def _train_epoch(trainer, crf, batches, label: str, verbose: int, stop_requested: Callable[[], bool]) -> float:
    """One pass over the batches; the mean training loss."""
    losses = []
    # disable=None: no bars where stderr is no terminal (a log file would get each update, joined by \r)
    progress = tqdm(batches.epoch(), total=len(batches), desc=label, unit="batch", disable=None if verbose else True,
                    leave=True, mininterval=1.0, file=_ProgressStream(sys.stderr), dynamic_ncols=True)
    for inputs, target, weight in progress:
        _stop_if_requested(stop_requested, progress)
        if crf is None:
            logs = trainer.train_on_batch(inputs, target, sample_weight=weight, return_dict=True)
        else:
            logs = trainer.train_on_batch({**inputs, "tag_ids": target}, np.zeros(len(target), np.float32),
                                          return_dict=True)
        losses.append(float(logs["loss"]))
        if not math.isfinite(losses[-1]):
            progress.close()
            raise TrainingDivergedError(f"{label}: the training loss became {losses[-1]} at batch {len(losses)}; "
                                        "no bundle was written")
        if len(losses) % 50 == 0:
            progress.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    return float(np.mean(losses))


def _fresh_network(shape, initial_embedding: np.ndarray | None):
    model = build_model(shape)
    if initial_embedding is not None:
        model.get_layer("word_embedding").set_weights([initial_embedding])
    return model


def _fit_member(shape, initial_embedding, batches, encoder, tagset, val, settings, decoder, verbose, label,
                stop_requested: Callable[[], bool]) -> dict:
    """Train one network with early stopping on validation entity F1.

    Also returns the learning rate of every epoch up to the best, so a refit can replay them.
    """
    model = _fresh_network(shape, initial_embedding)
    trainer, crf = _compiled_trainer(model, tagset, settings)
    tagger = Tagger(model, encoder, tagset.tags, max_len=settings.max_len, decoder=decoder)
    history: dict[str, list[float]] = {"loss": [], "val_entity_f1": []}
    epoch_seconds: list[float] = []
    learning_rates: list[float] = []
    best = {"f1": -1.0, "epoch": 0, "weights": model.get_weights(), "transitions": None}
    waited = 0
    for epoch in range(1, settings.epochs + 1):
        epoch_started = time.perf_counter()
        learning_rates.append(float(trainer.optimizer.learning_rate))
        history["loss"].append(_train_epoch(trainer, crf, batches, f"{label}epoch {epoch}/{settings.epochs}", verbose,
                                            stop_requested))
        epoch_seconds.append(time.perf_counter() - epoch_started)
        if crf is not None:
            tagger.transition_scores = transition_matrix(crf)
        _stop_if_requested(stop_requested)
        f1 = score_corpus(tagger, val)["micro"]["f1"]
        _stop_if_requested(stop_requested)
        history["val_entity_f1"].append(f1)
        if verbose:
            _ProgressStream(sys.stdout).write(f"{label}epoch {epoch}: loss {history['loss'][-1]:.4f}, validation "
                                              f"entity F1 {f1:.4f} ({epoch_seconds[-1]:.0f}s)\n")
        if f1 > best["f1"] or best["f1"] <= 0:  # while it finds nothing, the latest epoch is the most trained
            best = {"f1": f1, "epoch": epoch, "weights": model.get_weights(), "transitions": tagger.transition_scores}
            waited = 0
        elif best["f1"] > 0:  # before it finds any entity a network is still learning, not on a plateau
            waited += 1
            if waited >= settings.patience:
                break
            if settings.plateau_lr_factor != 1.0:
                optimizer = trainer.optimizer
                optimizer.learning_rate.assign(float(optimizer.learning_rate) * settings.plateau_lr_factor)
    return {"weights": best["weights"], "transitions": best["transitions"], "history": history,
            "epoch_seconds": epoch_seconds, "best_f1": best["f1"], "best_epoch": best["epoch"],
            "learning_rates": learning_rates[: best["epoch"]]}


def _refit_member(shape, initial_embedding, batches, tagset, settings, learning_rates: list[float], verbose,
                  label, stop_requested: Callable[[], bool]) -> dict:
    """Train a fresh network on the whole training part for the epochs validation chose, at their learning rates."""
    model = _fresh_network(shape, initial_embedding)
    trainer, crf = _compiled_trainer(model, tagset, settings)
    epoch_seconds, losses = [], []
    for epoch, learning_rate in enumerate(learning_rates, start=1):
        epoch_started = time.perf_counter()
        trainer.optimizer.learning_rate.assign(learning_rate)
        losses.append(_train_epoch(trainer, crf, batches, f"{label}refit epoch {epoch}/{len(learning_rates)}", verbose,
                                   stop_requested))
        epoch_seconds.append(time.perf_counter() - epoch_started)
    return {"weights": model.get_weights(), "transitions": transition_matrix(crf) if crf is not None else None,
            "epoch_seconds": epoch_seconds, "loss": losses}


def _inference_model(shape, member_weights: list):
    """Fresh uncompiled network holding the trained weights (all members, averaged)."""
    if len(member_weights) == 1:
        model = build_model(shape)
        model.set_weights(member_weights[0])
        return model
    single = build_model(shape)
    model = build_model(shape, members=len(member_weights))
    for number, weights in enumerate(member_weights, start=1):
        single.set_weights(weights)
        for layer in single.layers:
            if layer.weights:
                model.get_layer(f"m{number}_{layer.name}").set_weights(layer.get_weights())
    return model


TRANSITION_WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)


def _fit_transition_prior(model, encoder, tagset: TagSet, fit: Corpus, val: Corpus, max_len: int) -> dict:
    """Tag-bigram prior for Viterbi decoding, its weight chosen on validation entity F1."""
    from nerbatch.decode import tag_bigram_log_probs
    from nerbatch.metrics import entity_scores

    log_probs = tag_bigram_log_probs([tagset.encode(t) for t in fit.tags], len(tagset))
    tagger = Tagger(model, encoder, tagset.tags, max_len=max_len, decoder="viterbi")
    probabilities = tagger.tag_probabilities(val.words)
    by_weight = {}
    for weight in TRANSITION_WEIGHTS:
        tagger.transition_scores = weight * log_probs
        decoded = [[tagset.tags[i] for i in t.tag_ids] for t in tagger.decode(probabilities)]
        by_weight[weight] = entity_scores(val.tags, decoded)["micro"]["f1"]
    best = max(TRANSITION_WEIGHTS, key=lambda w: (by_weight[w], -w))
    return {"kind": "bigram-prior", "scores": (best * log_probs).round(6).tolist(), "weight": best,
            "validation_f1_by_weight": {str(w): round(f, 6) for w, f in by_weight.items()}}


def _training_inputs(corpus: Corpus, tagset: TagSet, lowercase: bool, settings: TrainSettings,
                     vectors: WordVectors | None):
    """Vocabularies, feature encoder, network shape, batches and initial word embedding (or None).

    Built from ``corpus`` alone, plus the pretrained vectors when given: then
    the vocabulary also holds every training word the vectors know (however
    rare) and the vectors' ``vector_words`` most frequent words, so words never
    seen in training still get a vector from the same space.
    """
    keys = [normalize_word(w, lowercase) for s in corpus.words for w in s]
    words = Vocabulary.build(keys, settings.min_word_freq)
    overrides = dict(settings.shape_overrides)
    if vectors is not None:
        known = set(words.items)
        in_corpus = set(keys)
        extra = [k for row, k in enumerate(vectors.keys)
                 if k not in known and (row < settings.vector_words or k in in_corpus)]
        words = Vocabulary(words.items + extra)
        overrides["word_dim"] = vectors.dim
    char_vocab = Vocabulary.build((c for s in corpus.words for w in s for c in composed(w)), 2)
    shape = default_shape(settings.arch, len(words), len(tagset), len(char_vocab), **overrides)
    encoder = FeatureEncoder(words, char_vocab if shape.use_chars else None, lowercase=lowercase,
                             max_word_len=shape.max_word_len, casing=shape.use_casing)
    batches = WindowBatches(*_training_windows(corpus, tagset, settings.max_len, settings.rare_copies), encoder, settings)
    initial_embedding = None if vectors is None else embedding_matrix(words.items, vectors, settings.seed)[0]
    return encoder, shape, batches, initial_embedding


def _crf_transitions(members: list[dict]) -> dict:
    return {"kind": "crf", "scores": np.mean([m["transitions"] for m in members], axis=0).round(6).tolist()}


def _tagger(model, encoder, tagset: TagSet, settings: TrainSettings, decoder: str, transitions: dict | None,
            truecaser: Truecaser) -> Tagger:
    return Tagger(model, encoder, tagset.tags, max_len=settings.max_len, decoder=decoder,
                  transition_scores=transitions and np.asarray(transitions["scores"]), truecaser=truecaser)


def _plot_history(history: dict, path: Path) -> None:
    from matplotlib.figure import Figure  # not pyplot: the host process's plotting backend stays its own

    fig = Figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)
    for number, member in enumerate(history["members"], start=1):
        epochs = range(1, len(member["loss"]) + 1)
        suffix = f" (member {number})" if len(history["members"]) > 1 else ""
        left.plot(epochs, member["loss"], label=f"train loss{suffix}")
        right.plot(epochs, member["val_entity_f1"], label=f"validation entity F1{suffix}")
    for axis in (left, right):
        axis.set_xlabel("epoch")
        axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def protocol_parts(corpus: Corpus, settings: TrainSettings) -> tuple[Corpus, Corpus, Corpus]:
    """The fit, validation and test parts; fit and validation together are the protocol's training part."""
    train_idx, test_idx = protocol_split(len(corpus), corpus.source)
    # The validation split is fixed; the seed drives weights and shuffling.
    fit_idx, val_idx = validation_split(train_idx, settings.validation_fraction, seed=1)
    if settings.max_train_sentences:
        fit_idx = fit_idx[: settings.max_train_sentences]
        val_idx = val_idx[: max(1, settings.max_train_sentences // 5)]
    return corpus.subset(fit_idx), corpus.subset(val_idx), corpus.subset(test_idx)


def train(data_path: str | Path, out_dir: str | Path, settings: TrainSettings, verbose: int = 1,
          vectors_path: str | Path | None = None, stop_requested: Callable[[], bool] = lambda: False) -> dict:
    """Train a bundle into ``out_dir``; returns its metrics.

    ``vectors_path``: pretrained word vectors (``nerbatch.vectors``) that
    initialise the word embedding; they are read only here, the bundle keeps
    the rows its vocabulary needs. ``stop_requested``: asked between batches
    and before the save; once it answers true the training raises
    KeyboardInterrupt and ``out_dir`` stays as it was.
    """
    settings.validate()
    check_bundle_target(out_dir)  # before hours of training, not after
    with lock_bundle_target(out_dir):
        for line in recover_interrupted_save(out_dir):  # a training killed while it wrote this bundle
            _ProgressStream(sys.stderr).write(f"nerbatch: {out_dir}: {line}\n")
        check_bundle_target(out_dir)  # what recovery put back must be a bundle too
        with _global_random_state_kept():
            return _train(data_path, out_dir, settings, verbose, vectors_path, stop_requested)


@contextlib.contextmanager
def _global_random_state_kept():
    """Seeding the training reseeds Python's and numpy's global generators; the caller gets its own back."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def _train(data_path, out_dir, settings: TrainSettings, verbose: int, vectors_path,
           stop_requested: Callable[[], bool]) -> dict:
    k = keras()
    k.utils.set_random_seed(settings.seed)
    data_path = Path(data_path)
    corpus = read_corpus(data_path)
    foreign = {kind: sentence for kind, sentence in corpus.entity_types().items() if kind not in ENTITY_LABELS}
    if foreign:
        kind, sentence = next(iter(foreign.items()))
        raise CorpusError(
            f"{data_path}: entity type(s) {', '.join(foreign)} are not labels of the entity records "
            f"({', '.join(ENTITY_LABELS)}); {kind!r} first tags sentence {sentence!r}; rename them in the corpus"
        )
    fit, val, test = protocol_parts(corpus, settings)
    if all(tag == "O" for tags in fit.tags for tag in tags):
        raise CorpusError(f"{data_path}: the training part holds no entity tags (only O); there is nothing to learn")

    lowercase = settings.arch != "seed" if settings.lowercase is None else settings.lowercase
    _stop_if_requested(stop_requested)
    vectors = read_word_vectors(vectors_path, lowercase) if vectors_path is not None else None
    _stop_if_requested(stop_requested)
    tagset = TagSet.build(fit.tags + val.tags)  # a tag seen only in test could never be learnt
    truecaser = Truecaser.build(fit.words + val.words)
    encoder, shape, batches, initial_embedding = _training_inputs(fit, tagset, lowercase, settings, vectors)
    # The tutorial network keeps the tutorial's argmax unless it learns transitions to decode with.
    decoder = "argmax" if settings.arch == "seed" and settings.objective == "softmax" else "viterbi"

    def member_label(member: int) -> str:
        return f"member {member + 1}/{settings.ensemble} " if settings.ensemble > 1 else ""

    members, history, epoch_seconds, member_best = [], {}, [], []
    started = time.perf_counter()
    for member in range(settings.ensemble):
        k.utils.set_random_seed(settings.seed + member)
        fitted = _fit_member(shape, initial_embedding, batches, encoder, tagset, val, settings, decoder, verbose,
                             member_label(member), stop_requested)
        members.append(fitted)
        epoch_seconds += fitted["epoch_seconds"]
        member_best.append({"best_entity_f1": fitted["best_f1"], "best_epoch": fitted["best_epoch"]})
        history.setdefault("members", []).append(fitted["history"])

    # Fresh, uncompiled copies keep optimizer state out of the shipped file.
    selected = _inference_model(shape, [m["weights"] for m in members])
    transitions = None
    if settings.objective == "crf":
        # An ensemble's members each learned their own; decoding uses their mean.
        transitions = _crf_transitions(members)
    elif decoder == "viterbi":
        transitions = _fit_transition_prior(selected, encoder, tagset, fit, val, settings.max_len)
    val_scores = score_corpus(_tagger(selected, encoder, tagset, settings, decoder, transitions, truecaser), val)
    final = selected

    refit = None
    if settings.refit:
        # Validation has chosen the epochs; the shipped networks learn from all of the training part.
        whole = Corpus(fit.sentence_ids + val.sentence_ids, fit.words + val.words, fit.tags + val.tags, fit.source)
        encoder, shape, batches, initial_embedding = _training_inputs(whole, tagset, lowercase, settings, vectors)
        refitted = []
        for member, selection in enumerate(members):
            k.utils.set_random_seed(settings.seed + member)
            refitted.append(_refit_member(shape, initial_embedding, batches, tagset, settings,
                                          selection["learning_rates"], verbose, member_label(member),
                                          stop_requested))
        final = _inference_model(shape, [m["weights"] for m in refitted])
        if settings.objective == "crf":
            transitions = _crf_transitions(refitted)
        refit = {"sentences": len(whole), "epochs": [len(m["learning_rates"]) for m in members],
                 "learning_rates": [m["learning_rates"] for m in members], "loss": [m["loss"] for m in refitted],
                 "seconds_per_epoch": [round(t, 1) for m in refitted for t in m["epoch_seconds"]]}
    train_seconds = time.perf_counter() - started
    test_scores = score_corpus(_tagger(final, encoder, tagset, settings, decoder, transitions, truecaser), test)
    created = datetime.now(timezone.utc)
    metrics = {
        "protocol": PROTOCOL,
        "data": {"file": file_name(data_path), "sha256": file_sha256(data_path), "sentences_sha256": corpus.sentences_sha256()},
        "vectors": vectors and vectors.describe(),
        "split": {"fit": len(fit), "validation": len(val), "test": len(test)},
        "test": test_scores,
        "validation": {
            "entity_f1": val_scores["micro"]["f1"],
            "per_type_f1": {t: round(v["f1"], 4) for t, v in val_scores["per_type"].items()},
            "members": member_best,
            "scored": "the networks validation chose" + (", before the refit" if refit else ""),
            "transitions": transitions and transitions["kind"],
            **({"transition_weight": transitions["weight"], "entity_f1_by_transition_weight":
                transitions["validation_f1_by_weight"]} if transitions and "weight" in transitions else {}),
        },
        "training": {
            "epochs_run": len(epoch_seconds),  # choosing the epochs on validation; the refit's are under "refit"
            "seconds": round(train_seconds, 1),
            "seconds_per_epoch": [round(s, 1) for s in epoch_seconds],
            "refit": refit,
            "settings": asdict(settings),
        },
        "versions": library_versions(),
    }
    config = {
        "name": settings.name or f"gmb-{settings.arch}",
        "version": created.strftime("%Y%m%d.%H%M%S"),
        "created_at": created.isoformat(timespec="seconds"),
        "arch": settings.arch,
        "max_len": settings.max_len,
        "lowercase": lowercase,
        "max_word_len": shape.max_word_len,
        "features": list(shape.input_names),
        "decoder": decoder,
        "shape": shape.to_dict(),
    }
    _stop_if_requested(stop_requested)
    save_bundle(
        out_dir, model=final, encoder=encoder, tags=tagset.tags, config=config, metrics=metrics, history=history,
        transitions=transitions, truecaser=truecaser, extra_files={"training.png": lambda path: _plot_history(history, path)},
    )
    return metrics
