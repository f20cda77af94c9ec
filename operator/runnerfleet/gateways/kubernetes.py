"""The Kubernetes gateway: every API call the operator makes goes through here.

kubernetes_asyncio errors become runnerfleet's own: `AlreadyExistsError` (409 on create: adopt),
`ConflictError` (409 on update: re-read and retry), `NotFoundError`, `InvalidError` (422, or a
403 from admission such as Pod Security: the spec asks for something not allowed),
`ForbiddenError` (RBAC), `KubeUnavailableError` (network, 5xx, 429: retry).
Lists return plain dicts (camelCase, as the apiserver sends them) to keep large lists cheap.

Layer: gateways. Network I/O to the Kubernetes API only.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
import urllib.parse
import urllib.request
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from runnerfleet import conventions as c
from runnerfleet.gateways.event_series import Decision, EventSeries


class KubeError(Exception):
    """Base of the gateway's errors; `.status` is the HTTP status if there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class NotFoundError(KubeError): ...


class AlreadyExistsError(KubeError): ...


class ConflictError(KubeError): ...


class InvalidError(KubeError):
    """The apiserver or an admission plugin refused the object (422 or 400, or 403 from
    admission)."""


class ForbiddenError(KubeError): ...


class KubeUnavailableError(KubeError): ...


def _reason(err: ApiException) -> tuple[str, str]:
    try:
        body = json.loads(err.body or "{}")
    except (TypeError, ValueError):
        body = {}
    return str(body.get("reason", "")), str(body.get("message", err.reason or ""))


_UNCONVERTIBLE = "unable to convert unstructured object"


def _map(err: Exception, what: str) -> KubeError:
    if isinstance(err, KubeError):
        return err
    if isinstance(err, ApiException):
        reason, message = _reason(err)
        text = f"{what}: {message}"
        status = err.status
        if status == 404:
            return NotFoundError(text, status)
        if status == 409:
            cls = AlreadyExistsError if reason == "AlreadyExists" else ConflictError
            return cls(text, status)
        if status in (400, 422) or (status == 500 and _UNCONVERTIBLE in message):
            # 400, or a 500 saying so: the apiserver could not even decode the object, e.g.
            # a quantity that is no quantity in a listener's `resources` ("quantities must
            # match the regular expression"). As permanent as a 422: retried as an outage, it
            # hot-looped with no condition (issue 12, generated specs).
            return InvalidError(text, status)
        if status == 403:
            # Admission webhooks/plugins (e.g. Pod Security) answer 403 with reason Forbidden
            # and a message naming the violated policy; RBAC's message says "cannot <verb>".
            if "cannot " in message and "User" in message:
                return ForbiddenError(text, status)
            return InvalidError(text, status)
        return KubeUnavailableError(text, status)
    if isinstance(err, aiohttp.ClientError | TimeoutError | OSError):
        return KubeUnavailableError(f"{what}: {type(err).__name__}: {err}")
    return KubeError(f"{what}: {type(err).__name__}: {err}")


map_error = _map  # for the informer module


async def _json(resp: Any, what: str) -> dict[str, Any]:
    """The body of a raw (`_preload_content=False`) response. kubernetes_asyncio raises on
    error statuses only when it preloads, so raw calls check the status here."""
    if not 200 <= resp.status <= 299:
        err = ApiException(status=resp.status, reason=resp.reason)
        err.body = await resp.text()
        raise _map(err, what)
    body: dict[str, Any] = await resp.json()
    return body


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def connect(kubeconfig: str | None = None) -> ApiClient:
    """An API client from `kubeconfig`, else in-cluster config, else the default kubeconfig."""
    cfg = client.Configuration()
    if kubeconfig:
        await config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    else:
        try:
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        except config.ConfigException:
            await config.load_kube_config(client_configuration=cfg)
    cfg.connection_pool_maxsize = 64
    api = ApiClient(configuration=cfg)
    _resolve_proxy_once(api, cfg.host or "")
    return api


WATCH_READ_BUFFER = 2**21  # as kubernetes_asyncio: a watch event can carry a 1.5 MiB object


def _resolve_proxy_once(api: ApiClient, host: str) -> None:
    """kubernetes_asyncio's session trusts the environment, so aiohttp looked the proxy and
    ~/.netrc up again for every request, in a worker thread (a tenth of the operator's CPU
    while it created runners). The proxy for the apiserver is read from the environment
    once, here, and the session no longer looks (nobody authenticates to an apiserver with
    netrc)."""
    rest = api.rest_client
    original = rest.pool_manager
    rest.pool_manager = aiohttp.ClientSession(
        connector=original.connector, trust_env=False, read_bufsize=WATCH_READ_BUFFER
    )
    original.detach()  # the connector now belongs to the new session
    if not rest.proxy:
        proxies = urllib.request.getproxies_environment()
        hostname = urllib.parse.urlsplit(host).hostname or ""
        scheme = urllib.parse.urlsplit(host).scheme or "https"
        if scheme in proxies and not urllib.request.proxy_bypass(hostname):
            rest.proxy = proxies[scheme]


class KubeGateway:
    """Typed, error-mapped access to the few resources the operator touches."""

    def __init__(self, api: ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.event_series = EventSeries()
        self.event_writes = 0  # Event creates and patches, for tests and measurements

    # ------------------------------------------------------------------ raw JSON helpers
    async def _list(self, call: Any, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        resp = await call(*args, _preload_content=False, **kwargs)
        items: list[dict[str, Any]] = (await _json(resp, "list")).get("items", [])
        return items

    # ------------------------------------------------------------------ runner children
    async def list_pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        try:
            return await self._list(
                self.core.list_namespaced_pod, namespace, label_selector=selector
            )
        except Exception as err:
            raise _map(err, f"list pods in {namespace}") from err

    async def list_secrets(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        """Secrets matching `selector`, with their data values removed (only keys kept)."""
        try:
            items = await self._list(
                self.core.list_namespaced_secret, namespace, label_selector=selector
            )
        except Exception as err:
            raise _map(err, f"list secrets in {namespace}") from err
        for item in items:
            item["dataKeys"] = sorted((item.pop("data", None) or {}).keys())
        return items

    async def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Create a Pod or Secret; returns the object the apiserver stored.
        AlreadyExistsError lets callers adopt it."""
        kind = manifest["kind"]
        ns = manifest["metadata"]["namespace"]
        what = f"create {kind} {ns}/{manifest['metadata']['name']}"
        if kind not in ("Pod", "Secret"):
            raise KubeError(f"{what}: unsupported kind")
        return await self._rest("POST", f"/api/v1/namespaces/{ns}/{kind.lower()}s", what, manifest)

    async def store_jit_config(
        self, namespace: str, name: str, encoded_jit: str, runner_id: int
    ) -> dict[str, Any]:
        """Put the JIT config into the runner's Secret (the value never leaves this call);
        returns the Secret without its data."""
        patch = {
            "metadata": {
                "annotations": {
                    c.ANNOTATION_RUNNER_ID: str(runner_id),
                    c.ANNOTATION_JIT_STORED: now_rfc3339(),
                }
            },
            "data": {c.SECRET_KEY_JITCONFIG: base64.b64encode(encoded_jit.encode()).decode()},
        }
        stored = await self._rest(
            "PATCH", f"/api/v1/namespaces/{namespace}/secrets/{name}",
            f"store JIT config in Secret {namespace}/{name}", patch,
            "application/merge-patch+json",
        )  # fmt: skip
        stored["dataKeys"] = sorted((stored.pop("data", None) or {}).keys())
        return stored

    async def delete_pod(self, namespace: str, name: str) -> None:
        """Delete a pod; already gone counts as done."""
        try:
            await self.core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
        except ApiException as err:
            if err.status != 404:
                raise _map(err, f"delete pod {namespace}/{name}") from err
        except Exception as err:
            raise _map(err, f"delete pod {namespace}/{name}") from err

    async def delete_secret(self, namespace: str, name: str) -> None:
        try:
            await self.core.delete_namespaced_secret(name, namespace)
        except ApiException as err:
            if err.status != 404:
                raise _map(err, f"delete secret {namespace}/{name}") from err
        except Exception as err:
            raise _map(err, f"delete secret {namespace}/{name}") from err

    async def read_secret_data(self, namespace: str, name: str) -> dict[str, str]:
        """A Secret's decoded data (used only for GitHub credentials)."""
        try:
            secret = await self.core.read_namespaced_secret(name, namespace)
        except Exception as err:
            raise _map(err, f"read Secret {namespace}/{name}") from err
        return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}

    # ------------------------------------------------------------------ our custom objects
    async def _get_custom(self, plural: str, namespace: str, name: str) -> dict[str, Any]:
        try:
            body: dict[str, Any] = await self.custom.get_namespaced_custom_object(
                c.GROUP, c.VERSION, namespace, plural, name
            )
        except Exception as err:
            raise _map(err, f"get {plural} {namespace}/{name}") from err
        return body

    async def _patch_custom_status(
        self, plural: str, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        """JSON merge patch of the status subresource (only the keys given change); returns
        the object as stored."""
        try:
            stored: dict[str, Any] = await self.custom.patch_namespaced_custom_object_status(
                c.GROUP, c.VERSION, namespace, plural, name, body,
                _content_type="application/merge-patch+json",  # type: ignore[call-arg]
            )  # fmt: skip
        except Exception as err:
            raise _map(err, f"patch status of {plural} {namespace}/{name}") from err
        return stored

    async def get_scale_set(self, namespace: str, name: str) -> dict[str, Any]:
        return await self._get_custom(c.RUNNER_SCALE_SET_PLURAL, namespace, name)

    async def patch_scale_set_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        """The operator's status keys (never `demand`: the listener owns it)."""
        await self._patch_custom_status(
            c.RUNNER_SCALE_SET_PLURAL, namespace, name, {"status": status}
        )

    async def write_demand(
        self, namespace: str, name: str, demand: dict[str, Any], resource_version: str
    ) -> dict[str, Any]:
        """Patch status.demand only, on the version read (ConflictError if it moved); returns
        the scale set as stored."""
        body = {"metadata": {"resourceVersion": resource_version}, "status": {"demand": demand}}
        return await self._patch_custom_status(c.RUNNER_SCALE_SET_PLURAL, namespace, name, body)

    async def get_team_listener(self, namespace: str, name: str) -> dict[str, Any]:
        return await self._get_custom(c.TEAM_LISTENER_PLURAL, namespace, name)

    async def patch_team_listener_status(
        self, namespace: str, name: str, status: dict[str, Any]
    ) -> None:
        await self._patch_custom_status(c.TEAM_LISTENER_PLURAL, namespace, name, {"status": status})

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Server-side apply (field manager `runnerfleet`, conflicts forced): create or update
        an object of any kind we render in one idempotent call."""
        path = _object_path(manifest)
        meta = manifest["metadata"]
        where = f"{meta['namespace']}/" if meta.get("namespace") else ""
        what = f"apply {manifest['kind']} {where}{meta['name']}"
        try:
            resp = await self.api.call_api(
                path, "PATCH",
                query_params=[("fieldManager", c.FIELD_MANAGER), ("force", "true")],
                header_params={"Content-Type": "application/apply-patch+yaml",
                               "Accept": "application/json"},
                body=manifest, auth_settings=["BearerToken"], _preload_content=False,
            )  # fmt: skip
        except Exception as err:
            raise _map(err, what) from err
        return await _json(resp, what)

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The whole Deployment (metadata, spec, status), or None if there is none."""
        try:
            return await self._rest(
                "GET", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
                f"read Deployment {namespace}/{name}",
            )  # fmt: skip
        except NotFoundError:
            return None

    async def list_scale_sets(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """RunnerScaleSets in `namespace`, or in every namespace."""
        return await self.list_ours(c.RUNNER_SCALE_SET_PLURAL, namespace)

    async def event(self, involved: dict[str, Any], kind: str, reason: str, message: str) -> None:
        """Post a core/v1 Event about `involved` (best effort: failures are not raised).

        Repeats are folded as Kubernetes' own recorders fold them (gateways/event_series.py):
        the same reason and message within 10 minutes raise the first Event's count (written
        at most every 30 s), and past 10 different messages for one reason the rest share one
        "combined" Event. `self.event_writes` counts the creates and patches made."""
        meta = involved["metadata"]
        # Events about cluster-scoped objects (RunnerNodePools) live in `default`, as kubectl
        # describe expects.
        namespace = meta.get("namespace") or "default"
        obj = f"{namespace}/{involved.get('kind', '')}/{meta['name']}/{meta.get('uid', '')}"
        decision = self.event_series.decide(obj, kind, reason, message[:1024], time.time())
        if decision.action == "skip":
            return
        name: str | None = None
        try:
            if decision.action == "patch" and decision.name is not None:
                name = await self._patch_event(namespace, decision)
            if name is None:  # a create, or the series' Event is gone (expired)
                name = await self._create_event(involved, namespace, kind, reason, decision)
        except (ApiException, aiohttp.ClientError, TimeoutError):
            name = None
        self.event_series.wrote(decision, name)

    async def _create_event(
        self, involved: dict[str, Any], namespace: str, kind: str, reason: str, decision: Decision
    ) -> str:
        meta = involved["metadata"]
        first = dt.datetime.fromtimestamp(decision.first, dt.UTC)
        now = dt.datetime.now(dt.UTC)
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{meta['name']}.", namespace=namespace),
            involved_object=client.V1ObjectReference(
                api_version=involved.get("apiVersion", c.API_VERSION),
                kind=involved.get("kind", c.RUNNER_SCALE_SET_KIND),
                name=meta["name"],
                namespace=meta.get("namespace"),
                uid=meta.get("uid"),
            ),
            type=kind,
            reason=reason,
            message=decision.message[:1024],
            first_timestamp=first if decision.count > 1 else now,
            last_timestamp=now,
            count=decision.count,
            source=client.V1EventSource(component="runnerfleet"),
            reporting_component="runnerfleet.dev/operator",
        )
        self.event_writes += 1
        created = await self.core.create_namespaced_event(namespace, body)
        return str(created.metadata.name)

    async def _patch_event(self, namespace: str, decision: Decision) -> str | None:
        """Raise the series' count; None if its Event is gone (Events expire after 1 h)."""
        assert decision.name is not None
        stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        patch = {"count": decision.count, "lastTimestamp": stamp, "message": decision.message}
        self.event_writes += 1
        try:
            await self.core.patch_namespaced_event(decision.name, namespace, patch)
        except ApiException as err:
            if err.status == 404:
                return None
            raise
        return decision.name

    # ------------------------------------------------------------------ raw REST
    async def _rest(
        self,
        method: str,
        path: str,
        what: str,
        body: Any = None,
        content_type: str = "application/json",
        query: list[tuple[str, str]] | None = None,
    ) -> dict[str, Any]:
        try:
            resp = await self.api.call_api(
                path, method, query_params=query or [],
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                body=body, auth_settings=["BearerToken"], _preload_content=False,
            )  # fmt: skip
        except Exception as err:
            raise _map(err, what) from err
        return await _json(resp, what)

    async def raw_list(
        self, path: str, selector: str, field_selector: str = "", limit: int = 0, token: str = ""
    ) -> dict[str, Any]:
        """A list response (items, the list's resourceVersion and, with `limit`, the
        `continue` token of the next page), for informers."""
        query = [("labelSelector", selector)]
        if field_selector:
            query.append(("fieldSelector", field_selector))
        if limit:
            query.append(("limit", str(limit)))
        if token:
            query.append(("continue", token))
        return await self._rest("GET", path, f"list {path}", query=query)

    # ------------------------------------------------------------------ node pools
    async def get_node_pool(self, name: str) -> dict[str, Any]:
        path = f"/apis/{c.API_VERSION}/{c.RUNNER_NODE_POOL_PLURAL}/{name}"
        return await self._rest("GET", path, f"get RunnerNodePool {name}")

    async def patch_node_pool_status(self, name: str, status: dict[str, Any]) -> None:
        path = f"/apis/{c.API_VERSION}/{c.RUNNER_NODE_POOL_PLURAL}/{name}/status"
        await self._rest(
            "PATCH", path, f"patch status of RunnerNodePool {name}", {"status": status},
            "application/merge-patch+json",
        )  # fmt: skip

    async def has_karpenter(self) -> bool:
        """True if the karpenter.sh/v1 NodePool API is served (Karpenter's CRDs installed)."""
        path = f"/apis/{c.KARPENTER_GROUP}/{c.KARPENTER_VERSION}"
        try:
            found = await self._rest("GET", path, "discover Karpenter")
        except NotFoundError:
            return False
        return any(r.get("name") == c.KARPENTER_NODEPOOL_PLURAL for r in found.get("resources", []))

    async def get_karpenter_nodepool(self, name: str) -> dict[str, Any] | None:
        """The karpenter.sh/v1 NodePool `name`, or None if there is none."""
        path = (
            f"/apis/{c.KARPENTER_GROUP}/{c.KARPENTER_VERSION}/{c.KARPENTER_NODEPOOL_PLURAL}/{name}"
        )
        try:
            return await self._rest("GET", path, f"get NodePool {name}")
        except NotFoundError:
            return None

    async def delete_karpenter_nodepool(self, name: str) -> None:
        path = (
            f"/apis/{c.KARPENTER_GROUP}/{c.KARPENTER_VERSION}/{c.KARPENTER_NODEPOOL_PLURAL}/{name}"
        )
        try:
            await self._rest("DELETE", path, f"delete NodePool {name}")
        except NotFoundError:
            return

    async def delete_deployment(self, namespace: str, name: str) -> None:
        try:
            await self._rest(
                "DELETE", f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
                f"delete Deployment {namespace}/{name}",
            )  # fmt: skip
        except NotFoundError:
            return

    async def list_nodes(self, selector: str = "") -> list[dict[str, Any]]:
        query = [("labelSelector", selector)] if selector else []
        items: list[dict[str, Any]] = (
            await self._rest("GET", "/api/v1/nodes", "list nodes", query=query)
        ).get("items", [])
        return items

    async def patch_node(self, name: str, patch: dict[str, Any]) -> None:
        """JSON merge patch of a node (ConflictError if it carries a stale resourceVersion)."""
        await self._rest(
            "PATCH", f"/api/v1/nodes/{name}", f"patch node {name}", patch,
            "application/merge-patch+json",
        )  # fmt: skip

    async def annotate_pod(
        self, namespace: str, name: str, annotations: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch a pod's annotations (None removes one); returns the pod, or None if it
        is gone (which counts as done)."""
        try:
            return await self._rest(
                "PATCH", f"/api/v1/namespaces/{namespace}/pods/{name}",
                f"annotate pod {namespace}/{name}", {"metadata": {"annotations": annotations}},
                "application/merge-patch+json",
            )  # fmt: skip
        except NotFoundError:
            return None

    async def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The whole ConfigMap (metadata and data), or None if there is none."""
        try:
            return await self._rest(
                "GET", f"/api/v1/namespaces/{namespace}/configmaps/{name}",
                f"get ConfigMap {namespace}/{name}",
            )  # fmt: skip
        except NotFoundError:
            return None

    async def get_config_map_data(self, namespace: str, name: str) -> dict[str, str] | None:
        found = await self.get_config_map(namespace, name)
        if found is None:
            return None
        data: dict[str, str] = found.get("data") or {}
        return data

    async def get_service_account(self, namespace: str, name: str) -> dict[str, Any] | None:
        """A ServiceAccount (a scale set's spec.identity.serviceAccountName), or None."""
        try:
            found: dict[str, Any] = await self._rest(
                "GET", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}",
                f"get ServiceAccount {namespace}/{name}",
            )  # fmt: skip
        except NotFoundError:
            return None
        return found

    # ------------------------------------------------------------------ fleet report
    async def list_ours(self, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Every object of one of our kinds (cluster-scoped kinds: pass no namespace)."""
        where = f"/namespaces/{namespace}" if namespace else ""
        found = await self._rest("GET", f"/apis/{c.API_VERSION}{where}/{plural}", f"list {plural}")
        items: list[dict[str, Any]] = found.get("items", [])
        return items

    async def list_events(self, reason: str, namespace: str | None = None) -> list[dict[str, Any]]:
        where = f"/namespaces/{namespace}" if namespace else ""
        found = await self._rest(
            "GET", f"/api/v1{where}/events", "list events",
            query=[("fieldSelector", f"reason={reason}")],
        )  # fmt: skip
        items: list[dict[str, Any]] = found.get("items", [])
        return items

    # ------------------------------------------------------------------ leases
    def _lease_path(self, namespace: str, name: str = "") -> str:
        base = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
        return f"{base}/{name}" if name else base

    async def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._rest("GET", self._lease_path(namespace, name), f"get Lease {name}")
        except NotFoundError:
            return None

    async def create_lease(
        self, namespace: str, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Create the Lease (returned as stored); a concurrent creation raises ConflictError
        (AlreadyExists)."""
        meta: dict[str, Any] = {"name": name, "namespace": namespace}
        if labels:
            meta["labels"] = labels
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": meta, "spec": spec}  # fmt: skip
        return await self._rest("POST", self._lease_path(namespace), f"create Lease {name}", body)

    async def replace_lease(
        self,
        namespace: str,
        name: str,
        spec: dict[str, Any],
        resource_version: str,
        labels: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Update on the version read (returned as stored): ConflictError if anyone wrote it
        since. A PUT replaces the labels too: `labels` are written with every update."""
        meta: dict[str, Any] = {"name": name, "namespace": namespace,
                                "resourceVersion": resource_version}  # fmt: skip
        if labels:
            meta["labels"] = labels
        body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": meta, "spec": spec}  # fmt: skip
        path = self._lease_path(namespace, name)
        return await self._rest("PUT", path, f"update Lease {name}", body)


_PLURALS = {
    "ServiceAccount": "serviceaccounts", "Service": "services", "Secret": "secrets",
    "ConfigMap": "configmaps", "Pod": "pods", "Role": "roles", "RoleBinding": "rolebindings",
    "Deployment": "deployments", "NetworkPolicy": "networkpolicies", "NodePool": "nodepools",
    "PriorityClass": "priorityclasses",
}  # fmt: skip


def _object_path(manifest: dict[str, Any]) -> str:
    api_version: str = manifest["apiVersion"]
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    meta = manifest["metadata"]
    plural = _PLURALS[manifest["kind"]]
    if not meta.get("namespace"):
        return f"{base}/{plural}/{meta['name']}"
    return f"{base}/namespaces/{meta['namespace']}/{plural}/{meta['name']}"
