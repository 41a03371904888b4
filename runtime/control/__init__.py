"""The control plane: the scaler, its pure decision, providers, the embedded NATS server.

The scaler reaches workers only through the `Provider` protocol (`LocalProvider` is the
first); it never imports the worker room, nor the client or the gateway.
"""

from runtime.control.access import EmbeddedAccess
from runtime.control.agent import Agent, OrderedIdentities
from runtime.control.children import Children, DataDirLock, descendants
from runtime.control.cluster import LocalNatsCluster
from runtime.control.decision import (
    Decision,
    FunctionLoad,
    PeakWindow,
    decide,
    target_workers,
    wanted_workers,
)
from runtime.control.embedded import ClusterPeer, NatsServer, find_nats_server, free_port
from runtime.control.environment import WorkerAccess, WorkerSecrets, detect_gpus, worker_env
from runtime.control.fleet import FleetProvider
from runtime.control.lease import LEASE_S, Lease, LeaseHolder
from runtime.control.local import LocalProvider
from runtime.control.metrics import ScalerMetrics
from runtime.control.nodes import (
    NODE_LOST_S,
    NodeReport,
    check_node_name,
    default_node_name,
    detect_node_gpus,
    parse_gpus,
)
from runtime.control.provider import Capacity, ProvidedWorker, Provider, WorkerState
from runtime.control.sandbox import Sandbox, isolation_unavailable
from runtime.control.scaler import Scaler
from runtime.control.secrets import StackSecrets
from runtime.control.storewatch import StoreWatch
from runtime.control.sweeper import PayloadSweeper, held_by_dead_letters
from runtime.control.templates import TemplateBook, template_key
from runtime.control.undeliverable import Undeliverable
from runtime.core import FunctionStatus, read_statuses

__all__ = [
    "LEASE_S",
    "NODE_LOST_S",
    "Agent",
    "Capacity",
    "Children",
    "ClusterPeer",
    "DataDirLock",
    "Decision",
    "EmbeddedAccess",
    "FleetProvider",
    "FunctionLoad",
    "FunctionStatus",
    "Lease",
    "LeaseHolder",
    "LocalNatsCluster",
    "LocalProvider",
    "NatsServer",
    "NodeReport",
    "OrderedIdentities",
    "PayloadSweeper",
    "PeakWindow",
    "ProvidedWorker",
    "Provider",
    "Sandbox",
    "Scaler",
    "ScalerMetrics",
    "StackSecrets",
    "StoreWatch",
    "TemplateBook",
    "Undeliverable",
    "WorkerAccess",
    "WorkerSecrets",
    "WorkerState",
    "check_node_name",
    "decide",
    "default_node_name",
    "descendants",
    "detect_gpus",
    "detect_node_gpus",
    "find_nats_server",
    "free_port",
    "held_by_dead_letters",
    "isolation_unavailable",
    "parse_gpus",
    "read_statuses",
    "target_workers",
    "template_key",
    "wanted_workers",
    "worker_env",
]
