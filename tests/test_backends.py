"""Keras backends: a bundle loads (``safe_mode=True``) and tags the same under JAX, and training
makes the same updates under TensorFlow and JAX.

Each backend runs in a subprocess where needed: Keras picks its backend once per process.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from nerbatch.bundle import load_bundle
from nerbatch.corpus import read_corpus

TAG_SENTENCES = """
import sys
import numpy as np
from nerbatch.backend import keras
from nerbatch.bundle import load_bundle
from nerbatch.corpus import read_corpus

bundle_dir, sample, out = sys.argv[1:]
assert keras().backend.backend() == "jax", keras().backend.backend()
tagger = load_bundle(bundle_dir or None).tagger()
probs = tagger.tag_probabilities(read_corpus(sample).words)
tagged = tagger.decode(probs)
np.savez(out, probs=np.concatenate(probs), tags=np.concatenate([t.tag_ids for t in tagged]),
         scores=np.concatenate([t.tag_probs for t in tagged]))
"""


def _run_under(backend: str, script: str, *args, out):
    """Runs ``script`` with ``args`` (and ``out`` last) in a fresh Python under ``backend``; loads what it saved."""
    done = subprocess.run([sys.executable, "-c", script, *map(str, args), str(out)],
                          env={**os.environ, "KERAS_BACKEND": backend}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return np.load(out)


@pytest.mark.parametrize("which", ["shipped", "trained here"])
def test_bundle_tags_the_same_under_jax(which, tiny_bundle, gmb_sample, tmp_path):
    bundle_dir = None if which == "shipped" else tiny_bundle
    tagger = load_bundle(bundle_dir).tagger()
    probs = tagger.tag_probabilities(read_corpus(gmb_sample).words)
    tagged = tagger.decode(probs)

    jax = _run_under("jax", TAG_SENTENCES, bundle_dir or "", gmb_sample, out=tmp_path / "jax.npz")

    np.testing.assert_allclose(jax["probs"], np.concatenate(probs), atol=1e-4)
    tags = np.concatenate([t.tag_ids for t in tagged])
    assert (tags > 0).any()  # the sample has entities; an all-O tagging would compare trivially
    np.testing.assert_array_equal(jax["tags"], tags)
    np.testing.assert_allclose(jax["scores"], np.concatenate([t.tag_probs for t in tagged]), atol=1e-4)


TRAIN_STEPS = """
import sys
import numpy as np
from nerbatch import train as training
from nerbatch.backend import keras
from nerbatch.corpus import read_corpus
from nerbatch.vocab import TagSet

sample, start_weights, out = sys.argv[1:]
# No dropout: with the same starting weights and batches, training is then deterministic.
settings = training.TrainSettings.for_arch("default", word_dropout=0.0, shape_overrides=(("dropout", 0.0),))
corpus = read_corpus(sample)
tagset = TagSet.build(corpus.tags)
encoder, shape, batches, _ = training._training_inputs(corpus, tagset, True, settings, None)
model = training._fresh_network(shape, None)
if keras().backend.backend() == "tensorflow":
    np.savez(start_weights, *model.get_weights())
else:
    saved = np.load(start_weights)
    model.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])
trainer, _ = training._compiled_trainer(model, tagset, settings)
losses = []
for _, (inputs, target, _) in zip(range(20), batches.epoch()):
    logs = trainer.train_on_batch({**inputs, "tag_ids": target}, np.zeros(len(target), np.float32), return_dict=True)
    losses.append(float(logs["loss"]))
np.savez(out, losses=np.array(losses), *model.get_weights())
"""


def test_training_makes_the_same_updates_under_tensorflow_and_jax(gmb_sample, tmp_path):
    """Guards the optimizer: TensorFlow's sliced embedding gradients must give textbook Adam, as JAX's do."""
    start = tmp_path / "start.npz"
    # TensorFlow first: it saves the starting weights that JAX then loads.
    tf_run, jax_run = (_run_under(backend, TRAIN_STEPS, gmb_sample, start, out=tmp_path / f"{backend}.npz")
                       for backend in ("tensorflow", "jax"))
    assert tf_run["losses"][-1] < tf_run["losses"][0]
    np.testing.assert_allclose(jax_run["losses"], tf_run["losses"], rtol=1e-3)
    weights = [name for name in tf_run.files if name.startswith("arr_")]
    assert len(weights) > 5
    # Adam's step does not depend on a gradient's size, so a weight whose gradient is at rounding
    # level can take a full step either way, and the backends round differently: a few weights may
    # drift apart (once 9 of the character embedding's 1,216, by up to 3.5e-4). Sliced Adam moves
    # over 80 % of every weight array more than 1e-4 away in these 20 steps.
    for name in weights:
        apart = np.abs(jax_run[name] - tf_run[name]) > 1e-4
        assert apart.mean() < 0.05, f"{name}: {apart.sum()} of {apart.size} weights differ by over 1e-4"


HEARTBEAT_WHILE_KERAS_LOADS = """
import os, threading, time
from nerbatch.backend import keras

done = threading.Event()

def beat():
    n = 0
    while not done.is_set() or n < 5:
        os.write(2, b"beat %d\\n" % n)
        n += 1
        time.sleep(0.002)
    os.write(1, b"%d\\n" % n)

thread = threading.Thread(target=beat)
thread.start()
keras()
done.set()
thread.join()
"""


def test_loading_keras_in_a_library_keeps_the_host_process_stderr():
    """The CLI hides TensorFlow's C++ start-up lines by closing stderr while it loads; a library must not."""
    done = subprocess.run([sys.executable, "-c", HEARTBEAT_WHILE_KERAS_LOADS], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    sent = int(done.stdout)
    assert sent > 5 and done.stderr.count("beat ") == sent, (sent, done.stderr.count("beat "))


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "jax, TensorFlow broken"])
def test_cli_prints_no_native_start_up_lines_under_either_backend(backend, tmp_path):
    """Keras imports TensorFlow while it loads a model under JAX too; its banner must stay hidden there,
    and a TensorFlow that fails to import (a reason to use JAX) must not stop the CLI."""
    env = {**os.environ, "KERAS_BACKEND": backend.split(",")[0]}
    if "broken" in backend:
        (tmp_path / "tensorflow").mkdir()
        (tmp_path / "tensorflow" / "__init__.py").write_text("raise ImportError('a broken TensorFlow install')\n")
        env["PYTHONPATH"] = str(tmp_path)
    nerbatch = os.path.join(os.path.dirname(sys.executable), "nerbatch")
    done = subprocess.run([nerbatch, "predict", "Angela Merkel met Emmanuel Macron in Berlin."],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert '"text": "Angela Merkel"' in done.stdout
    assert done.stderr == ""
