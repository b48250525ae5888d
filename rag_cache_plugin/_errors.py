"""The exception tree.

Only misuse of the API raises into the caller (``ConfigError`` and other
``ValueError``s).  Tier failures, corrupt entries and bad signatures are turned
into misses plus events by the core and never escape a lookup or a store.
"""

from __future__ import annotations


class RagCacheError(Exception):
    """Base class of every error this package defines."""


class ConfigError(RagCacheError, ValueError):
    """A configuration value is invalid."""


class CodecError(RagCacheError):
    """A stored payload could not be decoded."""


class CorruptEntryError(CodecError):
    """The payload is not a well-formed entry (garbage, wrong shape, wrong key)."""


class SignatureError(CodecError):
    """The payload's signature or encryption tag does not verify."""


class TierError(RagCacheError):
    """A storage tier failed (I/O, timeout, server gone)."""


class TierUnavailableError(TierError):
    """The tier's circuit breaker is open; the call was not attempted."""
