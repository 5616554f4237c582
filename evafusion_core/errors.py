"""Errors the library raises on bad input; each message names the file or input at fault."""

from __future__ import annotations


class EvaFusionError(Exception):
    """Base class for errors meant to be shown to a user as they are."""


class ImageLoadError(EvaFusionError, ValueError):
    """A file is missing, unreadable, corrupt or holds values that cannot be used."""


class PairError(EvaFusionError, ValueError):
    """An IR/VIS pair does not fit together (sizes, batches, unmatched names)."""


class ModelLoadError(EvaFusionError, ValueError):
    """A model name, folder, file or Hub id could not be resolved or loaded."""
