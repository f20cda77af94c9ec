"""Fake nodes for kwok: parse node options and build Node manifests.

kwok manages every node carrying the annotation `kwok.x-k8s.io/node: fake` (the same marker
Karpenter's kwok provider uses), keeps it Ready, and runs its pods' lifecycle.

Layer: tooling. Pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final

KWOK_ANNOTATION: Final = "kwok.x-k8s.io/node"
KWOK_ANNOTATION_VALUE: Final = "fake"
_EFFECTS: Final = ("NoSchedule", "PreferNoSchedule", "NoExecute")
_TAINT = re.compile(r"^(?P<key>[^=:\s]+)(=(?P<value>[^:\s]*))?:(?P<effect>[A-Za-z]+)$")


def parse_taint(text: str) -> dict[str, str]:
    """`key=value:Effect` or `key:Effect` -> a taint. Raises ValueError naming the input."""
    match = _TAINT.match(text.strip())
    if not match:
        raise ValueError(f"taint {text!r} is not of the form key=value:Effect or key:Effect")
    effect = match["effect"]
    if effect not in _EFFECTS:
        raise ValueError(f"taint {text!r}: effect must be one of {', '.join(_EFFECTS)}")
    taint = {"key": match["key"], "effect": effect}
    if match["value"]:
        taint["value"] = match["value"]
    return taint


def parse_label(text: str) -> tuple[str, str]:
    """`key=value` -> (key, value). Raises ValueError naming the input."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"label {text!r} is not of the form key=value")
    return key.strip(), value.strip()


@dataclass(frozen=True)
class NodeSpec:
    """A group of identical fake nodes: `{prefix}-0 .. {prefix}-{count-1}`."""

    count: int
    prefix: str = "kwok-node"
    labels: dict[str, str] = field(default_factory=dict)
    taints: tuple[dict[str, str], ...] = ()
    cpu: str = "32"
    memory: str = "128Gi"
    pods: str = "110"

    def names(self) -> list[str]:
        return [f"{self.prefix}-{i}" for i in range(self.count)]

    def manifests(self) -> list[dict[str, Any]]:
        return [self._manifest(name) for name in self.names()]

    def _manifest(self, name: str) -> dict[str, Any]:
        resources = {"cpu": self.cpu, "memory": self.memory, "pods": self.pods}
        return {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "annotations": {
                    KWOK_ANNOTATION: KWOK_ANNOTATION_VALUE,
                    "node.alpha.kubernetes.io/ttl": "0",
                },
                "labels": {
                    "kubernetes.io/arch": "amd64",
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/hostname": name,
                    "type": "kwok",
                    **self.labels,
                },
            },
            "spec": {"taints": [dict(t) for t in self.taints]},
            "status": {
                "allocatable": resources,
                "capacity": resources,
                "nodeInfo": {
                    "architecture": "amd64",
                    "operatingSystem": "linux",
                    "kubeletVersion": "fake",
                    "kubeProxyVersion": "fake",
                },
            },
        }
