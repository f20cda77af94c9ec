"""A stand-in kubelet for TeamListener pods on kwok nodes.

kwok marks pods Running but runs no container. For listener pods this runs the container's
real program, `runnerfleet listen`, as a local process, the way a kubelet would: the env is
resolved from the pod spec (values, `secretKeyRef`, `envFrom` Secrets), and the process
authenticates with a token of the pod's own ServiceAccount (TokenRequest API), so it has
exactly the listener's RBAC. When the pod goes away, the process is killed.

Layer: tooling.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from runnerfleet import conventions as c
from runnerfleet.localcluster.ports import free_ports
from runnerfleet.sim.kubewatch import watch_pods
from runnerfleet.sim.operator_process import Launch

log = logging.getLogger("runnerfleet.sim.kubelet")


@dataclass
class ListenerProcess:
    pod: str
    proc: subprocess.Popen[bytes]
    webhook_port: int
    metrics_port: int
    log_path: Path


@dataclass
class ListenerKubelet:
    api: ApiClient
    admin_kubeconfig: Path
    namespace: str
    work_dir: Path
    processes: dict[str, ListenerProcess] = field(default_factory=dict)
    started: int = 0
    launch: Launch | None = None  # None: this checkout's code (below); see OperatorProcess
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for name in list(self.processes):
            await self._kill(name)

    def running(self) -> list[ListenerProcess]:
        return [p for p in self.processes.values() if p.proc.poll() is None]

    def logs(self) -> str:
        return "\n".join(p.log_path.read_text(errors="replace") for p in self.processes.values())

    async def _watch(self) -> None:
        selector = f"{c.LABEL_COMPONENT}={c.COMPONENT_LISTENER}"
        await watch_pods(self.api, self.namespace, selector, self._on_list, self._on_pod)

    async def _on_list(self, pods: list[Any]) -> None:
        """A fresh list (at start, or after the apiserver or the watch broke): a listener whose
        pod went meanwhile is stopped, as if its DELETED event had come. A spawn that fails
        (the apiserver away while resolving its env) raises: the pods are listed again."""
        present = {p.metadata.name for p in pods}
        for name in [n for n in self.processes if n not in present]:
            await self._kill(name)
        for pod in pods:
            await self._on_pod("ADDED", pod)

    async def _on_pod(self, kind: str, pod: Any) -> None:
        name = pod.metadata.name
        if kind == "DELETED" or pod.metadata.deletion_timestamp:
            await self._kill(name)
            return
        if pod.status.phase == "Running" and name not in self.processes:
            await self._spawn(pod)

    async def _kill(self, name: str) -> None:
        """SIGTERM, then SIGKILL after 10 s, as a kubelet does. Waited for without blocking
        the event loop: a listener's clean shutdown talks to the fake GitHub, which runs in
        this same loop."""
        entry = self.processes.get(name)
        if entry and entry.proc.poll() is None:
            entry.proc.terminate()
            try:
                await asyncio.to_thread(entry.proc.wait, 10)
            except subprocess.TimeoutExpired:
                entry.proc.kill()

    async def _spawn(self, pod: Any) -> None:
        container = pod.spec.containers[0]
        try:
            env = await self._resolve_env(container, pod)
        except (ApiException, KeyError) as err:
            if isinstance(err, ApiException) and err.status != 404:
                raise  # the apiserver away: the pods are listed again
            # A Secret or key the pod names is missing: a kubelet leaves the container in
            # CreateContainerConfigError and starts nothing. Raising here re-listed the pods
            # again and again, and no listener after this one in the list ever started.
            log.warning("listener pod %s: %s missing; not started", pod.metadata.name,
                        "Secret" if isinstance(err, ApiException) else f"key {err}")  # fmt: skip
            return
        kubeconfig = await self._token_kubeconfig(pod)
        hook, metrics = free_ports(2)
        env.update(
            RUNNERFLEET_KUBECONFIG=str(kubeconfig),
            RUNNERFLEET_WEBHOOK_PORT=str(hook),
            RUNNERFLEET_METRICS_PORT=str(metrics),
        )
        log_path = self.work_dir / f"{pod.metadata.name}.log"
        # The "image" is the code under test: a worktree's PYTHONPATH, not the editable
        # install's checkout (listeners ran another checkout's code from a git worktree).
        image = {k: v for k, v in os.environ.items() if k == "PYTHONPATH"}
        args = list(container.command[1:])
        if self.launch:
            argv, env = self.launch(args, env)
        else:
            argv, env = [sys.executable, "-m", "runnerfleet.cli", *args], {
                "PATH": "/usr/bin:/bin", **image, **env}  # fmt: skip
        with log_path.open("ab") as out:
            proc = subprocess.Popen(  # noqa: ASYNC220 (returns at once; lifetime managed here)
                argv, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        self.processes[pod.metadata.name] = ListenerProcess(
            pod.metadata.name, proc, hook, metrics, log_path
        )
        self.started += 1

    async def _resolve_env(self, container: Any, pod: Any) -> dict[str, str]:
        core = client.CoreV1Api(self.api)
        env: dict[str, str] = {}
        for source in container.env_from or []:
            if source.secret_ref:
                secret = await core.read_namespaced_secret(source.secret_ref.name, self.namespace)
                env.update(
                    {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
                )
        for var in container.env or []:
            if var.value is not None:
                env[var.name] = var.value
            elif var.value_from and var.value_from.field_ref:
                # The downward API, as a kubelet fills it for a process on this host.
                env[var.name] = {"metadata.name": pod.metadata.name, "status.podIP": "127.0.0.1",
                                 "metadata.namespace": self.namespace,
                                 }.get(var.value_from.field_ref.field_path, "")  # fmt: skip
            elif var.value_from and var.value_from.secret_key_ref:
                ref = var.value_from.secret_key_ref
                secret = await core.read_namespaced_secret(ref.name, self.namespace)
                env[var.name] = base64.b64decode((secret.data or {})[ref.key]).decode()
        return env

    async def _token_kubeconfig(self, pod: Any) -> Path:
        """A kubeconfig carrying a fresh token of the pod's ServiceAccount (and nothing else)."""
        core = client.CoreV1Api(self.api)
        request = client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
        )
        token = await core.create_namespaced_service_account_token(
            pod.spec.service_account_name, self.namespace, request
        )
        admin = yaml.safe_load(self.admin_kubeconfig.read_text())
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": admin["clusters"],
            "users": [{"name": "sa", "user": {"token": token.status.token}}],
            "contexts": [{"name": "sa", "context": {
                "cluster": admin["clusters"][0]["name"], "user": "sa",
                "namespace": self.namespace}}],
            "current-context": "sa",
        }  # fmt: skip
        path = self.work_dir / f"{pod.metadata.name}.kubeconfig"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path
