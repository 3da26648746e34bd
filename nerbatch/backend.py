"""Keras import with quiet, predictable defaults.

Keras (and TensorFlow behind it) is imported only when a model is needed, so
``import nerbatch`` and the CLI's help stay fast.
"""

from __future__ import annotations

import os


def keras():
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras as _keras

    return _keras
