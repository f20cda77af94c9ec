"""End-to-end harness: the operator as a real subprocess, plus the fake GitHub and simulated
runners in the test's event loop, all against the session's local control plane.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from runnerfleet import conventions as c
from runnerfleet.localcluster import LocalCluster
from runnerfleet.sim.demand import write_demand
from runnerfleet.sim.github import FakeGitHub
from runnerfleet.sim.kubelet import ListenerKubelet, ListenerProcess
from runnerfleet.sim.operator_process import Launch, OperatorProcess, launch_here
from runnerfleet.sim.runners import SimulatedRunners
from tests.support.kube import wait_for

ORG = "acme"


@dataclass
class Fleet:
    kube: ApiClient
    namespace: str
    github: FakeGitHub
    runners: SimulatedRunners
    operator: OperatorProcess
    token: str
    kubelet: ListenerKubelet
    node_pools: list[str] = field(default_factory=list)  # created here; removed at teardown

    @property
    def config_url(self) -> str:
        return f"{self.github.url}/{ORG}"

    async def apply_scale_set(self, body: dict[str, Any]) -> dict[str, Any]:
        api = client.CustomObjectsApi(self.kube)
        result: dict[str, Any] = await api.create_namespaced_custom_object(
            c.GROUP, c.VERSION, self.namespace, c.RUNNER_SCALE_SET_PLURAL, body
        )
        return result

    async def apply_team_listener(self, body: dict[str, Any]) -> dict[str, Any]:
        api = client.CustomObjectsApi(self.kube)
        result: dict[str, Any] = await api.create_namespaced_custom_object(
            c.GROUP, c.VERSION, self.namespace, c.TEAM_LISTENER_PLURAL, body
        )
        return result

    async def apply_node_pool(self, body: dict[str, Any]) -> dict[str, Any]:
        api = client.CustomObjectsApi(self.kube)
        result: dict[str, Any] = await api.create_cluster_custom_object(
            c.GROUP, c.VERSION, c.RUNNER_NODE_POOL_PLURAL, body
        )
        self.node_pools.append(body["metadata"]["name"])
        return result

    async def node_pool(self, name: str) -> dict[str, Any] | None:
        api = client.CustomObjectsApi(self.kube)
        try:
            result: dict[str, Any] = await api.get_cluster_custom_object(
                c.GROUP, c.VERSION, c.RUNNER_NODE_POOL_PLURAL, name
            )
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return result

    async def remove_node_pools(self) -> None:
        """Delete the pools this test created, after the scale sets that name them (so the
        operator releases their nodes); finalizers still left after 30 s are stripped."""
        if not self.node_pools:
            return
        api = client.CustomObjectsApi(self.kube)
        for rss in (await api.list_namespaced_custom_object(
            c.GROUP, c.VERSION, self.namespace, c.RUNNER_SCALE_SET_PLURAL
        ))["items"]:  # fmt: skip
            if rss["spec"].get("nodePool") in self.node_pools:
                await api.delete_namespaced_custom_object(
                    c.GROUP, c.VERSION, self.namespace, c.RUNNER_SCALE_SET_PLURAL,
                    rss["metadata"]["name"],
                )  # fmt: skip
        for name in self.node_pools:
            with contextlib.suppress(ApiException):
                await api.delete_cluster_custom_object(
                    c.GROUP, c.VERSION, c.RUNNER_NODE_POOL_PLURAL, name
                )

        async def left() -> list[str]:
            return [n for n in self.node_pools if await self.node_pool(n) is not None]

        try:
            await wait_for(left, lambda names: not names, what="node pools removed", within=30)
        except AssertionError:
            for name in await left():
                with contextlib.suppress(ApiException):
                    await api.patch_cluster_custom_object(
                        c.GROUP, c.VERSION, c.RUNNER_NODE_POOL_PLURAL, name,
                        {"metadata": {"finalizers": None}},
                        _content_type="application/merge-patch+json",
                    )  # fmt: skip

    async def team_listener(self, name: str) -> dict[str, Any]:
        api = client.CustomObjectsApi(self.kube)
        result: dict[str, Any] = await api.get_namespaced_custom_object(
            c.GROUP, c.VERSION, self.namespace, c.TEAM_LISTENER_PLURAL, name
        )
        return result

    async def listener_process(self, within: float = 30.0) -> ListenerProcess:
        """The running listener process (started by the stand-in kubelet for its pod)."""
        procs = await wait_for(
            lambda: asyncio.sleep(0, self.kubelet.running()),
            lambda running: len(running) == 1,
            what="exactly one running listener process",
            within=within,
        )
        return procs[0]

    async def scale_set(self, name: str) -> dict[str, Any]:
        api = client.CustomObjectsApi(self.kube)
        result: dict[str, Any] = await api.get_namespaced_custom_object(
            c.GROUP, c.VERSION, self.namespace, c.RUNNER_SCALE_SET_PLURAL, name
        )
        return result

    async def set_demand(self, name: str, jobs: int, sequence: int) -> None:
        """Write the demand contract as a TeamListener would (status.demand only)."""
        await write_demand(self.kube, self.namespace, name, jobs, sequence, "test")

    async def wait_condition(
        self,
        kind: str,
        name: str,
        ctype: str,
        status: str = "False",
        reason: str | None = None,
        within: float = 30.0,
    ) -> dict[str, Any]:
        """Wait until the object's condition `ctype` has `status` (and `reason`); return it."""
        read: Any = {"rss": self.scale_set, "tl": self.team_listener, "rnp": self.node_pool}[kind]

        def matches(obj: dict[str, Any]) -> bool:
            return any(
                c_["type"] == ctype and c_["status"] == status
                and (reason is None or c_["reason"] == reason)
                for c_ in obj.get("status", {}).get("conditions", [])
            )  # fmt: skip

        obj = await wait_for(
            lambda: read(name), lambda o: o is not None and matches(o),
            what=f"{kind} {name}: {ctype}={status} {reason or ''}",
            within=within,
        )  # fmt: skip
        found: dict[str, Any] = next(
            c_ for c_ in obj["status"]["conditions"] if c_["type"] == ctype
        )
        return found

    async def pods(self, scale_set: str) -> list[client.V1Pod]:
        core = client.CoreV1Api(self.kube)
        pods = await core.list_namespaced_pod(
            self.namespace, label_selector=f"{c.LABEL_SCALE_SET}={scale_set}"
        )
        return list(pods.items)

    async def secrets(self, scale_set: str) -> list[client.V1Secret]:
        core = client.CoreV1Api(self.kube)
        found = await core.list_namespaced_secret(
            self.namespace, label_selector=f"{c.LABEL_SCALE_SET}={scale_set}"
        )
        return list(found.items)

    def registrations(self, scale_set: str) -> list[str]:
        return sorted(
            r.name for r in self.github.runners.values()
            if c.is_runner_of(r.name, scale_set, self.namespace)
        )  # fmt: skip

    async def expect_runners(
        self, scale_set: str, *, idle: int, busy: int = 0, within: float = 30.0
    ) -> None:
        """Wait until the fake GitHub sees exactly `idle` idle and `busy` busy runners of the
        set, and the cluster has exactly that many live runner pods, each with its Secret."""

        async def observe() -> tuple[int, int, int, int]:
            runners = [
                r for r in self.github.runners.values()
                if c.is_runner_of(r.name, scale_set, self.namespace)
            ]  # fmt: skip
            online = [r for r in runners if r.status == "online"]
            live = [
                p for p in await self.pods(scale_set) if p.status.phase in ("Pending", "Running")
            ]
            secrets_ = await self.secrets(scale_set)
            return (
                sum(1 for r in online if not r.busy),
                sum(1 for r in online if r.busy),
                len(live),
                len(secrets_),
            )

        total = idle + busy
        try:
            await wait_for(
                observe, lambda got: got == (idle, busy, total, total),
                what=f"{scale_set}: (idle, busy, live pods, secrets) == "
                     f"{(idle, busy, total, total)}",
                within=within,
            )  # fmt: skip
        except AssertionError as err:
            raise AssertionError(f"{err}\n{await self._runner_story(scale_set)}") from None

    async def _runner_story(self, scale_set: str) -> str:
        """What each runner of the set is doing, for a timed-out wait: its pod (phase, node,
        scheduling condition), the stand-in runner's record, its registration in the fake."""
        lines = []
        registered = {r.name: r for r in self.github.runners.values()}
        pods = await self.pods(scale_set)
        for pod in pods:
            name = pod.metadata.name
            sched = next((f"{x.reason}: {x.message}" for x in pod.status.conditions or []
                          if x.type == "PodScheduled" and x.status != "True"), "")  # fmt: skip
            reg = registered.get(name)
            lines.append(
                f"  {name}: pod {pod.status.phase} on {pod.spec.node_name} {sched}"
                f"{' deleting' if pod.metadata.deletion_timestamp else ''}; "
                f"runner {'alive' if self.runners.alive(name) else 'not running'}, "
                f"record {self.runners.records.get(name)}; registration "
                f"{(reg.id, reg.status, reg.busy) if reg else None}"
            )
        named = {p.metadata.name for p in pods}
        ours = [n for n in registered if c.is_runner_of(n, scale_set, self.namespace)]
        others = sorted(n for n in ours if n not in named)
        return "\n".join([*lines, f"  registrations without a pod: {others}"])


def app_key() -> tuple[str, str]:
    """A fresh GitHub App key pair: (private PEM, public PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()  # fmt: skip
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@asynccontextmanager
async def fleet(
    cluster: LocalCluster,
    kube: ApiClient,
    namespace: str,
    log_dir: Path,
    auth: str = "token",
    launch: Launch | None = None,
) -> AsyncIterator[Fleet]:
    """Start everything; `auth` is "token" (github_token) or "app" (GitHub App JWT flow);
    `launch` starts the operator and listeners some other way (tests/image: from the image)."""
    github = FakeGitHub()
    github.orgs.add(ORG)  # the organisation the scale sets register in
    await github.start()
    if auth == "app":
        private, github.app_public_key = app_key()
        token = private  # the secret value that must never be logged
        data = {"github_app_id": _b64("42"), "github_app_installation_id": _b64("7"),
                "github_app_private_key": _b64(private)}  # fmt: skip
    else:
        token = github.add_token()
        data = {"github_token": _b64(token)}
    core = client.CoreV1Api(kube)
    await core.create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="github-app"), data=data,
    ))  # fmt: skip
    runners = SimulatedRunners(github, kube, namespace)
    runners.start()
    operator = OperatorProcess(
        cluster.kubeconfig, namespace, log_dir / "operator.log", launch=launch or launch_here
    )
    operator.start()
    kubelet = ListenerKubelet(kube, cluster.kubeconfig, namespace, log_dir, launch=launch)
    kubelet.start()
    made = Fleet(kube, namespace, github, runners, operator, token, kubelet)
    passed = False
    try:
        yield made
        passed = True
    finally:
        await made.remove_node_pools()
        await kubelet.stop()
        operator.stop()
        # Shown by pytest only when the test fails.
        print(f"---- operator log ({operator.log_path}) ----\n{operator.logs()[-20000:]}")
        print(f"---- listener logs ----\n{kubelet.logs()[-20000:]}")
        await runners.stop()
        await github.stop()
        await asyncio.sleep(0)
    if passed:  # not over a failure: its own error says more
        leaked = leaked_secrets(made, [operator.logs(), kubelet.logs()])
        assert not leaked, f"secret values in the operator or listener logs: {leaked}"


def leaked_secrets(f: Fleet, logs: list[str]) -> list[str]:
    """Which kinds of secret value the fake GitHub issued or was given appear in `logs`
    (reliability item 5, checked after every e2e test that uses this harness): tokens,
    registration and message-queue tokens, JIT configs, the App private key, the webhook
    secret."""
    text = "\n".join(logs)
    needles: list[tuple[str, str]] = [("installation or user token", t) for t in f.github.tokens]
    needles += [("registration token", t) for t in f.github.actions.registration_tokens]
    needles += [("message queue token", t) for t in f.github.actions.queue_tokens()]
    needles += [("JIT config", j[-48:]) for j in f.github.jit_configs]
    if f.github.webhook_secret:
        needles.append(("webhook secret", f.github.webhook_secret.decode(errors="replace")))
    if "PRIVATE KEY" in f.token:
        body = "".join(f.token.strip().splitlines()[1:-1])
        needles += [("App private key", body[:64]), ("App private key", body[-64:])]
    else:
        needles.append(("github_token", f.token))
    return sorted({kind for kind, value in needles if len(value) >= 8 and value in text})
