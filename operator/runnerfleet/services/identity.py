"""Cloud identity and runner defaults at the I/O edge (issue 13 items 6-7): whether a scale
set's ServiceAccount exists, and the operator's default runner resources.

The ServiceAccount is read through the runtime's shared cache, keyed by (namespace, name):
every scale set naming it shares one GET per `SERVICE_ACCOUNT_TTL`, found or not (a missing
one is remembered too, so a scale set waiting for it costs no GET per round). Creating the
ServiceAccount is seen within that TTL; nothing is created before then.

Layer: services. I/O: Kubernetes (through the gateway), the process environment.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from typing import Any, Final

from runnerfleet import conventions as c
from runnerfleet.builders.identity import service_account_name
from runnerfleet.builders.runner import ScaleSetIdentity
from runnerfleet.models.runner_scale_set import RunnerScaleSetSpec
from runnerfleet.planning.status import Problem
from runnerfleet.services.runtime import Runtime

log = logging.getLogger("runnerfleet.identity")
SERVICE_ACCOUNT_TTL: Final = 30.0
_RESOURCE_KEYS: Final = frozenset({"requests", "limits"})


async def identity_problem(
    runtime: Runtime, spec: RunnerScaleSetSpec, ident: ScaleSetIdentity
) -> Problem | None:
    """Why no runner pod can be created for this scale set's identity, or None. The
    apiserver refuses a pod naming a missing ServiceAccount, so the condition is
    PodsAdmitted; existing runners are never touched because of it."""
    name = service_account_name(spec)
    if name is None:
        return None

    async def exists() -> bool:
        return await runtime.kube.get_service_account(ident.namespace, name) is not None

    key = ("serviceaccount", ident.namespace, name)
    if await runtime.cached(key, SERVICE_ACCOUNT_TTL, exists):
        return None
    return Problem(
        "PodsAdmitted", "ServiceAccountNotFound",
        f"spec.identity.serviceAccountName: ServiceAccount {name!r} does not exist in "
        f"namespace {ident.namespace}; no new runners are created until it does (existing "
        "runners are kept; the operator does not create it)",
    )  # fmt: skip


def parse_default_resources(text: str) -> dict[str, Any] | None:
    """`{"requests": {...}, "limits": {...}}` as JSON; None (and an error logged) when it
    is not that shape, so a bad setting gives runners no defaults rather than no runners."""
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if (
        isinstance(value, dict)
        and set(value) <= _RESOURCE_KEYS
        and all(isinstance(v, dict) and all(_quantity(q) for q in v.values())
                for v in value.values())
    ):  # fmt: skip
        # YAML gives `cpu: 1` as a number; a Pod's quantities are strings.
        return {k: {r: str(q) for r, q in v.items()} for k, v in value.items()} or None
    log.error(
        "%s is not {\"requests\": {...}, \"limits\": {...}} of quantities; runner "
        "containers get no default resources", c.RUNNER_DEFAULT_RESOURCES_ENV,
    )  # fmt: skip
    return None


def _quantity(value: object) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)


@functools.cache
def runner_default_resources() -> dict[str, Any] | None:
    """The operator's default runner resources (chart value `runnerDefaults.resources`,
    env RUNNERFLEET_RUNNER_DEFAULT_RESOURCES), read once; None when unset."""
    text = os.environ.get(c.RUNNER_DEFAULT_RESOURCES_ENV, "").strip()
    return parse_default_resources(text) if text else None
