"""`spec.containerMode` in a scale-set round: may runners be created in this mode, and (in
`kubernetes` mode) are the scale set's ServiceAccount, Role, RoleBinding and job-pod template
in place?

Called once a round from services/scale_set.py, after the node pool is resolved. A problem it
returns takes the node-pool path there: a condition and an Event, no new runner pods, existing
runners untouched.

- `dind` needs a RunnerNodePool with `allowPrivileged: true` (read through the round's pool
  cache: no extra request).
- `kubernetes`: the children are applied with the drift rule of planning/children.py. Their
  anchor (the ConfigMap, stamped with the group's hash) is read only when this process has no
  memory of applying the group (first round after a start or a leader change: a current
  anchor is adopted, no write) or when the desired hash changed; otherwise nothing is read or
  written until the resync (5 min), which re-applies the four objects and so repairs a hand
  edit of the Role or a deleted ServiceAccount. An idle round costs no request. A runner
  pod refused because the ServiceAccount is missing brings the re-apply forward (at most
  once per REPAIR_GAP).

Layer: services. I/O only through the gateway.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from runnerfleet import conventions as c
from runnerfleet.builders.container_mode import build_hooks_children
from runnerfleet.builders.node_pool import Placement
from runnerfleet.builders.runner import ScaleSetIdentity
from runnerfleet.gateways.kubernetes import ForbiddenError, InvalidError, KubeError
from runnerfleet.models.node_pool import RunnerNodePoolSpec
from runnerfleet.models.runner_scale_set import RunnerScaleSetSpec
from runnerfleet.planning.children import (
    RESYNC_SECONDS,
    Applied,
    apply_reason,
    live_generation,
)
from runnerfleet.planning.status import Problem
from runnerfleet.services.runtime import Runtime

log = logging.getLogger("runnerfleet.containermode")
POOL_TTL = 10.0  # as services/scale_set.py: the same cache key, so one read serves both
REPAIR_GAP = 10.0  # at most one early re-apply per this while pods are refused for the account


async def prepare(
    runtime: Runtime, spec: RunnerScaleSetSpec, ident: ScaleSetIdentity, place: Placement | None
) -> Problem | None:
    """Why no runner may be created in this mode now, or None (children applied if due)."""
    key = (ident.namespace, ident.name)
    mode = spec.container_mode
    if mode is None or mode.type != c.CONTAINER_MODE_KUBERNETES:
        runtime.hooks_applied.pop(key, None)
    if mode is None:
        return None
    if mode.type == c.CONTAINER_MODE_DIND:
        return await _privileged_problem(runtime, spec)
    return await _ensure_hooks_children(runtime, spec, ident, place)


def _dind_message(pool: str | None, why: str) -> str:
    where = "no spec.nodePool" if pool is None else f"RunnerNodePool {pool!r} (spec.nodePool)"
    return (
        f"spec.containerMode.type: dind runs a privileged Docker daemon and needs a "
        f"RunnerNodePool with allowPrivileged: true; {where} {why}; no new runners are "
        "created (existing runners are kept)"
    )


async def _privileged_problem(runtime: Runtime, spec: RunnerScaleSetSpec) -> Problem | None:
    pool = spec.node_pool
    if pool is None:
        return Problem("NodePoolReady", "PrivilegedNotAllowed", _dind_message(None, "is set"))
    body = await runtime.cached(("pool", pool), POOL_TTL, lambda: runtime.kube.get_node_pool(pool))
    try:
        allowed = RunnerNodePoolSpec.model_validate(body.get("spec") or {}).allow_privileged
    except ValueError:
        allowed = False  # the pool reports its own bad spec; privileged only when it says so
    if allowed:
        return None
    return Problem(
        "NodePoolReady", "PrivilegedNotAllowed", _dind_message(pool, "does not allow it")
    )


async def _ensure_hooks_children(
    runtime: Runtime, spec: RunnerScaleSetSpec, ident: ScaleSetIdentity, place: Placement | None
) -> Problem | None:
    key = (ident.namespace, ident.name)
    children, digest = build_hooks_children(ident, spec, place)
    now = time.time()
    last, refused = runtime.hooks_applied.get(key, (None, None))
    if last is not None and _account_missing(runtime, key, spec) and now - last.at >= REPAIR_GAP:
        last = dataclasses.replace(last, at=now - RESYNC_SECONDS)  # re-apply now, not at resync
    if last is not None and last.hash == digest and now - last.at < RESYNC_SECONDS:
        # Applied (or refused) by this process, unchanged, resync not due: no request. A
        # refusal stands until the spec changes or the resync (no write per round).
        return None if refused is None else _rejected(children, refused)
    try:
        anchor = await runtime.kube.get_config_map(ident.namespace, _name(children))
        reason = apply_reason(digest, anchor, last, now)
        if reason is None:  # current: adopted after a restart, nothing written
            runtime.hooks_applied[key] = (Applied(digest, live_generation(anchor), now), None)
            return None
        log.info("applying container hooks RBAC of %s/%s (%s)", *key, reason)
        applied: dict[str, Any] | None = None
        for manifest in children:
            applied = await runtime.kube.apply(manifest)
    except (InvalidError, ForbiddenError) as err:
        runtime.hooks_applied[key] = (Applied(digest, None, now), str(err))
        return _rejected(children, str(err))
    except KubeError as err:  # transient: read and try again next round
        runtime.hooks_applied.pop(key, None)
        return _rejected(children, str(err))
    runtime.hooks_applied[key] = (Applied(digest, live_generation(applied), now), None)
    return None


def _account_missing(runtime: Runtime, key: tuple[str, str], spec: RunnerScaleSetSpec) -> bool:
    """Did the last round's runner pods bounce off a missing hooks ServiceAccount (deleted by
    hand)? Then the children are re-applied at once instead of at the resync. Only the
    rendered account: a scale set's own (spec.identity) is not ours to create."""
    if spec.identity is not None:
        return False
    account = c.container_hooks_name(key[1])
    for cond in (runtime.written.get(key) or {}).get("conditions") or []:
        if cond.get("type") == "PodsAdmitted" and cond.get("reason") == "PodRejected":
            return f'serviceaccount "{account}" not found' in str(cond.get("message", ""))
    return False


def _name(children: list[dict[str, Any]]) -> str:
    name: str = children[-1]["metadata"]["name"]
    return name


def _rejected(children: list[dict[str, Any]], why: str) -> Problem:
    return Problem(
        "PodsAdmitted", "ContainerHooksRejected",
        f"spec.containerMode.type: kubernetes: the ServiceAccount, Role, RoleBinding or job "
        f"template {_name(children)} could not be applied ({why}); no new runners are "
        "created (existing runners are kept)",
    )  # fmt: skip
