"""Error classes. Each also subclasses the matching builtin, so ``except FileNotFoundError`` keeps working.

Messages say what was expected, what was received and, where there is one, how to fix it.
"""

from __future__ import annotations


class LivenightError(Exception):
    """Base class of every error livenight raises on purpose."""


class MissingDependencyError(LivenightError, ImportError):
    """An optional package is not installed; the message carries the install hint."""


class SourceError(LivenightError, ValueError):
    """A recording or stream is malformed; the message names the file, the field and what was expected."""


class SourceNotFoundError(LivenightError, FileNotFoundError):
    """A file or device does not exist."""


class UnknownSourceError(LivenightError, ValueError):
    """A source name, URI scheme or file extension that no driver handles."""


class DeviceNotFoundError(LivenightError, FileNotFoundError):
    """No camera matching the request is connected."""


class SourceTimeoutError(LivenightError, TimeoutError):
    """A live source produced nothing for longer than allowed."""


class ShapeError(LivenightError, ValueError):
    """An array has the wrong shape or dtype."""


class EngineMismatchError(LivenightError, ValueError):
    """An engine or model file does not match the source or its own description."""


class UnknownEngineError(LivenightError, ValueError):
    """A backend, model family or model file type that livenight does not know."""
