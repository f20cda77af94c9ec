"""Test helpers for talking to the local cluster: clients, namespaces, and waiting on conditions.

Tests wait for conditions with a timeout (never sleep as synchronisation): `wait_for` polls
a predicate and fails with the last observed value when time runs out.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

from kubernetes_asyncio import client, config
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

T = TypeVar("T")


@asynccontextmanager
async def api_client(kubeconfig: Path) -> AsyncIterator[ApiClient]:
    cfg = client.Configuration()
    await config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
    async with ApiClient(configuration=cfg) as api:
        yield api


async def wait_for(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    what: str,
    within: float = 30.0,
    interval: float = 0.2,
) -> T:
    """Call `probe` until `done(result)`; raise AssertionError naming `what` and the last result."""
    deadline = time.monotonic() + within
    last: T | None = None
    while True:
        last = await probe()
        if done(last):
            return last
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {within}s waiting for {what}; last seen: {last!r}"
            )
        await asyncio.sleep(interval)


@asynccontextmanager
async def temporary_namespace(api: ApiClient, prefix: str = "t") -> AsyncIterator[str]:
    core = client.CoreV1Api(api)
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    await core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))

    async def default_sa() -> bool:
        try:
            await core.read_namespaced_service_account("default", name)
        except ApiException as err:
            if err.status == 404:
                return False
            raise
        return True

    await wait_for(default_sa, bool, what=f"ServiceAccount default in {name}")
    try:
        yield name
    finally:
        await core.delete_namespace(name)


@asynccontextmanager
async def impersonating(kubeconfig: Path, user: str) -> AsyncIterator[ApiClient]:
    """A client acting as `user` (e.g. `system:serviceaccount:NS:NAME`), through the admin's
    right to impersonate: what that subject's RBAC allows, nothing more."""
    async with api_client(kubeconfig) as api:
        api.set_default_header("Impersonate-User", user)
        yield api


async def allowed(
    api: ApiClient, user: str, verb: str, resource: str, namespace: str = "", group: str = ""
) -> bool:
    """A SubjectAccessReview: may `user` `verb` `resource` (`pods/exec` names a subresource)
    in `namespace` ("" asks cluster-wide)?"""
    name, _, sub = resource.partition("/")
    groups = ["system:authenticated"]
    if user.startswith("system:serviceaccount:"):  # the groups a token of it carries
        groups += ["system:serviceaccounts", f"system:serviceaccounts:{user.split(':')[2]}"]
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user=user,
            groups=groups,
            resource_attributes=client.V1ResourceAttributes(
                verb=verb, resource=name, subresource=sub or None, group=group,
                namespace=namespace or None,
            ),
        )
    )  # fmt: skip
    answer = await client.AuthorizationV1Api(api).create_subject_access_review(review)
    return bool(answer.status.allowed)
