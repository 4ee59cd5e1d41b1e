"""The project's exception types, in one place (stdlib only: the light producer install imports it)."""

from __future__ import annotations


class EmbedclfError(Exception):
    """Base of embedclf's own errors."""


class ClassificationError(EmbedclfError):
    """A task whose every row is an error: what ``AsyncResult.get()`` raises for it (its first error)."""
