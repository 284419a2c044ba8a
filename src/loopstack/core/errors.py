"""The one exception hierarchy of loopstack.

Every error a user can cause or meet derives from `LoopstackError`, so
``except loopstack.LoopstackError`` catches all of them, and each maps to one
HTTP status and one CLI exit line::

    LoopstackError                    500
     +-- ConfigError                  400  loopstack.yaml or an argument is wrong
     +-- NotFoundError                404  a run, model, alias, ... does not exist
     +-- ValidationError              400  input data or a name does not fit
     |    +-- FilterError             400  a search filter does not parse
     |    +-- SignatureError          400  model input does not match its signature
     +-- ConflictError                409  the change clashes with stored state
     +-- IntegrityError               500  stored bytes do not match their hash
     +-- BackendUnavailableError      503  a database or service cannot be reached

A message says what was wrong, with the offending value, and what to do.
"""

from __future__ import annotations


class LoopstackError(Exception):
    """Base class of every loopstack error."""

    http_status = 500


class ConfigError(LoopstackError):
    """The project configuration or an argument is invalid."""

    http_status = 400


class NotFoundError(LoopstackError):
    """The requested object does not exist."""

    http_status = 404


class ValidationError(LoopstackError):
    """Input data, a name or a value does not satisfy its contract."""

    http_status = 400


class FilterError(ValidationError):
    """A search filter or order-by clause cannot be parsed."""


class SignatureError(ValidationError):
    """Model input does not match the model's recorded signature."""


class ConflictError(LoopstackError):
    """The requested change clashes with what is already stored."""

    http_status = 409


class IntegrityError(LoopstackError):
    """Stored bytes no longer match the sha256 they were stored under."""

    http_status = 500


class BackendUnavailableError(LoopstackError):
    """A database, store or service cannot be reached."""

    http_status = 503


def http_status(error: BaseException) -> int:
    """The HTTP status for an error: its class's status, or 500."""
    return getattr(error, "http_status", 500)


__all__ = [
    "BackendUnavailableError",
    "ConfigError",
    "ConflictError",
    "FilterError",
    "IntegrityError",
    "LoopstackError",
    "NotFoundError",
    "SignatureError",
    "ValidationError",
    "http_status",
]
