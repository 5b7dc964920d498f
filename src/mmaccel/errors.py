"""Exceptions raised by mmaccel.

Every user-facing error names the argument, file or line at fault and says what is allowed. The command line
turns :class:`MmaccelError` subclasses into one clear message and a non-zero exit, never a traceback.
"""

from __future__ import annotations


class MmaccelError(Exception):
    """Base class of all errors mmaccel raises on purpose."""


class NotSupportedError(MmaccelError, NotImplementedError):
    """A method, model or option combination that mmaccel does not support (with the reason)."""


class ConfigError(MmaccelError, ValueError):
    """A bad argument: out of range, unknown name, or inconsistent with the model."""


class DataError(MmaccelError, ValueError):
    """A malformed or missing data file; the message names the file and, where known, the line."""
