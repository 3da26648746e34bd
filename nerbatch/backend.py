"""Keras import with quiet, predictable defaults.

Keras (and TensorFlow behind it) is imported only when a model is needed, so
``import nerbatch`` and the CLI's help stay fast.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys


_silence_native_startup = False


def silence_native_startup() -> None:
    """Hide TensorFlow's C++ start-up lines, which ignore TF_CPP_MIN_LOG_LEVEL, when Keras is imported.

    For the CLI only: it closes the process's stderr while TensorFlow loads, which would also hide
    what a library user's own threads write there meanwhile.
    """
    global _silence_native_startup
    _silence_native_startup = True


_saved_stderr: int | None = None  # standard error's descriptor while descriptor 2 is silenced


def stderr_fd() -> int:
    """Where a message for the user goes now: standard error, also while start-up output is silenced."""
    return 2 if _saved_stderr is None else _saved_stderr


@contextlib.contextmanager
def _native_stderr_silenced():
    global _saved_stderr
    if not _silence_native_startup:
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            if sys.stderr is not None:
                sys.stderr.flush()
            os.dup2(devnull.fileno(), 2)
            _saved_stderr = saved
            yield
    finally:
        _saved_stderr = None
        os.dup2(saved, 2)
        os.close(saved)


_forked = False  # this process is a fork of one where nerbatch had loaded Keras
_fork_watched = False


def _note_fork() -> None:
    global _forked
    _forked = True


def check_not_forked() -> None:
    """``BackendError`` in a process forked after Keras was loaded: TensorFlow's threads do not
    survive a fork, so the first prediction or model load there would hang for good."""
    if _forked:
        from nerbatch.errors import BackendError

        raise BackendError("Keras was loaded before this process was forked (multiprocessing's default on "
                           "Linux), and TensorFlow hangs in a forked copy: start workers with "
                           "multiprocessing.get_context('spawn') and load the model in each of them")


def keras():
    check_not_forked()
    if "keras" not in sys.modules:
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        # 3, not 2: on CPUs without AVX-512 TensorFlow logs "oneDNN supports DT_BOOL only on
        # platforms with AVX-512" at ERROR level on the first prediction, which reads like a failure;
        # a real TensorFlow error still reaches nerbatch as an exception.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        with _native_stderr_silenced():
            try:
                import keras as _keras
            except (ImportError, ValueError) as exc:  # the backend's package is missing, or no backend has that name
                from nerbatch.errors import BackendError

                raise BackendError(f"cannot use the Keras backend {os.environ['KERAS_BACKEND']!r} named by "
                                   f"KERAS_BACKEND ({type(exc).__name__}: {exc}); install its package or unset "
                                   "KERAS_BACKEND (TensorFlow is the default)") from None

            if _keras.backend.backend() == "tensorflow":
                import tensorflow  # its banner prints on first import

                # Each length bucket traces the predict function once; that is by design.
                tensorflow.get_logger().setLevel("ERROR")
            elif _silence_native_startup and importlib.util.find_spec("tensorflow") is not None:
                # Under another backend Keras still imports TensorFlow, if installed, when it
                # loads a model; here, its banner is silenced too. Keras does without a TensorFlow
                # that fails to import (one reason to use another backend), and so does this.
                with contextlib.suppress(Exception):
                    import tensorflow  # noqa: F401
    import keras as _keras

    global _fork_watched
    if not _fork_watched:
        os.register_at_fork(after_in_child=_note_fork)
        _fork_watched = True
    return _keras
