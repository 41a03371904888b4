"""NATS JetStream for Autan: connection, subjects, the calls stream, consumers, buckets, wire.

Only this package imports `nats`; its errors are translated into `broker.errors`.
"""

from broker.connection import Broker, Submission, Watch
from broker.consumer import Delivery, PullFeed
from broker.deadletters import DeadLetterStream, StoredLetter
from broker.errors import (
    BrokerError,
    BrokerUnavailable,
    KeyExists,
    KeyNotFound,
    PublishRejected,
    QueueFull,
    StreamConflict,
)
from broker.ids import new_call_id
from broker.kv import Bucket
from broker.messages import (
    CallMsg,
    DeadLetter,
    ErrorInfo,
    Failure,
    Inline,
    Payload,
    Result,
    StoredRef,
    Success,
    UnencodableValue,
    decode_call,
    decode_dead_letter,
    decode_result,
    decode_value,
    encode,
    encode_value,
)
from broker.replies import Reply
from broker.streams import Backlog, ConsumerPolicy, Source, StreamLimits, calls_source
from broker.subjects import (
    CALLS_STREAM,
    CONFIG_BUCKET,
    DLQ_STREAM,
    REGISTRY_BUCKET,
    RESULTS_BUCKET,
    call_subject,
    consumer_name,
    dlq_subject,
    function_key,
)

__all__ = [
    "CALLS_STREAM",
    "CONFIG_BUCKET",
    "DLQ_STREAM",
    "REGISTRY_BUCKET",
    "RESULTS_BUCKET",
    "Backlog",
    "Broker",
    "BrokerError",
    "BrokerUnavailable",
    "Bucket",
    "CallMsg",
    "ConsumerPolicy",
    "DeadLetter",
    "DeadLetterStream",
    "Delivery",
    "ErrorInfo",
    "Failure",
    "Inline",
    "KeyExists",
    "KeyNotFound",
    "Payload",
    "PublishRejected",
    "PullFeed",
    "QueueFull",
    "Reply",
    "Result",
    "Source",
    "StoredLetter",
    "StoredRef",
    "StreamConflict",
    "StreamLimits",
    "Submission",
    "Success",
    "UnencodableValue",
    "Watch",
    "call_subject",
    "calls_source",
    "consumer_name",
    "decode_call",
    "decode_dead_letter",
    "decode_result",
    "decode_value",
    "dlq_subject",
    "encode",
    "encode_value",
    "function_key",
    "new_call_id",
]
