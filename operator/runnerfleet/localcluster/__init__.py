"""A real local Kubernetes control plane, run as plain processes (no Docker).

etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (simulated nodes and
pod lifecycle) are built from pinned Go modules (see tools/) and started on 127.0.0.1 with
generated certificates. Used by `runnerfleet cluster`, the test suite, the demo and benchmarks.

Layer: tooling. Does process, file and network I/O; never imported by the operator's layers.
"""

from runnerfleet.localcluster.binaries import BinaryPaths, MissingBinariesError
from runnerfleet.localcluster.cluster import ClusterInfo, LocalCluster
from runnerfleet.localcluster.errors import ClusterError
from runnerfleet.localcluster.nodes import NodeSpec, parse_taint

__all__ = [
    "BinaryPaths",
    "ClusterError",
    "ClusterInfo",
    "LocalCluster",
    "MissingBinariesError",
    "NodeSpec",
    "parse_taint",
]
