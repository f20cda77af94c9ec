"""Write a scale set's demand the way a TeamListener does (status.demand, merge patch).

Until the listener lands, the demo and tests use this to play its part; the contract is
documented in docs/runner-scale-set.md.

Layer: tooling.
"""

from __future__ import annotations

import datetime as dt

from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient

from runnerfleet import conventions as c


async def write_demand(
    api: ApiClient, namespace: str, name: str, assigned_jobs: int, sequence: int, listener: str
) -> None:
    demand = {
        "assignedJobs": assigned_jobs,
        "sequence": sequence,
        "observedAt": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "listener": listener,
    }
    await client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        c.GROUP,
        c.VERSION,
        namespace,
        c.RUNNER_SCALE_SET_PLURAL,
        name,
        {"status": {"demand": demand}},
        _content_type="application/merge-patch+json",  # type: ignore[call-arg]
    )
