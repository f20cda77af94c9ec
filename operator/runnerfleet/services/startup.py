"""The composition root: settings read from the environment, and the objects built from them.

Handlers (kopf wiring) call only these to get a `Runtime` or a `LeaderElector`; they never
construct gateways themselves. Every `RUNNERFLEET_*` variable the operator process reads is
read here (the sweep's pacing in `runtime.sweep_settings_from_env`).

Layer: services.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from runnerfleet import conventions as c
from runnerfleet.gateways.github import GitHubError
from runnerfleet.gateways.kubernetes import KubeError, KubeGateway, connect
from runnerfleet.services.leader import LeaderElector
from runnerfleet.services.runtime import Runtime

# Failures a caller retries with backoff (a finalizer, say); handlers catch these without
# knowing which gateway raised them.
TRANSIENT: tuple[type[Exception], ...] = (GitHubError, KubeError)


class SettingsError(ValueError):
    """An environment variable has a value the operator cannot use (the message names it)."""


@dataclass(frozen=True)
class Settings:
    kubeconfig: str | None
    mode: str
    namespace: str  # where the operator runs (control ConfigMap, Lease)
    metrics_port: int

    @classmethod
    def from_env(cls) -> Settings:
        mode = os.environ.get("RUNNERFLEET_MODE", c.MODE_ACTIVE).strip().lower()
        if mode not in c.MODES:
            raise SettingsError(f"RUNNERFLEET_MODE must be one of {'/'.join(c.MODES)}")
        return cls(
            kubeconfig=os.environ.get("RUNNERFLEET_KUBECONFIG"),
            mode=mode,
            namespace=os.environ.get("RUNNERFLEET_NAMESPACE", "default"),
            metrics_port=int(os.environ.get("RUNNERFLEET_METRICS_PORT", "9090")),
        )


async def build_runtime(settings: Settings, served: list[str | None]) -> Runtime:
    """The operator's runtime, with its runner informers started for the served namespaces."""
    runtime = Runtime(kube=KubeGateway(await connect(settings.kubeconfig)), mode=settings.mode)
    runtime.watch_children(served)
    return runtime


async def kube_gateway(kubeconfig: str | None) -> KubeGateway:
    """A gateway on a connection of its own (the Lease renewals' thread uses one)."""
    return KubeGateway(await connect(kubeconfig))


async def build_elector(
    kubeconfig: str | None, namespace: str, name: str, identity: str, duration: int
) -> LeaderElector:
    return LeaderElector(
        KubeGateway(await connect(kubeconfig)), namespace, name, identity, duration
    )
