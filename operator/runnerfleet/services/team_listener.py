"""Reconcile one TeamListener: observe → plan (planning/team_listener.py) → apply → status.

Each round reads the TeamListener and its Deployment (2 GETs). The six children are applied
(server-side) only when the plan says so: missing, changed, drifted, or the periodic resync
(planning/children.py). Status is built through `TeamListenerStatus` and written only when it
changed (planning/status_diff.py).

Layer: services. I/O only through the gateways.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runnerfleet import conventions as c
from runnerfleet.builders.listener import ListenerIdentity, build_children
from runnerfleet.gateways.kubernetes import InvalidError, KubeGateway
from runnerfleet.models.base import parse_duration
from runnerfleet.models.team_listener import TeamListenerSpec
from runnerfleet.planning.status_diff import status_patch
from runnerfleet.planning.team_listener import (
    ListenerMemory,
    after_apply,
    fold_status,
    plan,
    status_wire,
)
from runnerfleet.services.loop import reconcile_loop

log = logging.getLogger("runnerfleet.teamlistener")
RESYNC_SECONDS = 3.0


@dataclass
class Memory:
    """One loop's memory across rounds (what it last applied, what was refused)."""

    current: ListenerMemory = field(default_factory=ListenerMemory)


def listener_image() -> str:
    """The image listener pods run (the operator's own), overridable for air-gapped installs."""
    return os.environ.get("RUNNERFLEET_IMAGE", c.DEFAULT_OPERATOR_IMAGE)


async def apply_children(
    kube: KubeGateway, children: list[dict[str, Any]]
) -> tuple[dict[str, Any] | None, str | None]:
    """Apply every child in order; the last applied Deployment and the last refusal, if any."""
    deployment = problem = None
    for manifest in children:
        try:
            applied = await kube.apply(manifest)
        except InvalidError as err:
            problem = str(err)
            continue
        if manifest["kind"] == "Deployment":
            deployment = applied
    return deployment, problem


async def reconcile_once(
    kube: KubeGateway, namespace: str, name: str, image: str, memory: Memory | None = None
) -> None:
    memory = Memory() if memory is None else memory
    body = await kube.get_team_listener(namespace, name)
    meta = body["metadata"]
    if meta.get("deletionTimestamp"):
        return
    spec = TeamListenerSpec.model_validate(body["spec"])
    owner = ListenerIdentity(name=name, namespace=namespace, uid=meta["uid"], image=image)
    deployment = await kube.get_deployment(namespace, owner.child_name)
    children, digest = build_children(owner, spec)
    now = time.time()
    decided = plan(digest, deployment, memory.current, now)
    problem, memory.current = decided.problem, decided.memory
    if decided.apply is not None:
        log.info("applying TeamListener %s/%s children (%s)", namespace, name, decided.apply)
        applied, problem = await apply_children(kube, children)
        deployment = applied or deployment
        memory.current = after_apply(digest, applied, problem, now)
    previous = dict(body.get("status") or {})
    status = fold_status(
        (deployment or {}).get("status") if deployment else None, previous,
        int(meta.get("generation", 0)), parse_duration(spec.poll_interval), spec.suspend,
        now, problem,
    )  # fmt: skip
    patch = status_patch(previous, status_wire(status))
    if patch is not None:
        await kube.patch_team_listener_status(namespace, name, patch)


async def run(
    kube: KubeGateway,
    namespace: str,
    name: str,
    stopped: Callable[[], bool],
    wake: asyncio.Event,
) -> None:
    image = listener_image()
    memory = Memory()
    await reconcile_loop(
        f"TeamListener {namespace}/{name}",
        lambda: reconcile_once(kube, namespace, name, image, memory),
        wake, stopped, RESYNC_SECONDS,
    )  # fmt: skip
