"""Reconcile one TeamListener: observe → plan (planning/team_listener.py) → apply → status.

Each round reads the TeamListener and its Deployment: from kopf's live body and the operator's
Deployment informer when it runs (no API call; a Deployment change wakes the loop), else with
2 GETs. The six children are applied
(server-side) only when the plan says so: missing, changed, drifted, or the periodic resync
(planning/children.py). Status is built through `TeamListenerStatus` and written only when it
changed (planning/status_diff.py).

Layer: services. I/O only through the gateways.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping
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
RESYNC_SECONDS = 3.0  # without the informer (no wake-ups from the Deployment)
IDLE_RESYNC_SECONDS = 30.0  # with it: changes wake the loop; this only catches the rest


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


DeploymentReader = Callable[[str, str], Awaitable[dict[str, Any] | None]]


async def reconcile_once(
    kube: KubeGateway,
    namespace: str,
    name: str,
    image: str,
    memory: Memory | None = None,
    live: Callable[[], Mapping[str, Any]] | None = None,
    read_deployment: DeploymentReader | None = None,
    mode: str = c.MODE_ACTIVE,
) -> None:
    memory = Memory() if memory is None else memory
    body = dict(live()) if live is not None else await kube.get_team_listener(namespace, name)
    meta = body["metadata"]
    if meta.get("deletionTimestamp"):
        return
    spec = TeamListenerSpec.model_validate(body["spec"])
    owner = ListenerIdentity(name=name, namespace=namespace, uid=meta["uid"], image=image)
    deployment = await (read_deployment or kube.get_deployment)(namespace, owner.child_name)
    children, digest = build_children(owner, spec, standby=mode == c.MODE_STANDBY)
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
    live: Callable[[], Mapping[str, Any]] | None = None,
    read_deployment: DeploymentReader | None = None,
    mode: Callable[[], str] = lambda: c.MODE_ACTIVE,
) -> None:
    """Reconcile until stopped. With `live` (kopf's current body) and `read_deployment` (the
    informer's copy, whose changes set `wake`) a settled round makes no API call and the
    loop resyncs every 30 s ± 20 %; without them it reads both every 3 s."""
    image = listener_image()
    memory = Memory()

    def resync(_: object) -> float:
        if read_deployment is None:
            return RESYNC_SECONDS
        return IDLE_RESYNC_SECONDS * random.uniform(0.8, 1.2)  # noqa: S311 (jitter)

    await reconcile_loop(
        f"TeamListener {namespace}/{name}",
        lambda: reconcile_once(
            kube, namespace, name, image, memory, live, read_deployment, mode()
        ),
        wake, stopped, resync,
    )  # fmt: skip
