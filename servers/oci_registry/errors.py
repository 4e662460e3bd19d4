"""What can go wrong talking to a registry, one class per cause a caller may want to tell apart.

Every message names the registry, the object asked for and the cause, because the MCP server hands
the message to the model unchanged as its `isError` text.
"""

from __future__ import annotations


class RegistryError(Exception):
    """A registry request that failed."""


class NotFound(RegistryError):
    """The repository, tag, manifest or blob does not exist (or the registry hides it)."""


class Unauthorized(RegistryError):
    """The registry refused access, or no token could be had."""


class Unreachable(RegistryError):
    """No HTTP answer: connection refused, DNS failure, timeout, TLS failure."""


class DigestMismatch(RegistryError):
    """Content did not hash to the digest (or have the size) it was served under."""


class BadResponse(RegistryError):
    """An answer outside the protocol: bad JSON, unsupported media type, oversized body, server error."""


class PlatformNotFound(RegistryError):
    """An image index without an entry for the requested platform."""
