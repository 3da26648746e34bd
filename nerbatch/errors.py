"""One exception tree for nerbatch.

Every error a user can cause derives from ``NerbatchError`` so the CLI can turn
it into a one-line message and exit code 2 instead of a traceback.
"""


class NerbatchError(Exception):
    """Base of every error nerbatch raises on purpose."""


class CorpusError(NerbatchError, ValueError):
    """The annotated training corpus is malformed (names the row)."""


class BackendError(NerbatchError):
    """The Keras backend named by ``KERAS_BACKEND`` cannot be imported."""


class BundleError(NerbatchError):
    """A model bundle is missing, tampered with, truncated or from the future."""


class InputError(NerbatchError):
    """An input path or document source cannot be read."""


class OutputError(NerbatchError):
    """An output path cannot be written."""


class ResumeRefusedError(OutputError):
    """``--resume`` found an interrupted run whose inputs, fields, format or model differ."""


class VectorsError(NerbatchError):
    """A pretrained word-vector file cannot be read (names the line)."""
