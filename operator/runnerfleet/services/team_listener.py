"""Reconcile one TeamListener: apply its children (server-side), then fold its status.

Layer: services. I/O only through the gateways.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable

from runnerfleet import conventions as c
from runnerfleet.builders.listener import ListenerIdentity, build_all
from runnerfleet.gateways.kubernetes import InvalidError, KubeGateway
from runnerfleet.models.base import parse_duration
from runnerfleet.models.team_listener import TeamListenerSpec
from runnerfleet.planning.listener_status import build_listener_status
from runnerfleet.services.loop import reconcile_loop

RESYNC_SECONDS = 3.0


def listener_image() -> str:
    """The image listener pods run (the operator's own), overridable for air-gapped installs."""
    return os.environ.get("RUNNERFLEET_IMAGE", c.DEFAULT_OPERATOR_IMAGE)


async def reconcile_once(kube: KubeGateway, namespace: str, name: str, image: str) -> None:
    body = await kube.get_team_listener(namespace, name)
    if body["metadata"].get("deletionTimestamp"):
        return
    meta = body["metadata"]
    spec = TeamListenerSpec.model_validate(body["spec"])
    owner = ListenerIdentity(name=name, namespace=namespace, uid=meta["uid"], image=image)
    problem = None
    for manifest in build_all(owner, spec):
        try:
            await kube.apply(manifest)
        except InvalidError as err:
            problem = str(err)
    deployment = await kube.get_deployment_status(namespace, owner.child_name)
    status = build_listener_status(
        deployment, dict(body.get("status") or {}), int(meta.get("generation", 0)),
        parse_duration(spec.poll_interval), spec.suspend, time.time(),
    )  # fmt: skip
    if problem:
        status["conditions"][0].update(status="False", reason="ChildRejected", message=problem)
    await kube.patch_team_listener_status(namespace, name, status)


async def run(
    kube: KubeGateway,
    namespace: str,
    name: str,
    stopped: Callable[[], bool],
    wake: asyncio.Event,
) -> None:
    image = listener_image()
    await reconcile_loop(
        f"TeamListener {namespace}/{name}",
        lambda: reconcile_once(kube, namespace, name, image),
        wake, stopped, RESYNC_SECONDS,
    )  # fmt: skip
