"""nerbatch: named-entity recognition for document corpora."""

__version__ = "0.1.0"
