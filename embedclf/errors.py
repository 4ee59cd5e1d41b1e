"""The project's exception types, in one place (stdlib only: the light producer install imports it).

Every type derives from :class:`EmbedclfError` *and* from the stdlib type it was before this module
existed (``SpecError`` is still a ``ValueError``, ``HeadNotFound`` a ``LookupError``...), so callers
that catch the stdlib type keep working. The CLI turns an ``EmbedclfError`` into one ``Error:`` line;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Any


class EmbedclfError(Exception):
    """Base of embedclf's own errors."""


class ClassificationError(EmbedclfError):
    """A task whose every row is an error: what ``AsyncResult.get()`` raises for it (its first error)."""


# --- input ------------------------------------------------------------------------------------------

class DataError(EmbedclfError, ValueError):
    """A data file that cannot be used; the message names the file and the problem."""


class PayloadError(EmbedclfError, ValueError):
    """A task payload that cannot be classified; the message goes into the error row."""


class ConfigError(EmbedclfError, ValueError):
    """A setting (environment variable, URL, option) that cannot be used; the message names it."""


class InstallError(EmbedclfError, FileNotFoundError):
    """A part of the installation is missing (e.g. the migrations); the message says how to fix it."""


# --- embedders --------------------------------------------------------------------------------------

class SpecError(EmbedclfError, ValueError):
    """An embedder spec that cannot be parsed or loaded."""


class ModelNotFoundError(EmbedclfError, FileNotFoundError):
    """The model file a spec names is not on disk and cannot (or may not) be fetched."""


class EmbedderUnavailable(EmbedclfError, RuntimeError):
    """The embedder failed in a way that is not the texts' fault; retry the batch later."""


class NonFiniteEmbedding(EmbedclfError, ValueError):
    """The embedder returned a vector with a NaN or an infinity (a broken model, or an input it overflows on)."""


# --- store ------------------------------------------------------------------------------------------

class DatabaseUnavailable(EmbedclfError, RuntimeError):
    """Postgres did not answer at the configured URL."""


class HeadNotFound(EmbedclfError, LookupError):
    """No head (or no such version of it) under the given name."""


class HeadLoadError(EmbedclfError, ValueError):
    """A stored head that this version cannot load (unknown config keys, unsupported format)."""


class HeadStateError(EmbedclfError, RuntimeError):
    """A head operation that the head's current state does not allow (e.g. roll back past v1)."""


class DatasetNotFound(EmbedclfError, ValueError):
    """No stored dataset under the given name."""


class FeedbackError(EmbedclfError, ValueError):
    """Feedback that cannot be recorded (unknown task, ambiguous head, label not of the head)."""


# --- producers ------------------------------------------------------------------------------------

class EnqueueError(EmbedclfError, RuntimeError):
    """A task could not be enqueued."""


class BrokerUnavailable(EnqueueError):
    """The broker stayed unreachable longer than the retry bound."""

    def __init__(self, message: str, sent: list[str]) -> None:
        super().__init__(message)
        #: ids of the tasks enqueued before the broker went away (in order)
        self.sent = sent
        #: with classify_many: the handles (``TextHandle``) of the texts whose tasks were enqueued
        self.refs: list[Any] = []


class NotReplicated(EnqueueError):
    """A push that fewer replicas than asked acknowledged (retried, like an unreachable broker)."""


class PayloadTooLarge(EnqueueError, ValueError):
    """A message would be larger than the payload limit; nothing was sent."""


# --- tools ----------------------------------------------------------------------------------------

class ServicesError(EmbedclfError, RuntimeError):
    """A private server could not be started or stopped."""


class BenchError(EmbedclfError, ValueError):
    """A benchmark that cannot run or did not finish; the CLI prints it as one ``Error:`` line."""


class ApiError(EmbedclfError):
    """An HTTP answer other than success: ``status``, JSON ``{"error": code, "message": message, **extra}``."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.extra}
