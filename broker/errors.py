"""Errors of the broker layer; nothing outside `broker/` sees a `nats` exception.

BrokerError
├── BrokerUnavailable   cannot reach NATS, or the connection dropped: retry later
├── PermissionDenied    NATS refused this process's identity something: fix its credentials
├── QueueFull           the calls stream refused a message (discard-new): back off, retry
├── PublishRejected     JetStream refused a message for another reason: fix the request
├── KeyNotFound         no such key in a KV bucket
├── KeyExists           a create-only write lost to an earlier writer
├── ConsumerNotFound    a function's consumer is gone from its stream: redeploy the function
└── StreamConflict      an existing stream overlaps ours incompatibly: fix the config
"""

from __future__ import annotations

__all__ = [
    "BrokerError",
    "BrokerUnavailable",
    "ConsumerNotFound",
    "KeyExists",
    "KeyNotFound",
    "PermissionDenied",
    "PublishRejected",
    "QueueFull",
    "StorageExhausted",
    "StreamConflict",
]


class BrokerError(Exception):
    """Base of the broker errors."""


class BrokerUnavailable(BrokerError):
    """NATS cannot be reached, or a request to it timed out."""


class PermissionDenied(BrokerError):
    """NATS refused this connection (its credentials) or one of its requests (its role's
    permissions): retrying will not help."""


class QueueFull(BrokerError):
    """The calls stream is at its limits and refuses new calls until workers catch up."""


class PublishRejected(BrokerError):
    """JetStream refused the message (no stream for the subject, bad headers, ...)."""


class KeyNotFound(BrokerError):
    """The key does not exist in the bucket (or was deleted, or expired)."""


class KeyExists(BrokerError):
    """A create-only write found the key already written (first writer wins)."""


class ConsumerNotFound(BrokerError):
    """A function's consumer (or its stream) does not exist: removed by hand, or the stream
    was made again. Deploying the function makes it again."""


class StreamConflict(BrokerError):
    """A stream exists with settings or subjects that conflict with what Autan needs."""


class StorageExhausted(BrokerError):
    """JetStream has too little storage for what was asked (a stream's reservation)."""
