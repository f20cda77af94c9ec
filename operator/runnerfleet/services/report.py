"""Gather what `runnerfleet status` shows: read the cluster, fold it with the pure report.

Layer: services.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from runnerfleet import conventions as c
from runnerfleet.gateways.kubernetes import ForbiddenError, KubeGateway, NotFoundError
from runnerfleet.planning.report import build_report


async def fleet_report(kube: KubeGateway, namespace: str | None = None) -> dict[str, Any]:
    """The report for one namespace, or the whole cluster."""
    scale_sets, listeners, events = await asyncio.gather(
        kube.list_scale_sets(namespace),
        kube.list_ours(c.TEAM_LISTENER_PLURAL, namespace),
        kube.list_events("RunnerFailed", namespace),
    )
    try:
        pools = await kube.list_ours(c.RUNNER_NODE_POOL_PLURAL)
    except (ForbiddenError, NotFoundError):
        pools = []  # a team member may not read cluster-scoped pools; older CRDs lack them
    return build_report(scale_sets, listeners, pools, events, time.time())
