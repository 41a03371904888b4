"""The core every room shares: options, specs, the registry, settings, errors, the link.

It imports no room (`client`, `worker`, `control`, `gateway`, `ops`); they all import it.
"""

from runtime.core.apikeys import ALL_APPS, ApiKey, ApiKeys, load_api_keys, parse_api_keys
from runtime.core.coalesce import Coalesced
from runtime.core.context import Context
from runtime.core.directory import (
    HEARTBEAT_S,
    FunctionState,
    WorkerDirectory,
    WorkerInfo,
    function_states,
)
from runtime.core.errors import (
    ArtifactRejected,
    AutanError,
    CallNotFound,
    DeployError,
    FunctionNotFound,
    FunctionTimeout,
    RemoteError,
    StackError,
    StartRefused,
    known_error,
)
from runtime.core.launch import FORKSERVER_MODULE, WORKER_MODULE, WorkerLaunch
from runtime.core.lifeline import die_with_parent
from runtime.core.link import (
    ADMIN,
    CALLER,
    GATEWAY,
    Link,
    record_storage_url,
    record_trust,
    recorded_trust,
    storage_url,
)
from runtime.core.logs import configure_logging
from runtime.core.models import (
    ModelFile,
    ModelHandle,
    NoGpuProvider,
    load_models,
    onnxruntime_conflict,
    preload_onnxruntime,
)
from runtime.core.options import (
    DEFAULT_OPTIONS,
    LOST_ATTEMPTS_ALLOWED,
    MAX_NAME_CHARS,
    Batching,
    FunctionOptions,
    GpuChoice,
    InvalidOption,
    Model,
    Retries,
    Scaling,
    check_name,
    check_secret_name,
    valid_name,
)
from runtime.core.parts import (
    PART_PREFIX,
    REPORT_EVERY_S,
    STALE_AFTER_S,
    PartReport,
    PartReporter,
    instance_name,
    part_key,
    read_parts,
    storage_problem,
)
from runtime.core.registry import Registry
from runtime.core.secrets import MAX_SECRET_BYTES, SecretsKey, SecretStore, seal
from runtime.core.settings import HttpSettings, Settings
from runtime.core.spec import (
    FunctionSpec,
    ModelEntry,
    SignedSpec,
    decode_spec,
    encode_spec,
    python_version,
    split_qualname,
)
from runtime.core.streamed import kept_items, stream_call
from runtime.core.tensors import pad_batch, stack_batch
from runtime.core.titles import set_title
from runtime.core.trust import DeployKey, Trust, key_id

__all__ = [
    "ADMIN",
    "ALL_APPS",
    "CALLER",
    "DEFAULT_OPTIONS",
    "FORKSERVER_MODULE",
    "GATEWAY",
    "HEARTBEAT_S",
    "LOST_ATTEMPTS_ALLOWED",
    "MAX_NAME_CHARS",
    "MAX_SECRET_BYTES",
    "PART_PREFIX",
    "REPORT_EVERY_S",
    "STALE_AFTER_S",
    "WORKER_MODULE",
    "ApiKey",
    "ApiKeys",
    "ArtifactRejected",
    "AutanError",
    "Batching",
    "CallNotFound",
    "Coalesced",
    "Context",
    "DeployError",
    "DeployKey",
    "FunctionNotFound",
    "FunctionOptions",
    "FunctionSpec",
    "FunctionState",
    "FunctionTimeout",
    "GpuChoice",
    "HttpSettings",
    "InvalidOption",
    "Link",
    "Model",
    "ModelEntry",
    "ModelFile",
    "ModelHandle",
    "NoGpuProvider",
    "PartReport",
    "PartReporter",
    "Registry",
    "RemoteError",
    "Retries",
    "Scaling",
    "SecretStore",
    "SecretsKey",
    "Settings",
    "SignedSpec",
    "StackError",
    "StartRefused",
    "Trust",
    "WorkerDirectory",
    "WorkerInfo",
    "WorkerLaunch",
    "check_name",
    "check_secret_name",
    "configure_logging",
    "decode_spec",
    "die_with_parent",
    "encode_spec",
    "function_states",
    "instance_name",
    "kept_items",
    "key_id",
    "known_error",
    "load_api_keys",
    "load_models",
    "onnxruntime_conflict",
    "pad_batch",
    "parse_api_keys",
    "part_key",
    "preload_onnxruntime",
    "python_version",
    "read_parts",
    "record_storage_url",
    "record_trust",
    "recorded_trust",
    "seal",
    "set_title",
    "split_qualname",
    "stack_batch",
    "storage_problem",
    "storage_url",
    "stream_call",
    "valid_name",
]
