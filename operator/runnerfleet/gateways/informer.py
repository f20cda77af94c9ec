"""Informer-style caches: one list + watch per kind, shared by every object's loop.

Rounds used to list their pods and Secrets from the apiserver every few seconds each; with a
thousand scale sets that is most of the apiserver's load while nothing happens. An `Informer`
lists once, then watches from the list's resourceVersion (with bookmarks, so a quiet watch
can resume where it stopped instead of re-listing), keeps the objects in memory and calls
`on_change` for each object that changed. Only a 410 Gone (history compacted) causes a
re-list; a broken connection resumes from the last version seen.

Selectors are applied by the apiserver, so only runnerfleet's own objects ever arrive.
Secrets are kept without their data (only the key names), so JIT configs never sit in the
operator's memory longer than the write that stores them.

Our own writes go into the cache at once (`upsert`/`remove`), so the next round sees them even
before their watch events arrive and never creates a runner twice.

Layer: gateways. Network I/O to the Kubernetes API only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from runnerfleet import conventions as c
from runnerfleet.gateways.kubernetes import KubeError, KubeGateway, map_error
from runnerfleet.tasks import Background

log = logging.getLogger("runnerfleet.informer")
WATCH_SECONDS = 300  # server-side timeout of one watch request; it resumes afterwards
LIST_PAGE = 500  # objects per list page (client-go's reflectors page the same way)


def _slim(obj: dict[str, Any]) -> dict[str, Any]:
    """Drop `metadata.managedFields` (server-side apply's bookkeeping, often the largest part
    of a small object; nothing here reads it): at 1,000 scale sets the caches hold thousands
    of pods and Secrets."""
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        obj = {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
    return obj


def _project_pod(obj: dict[str, Any]) -> dict[str, Any]:
    """A runner pod as the operator reads it: its metadata, node and how its containers
    ended. The spec (containers, env, volumes, tolerations...) is most of a pod and nothing
    reads it from the cache; at 5,000 runners it was most of the operator's memory."""
    status = obj.get("status") or {}
    kept: dict[str, Any] = {k: status[k] for k in ("phase", "reason") if k in status}
    if "containerStatuses" in status:
        kept["containerStatuses"] = [
            {k: cs[k] for k in ("name", "state", "lastState") if k in cs}
            for cs in status.get("containerStatuses") or []
        ]
    out: dict[str, Any] = {k: obj[k] for k in ("apiVersion", "kind", "metadata") if k in obj}
    node = (obj.get("spec") or {}).get("nodeName")
    out["spec"] = {"nodeName": node} if node else {}
    out["status"] = kept
    return out


def _strip_secret(obj: dict[str, Any]) -> dict[str, Any]:
    if "data" not in obj and "dataKeys" in obj:
        return obj  # stripped already (the gateway's answer to a write)
    obj["dataKeys"] = sorted((obj.pop("data", None) or {}).keys())
    obj.pop("stringData", None)
    return obj


def _matches(obj: dict[str, Any], labels: dict[str, str]) -> bool:
    have = obj.get("metadata", {}).get("labels") or {}
    return all(have.get(k) == v for k, v in labels.items())


ROOTS = {
    "pods": "/api/v1", "secrets": "/api/v1", "deployments": "/apis/apps/v1",
    "leases": "/apis/coordination.k8s.io/v1", c.RUNNER_SCALE_SET_PLURAL: f"/apis/{c.API_VERSION}",
    c.TEAM_LISTENER_PLURAL: f"/apis/{c.API_VERSION}",
}  # fmt: skip
_CUSTOM = (c.RUNNER_SCALE_SET_PLURAL, c.TEAM_LISTENER_PLURAL)  # runnerfleet's own kinds


class Informer:
    """The cached objects of one kind (a key of ROOTS) matching the label `selector` (and
    the `field_selector`, e.g. `metadata.name=x` to follow one object)."""

    def __init__(
        self,
        kube: KubeGateway,
        plural: str,
        namespace: str | None,
        selector: str,
        on_change: Callable[[dict[str, Any]], None] = lambda obj: None,
        field_selector: str = "",
        quiet_first_list: bool = False,
    ) -> None:
        """`quiet_first_list`: the first list calls no `on_change` (readers wait for `synced`
        and read everything then; waking each object's loop for it would undo the operator's
        startup spread). Re-lists after a 410 still report every object."""
        if plural not in ROOTS:
            raise ValueError(f"no informer for {plural!r}")
        self.kube = kube
        self.plural = plural
        self.namespace = namespace
        self.selector = selector
        self.field_selector = field_selector
        self.on_change = on_change
        self.quiet_first_list = quiet_first_list
        self.synced = asyncio.Event()
        self.lists = 0  # full lists made (1 + one per 410 Gone)
        self.watches = 0  # watch requests made
        # namespace -> name -> object: a scale set's round reads its own namespace's objects
        # (tens), not every runner of the fleet (5,000 pods and 5,000 Secrets at issue #10's
        # shape, scanned by every round when this was one flat dict).
        self._store: dict[str, dict[str, dict[str, Any]]] = {}
        self._background = Background(self._run)

    # ------------------------------------------------------------------ reads (no I/O)
    def items(self, namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        in_namespace = self._store.get(namespace, {})
        return [obj for obj in in_namespace.values() if _matches(obj, labels)]

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._store.get(namespace, {}).get(name)

    def __len__(self) -> int:
        return sum(len(objs) for objs in self._store.values())

    def _put(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self._store.setdefault(meta["namespace"], {})[meta["name"]] = obj

    # ------------------------------------------------------------------ our own writes
    def upsert(self, obj: dict[str, Any]) -> None:
        """An object we just wrote (the apiserver's answer): visible before its watch event."""
        self._put(self._keep(dict(obj)))

    def remove(self, namespace: str, name: str) -> None:
        objs = self._store.get(namespace)
        if objs is not None:
            objs.pop(name, None)
            if not objs:
                del self._store[namespace]

    # ------------------------------------------------------------------ running
    def start(self) -> None:
        self._background.start()

    async def stop(self) -> None:
        await self._background.stop()

    async def _run(self) -> None:
        version: str | None = None
        delay = 1.0
        while True:
            try:
                if version is None:
                    version = await self._list()
                version = await self._watch(version)
                delay = 1.0
            except _Gone:
                version = None  # history compacted: list again
            except KubeError as err:
                log.warning("%s watch broke (%s); resuming in %.0fs", self.plural, err, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
            except Exception:  # a bug must not leave the operator blind: log, list afresh
                log.exception("%s informer failed; listing again in %.0fs", self.plural, delay)
                version = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    def _path(self) -> str:
        root = ROOTS[self.plural]
        if self.namespace:
            return f"{root}/namespaces/{self.namespace}/{self.plural}"
        return f"{root}/{self.plural}"

    async def _list(self) -> str:
        """Replace the cache with a full list, read in pages of LIST_PAGE (as client-go's
        reflectors do); returns the list's resourceVersion. One 5,000-pod response decoded
        at once was the peak of a replica started at that size (314 MiB, 273 once settled)."""
        self.lists += 1
        # Pages go into a store of their own, swapped in whole: readers never see half a list.
        store: dict[str, dict[str, dict[str, Any]]] = {}
        token, version = "", ""
        while True:
            body = await self.kube.raw_list(
                self._path(), self.selector, self.field_selector, limit=LIST_PAGE, token=token
            )
            for obj in body.get("items", []):
                kept = self._keep(obj)
                meta = kept["metadata"]
                store.setdefault(meta["namespace"], {})[meta["name"]] = kept
            meta = body.get("metadata") or {}
            version = str(meta.get("resourceVersion", ""))
            token = meta.get("continue") or ""
            if not token:
                break
        old = {(ns, name): obj for ns, objs in self._store.items() for name, obj in objs.items()}
        self._store = store
        if self.synced.is_set() or not self.quiet_first_list:
            listed = {(ns, n) for ns, objs in self._store.items() for n in objs}
            for ns, name in old.keys() | listed:
                self.on_change(self.get(ns, name) or old[(ns, name)])
        self.synced.set()
        return version

    async def _watch(self, version: str) -> str:
        """Follow changes from `version` until the server ends the watch; returns the last
        version seen, to resume from."""
        self.watches += 1
        w = watch.Watch(return_type="object")
        kwargs: dict[str, Any] = {
            "label_selector": self.selector, "resource_version": version,
            "allow_watch_bookmarks": True, "timeout_seconds": WATCH_SECONDS,
        }  # fmt: skip
        if self.field_selector:
            kwargs["field_selector"] = self.field_selector
        call, args = self._watch_call()
        try:
            async for event in w.stream(call, *args, **kwargs):
                kind = str(event["type"])
                obj = event["raw_object"]
                version = str(obj.get("metadata", {}).get("resourceVersion") or version)
                if kind == "BOOKMARK":
                    continue
                self._apply(kind, obj)
        except ApiException as err:
            if err.status == 410:
                raise _Gone from err
            raise map_error(err, f"watch {self.plural}") from err
        except Exception as err:
            raise map_error(err, f"watch {self.plural}") from err
        finally:
            w.stop()
        return version

    def _watch_call(self) -> tuple[Any, tuple[Any, ...]]:
        """The client's list function for this kind (watched with `watch=True`) and its
        positional arguments."""
        ns = self.namespace
        if self.plural in _CUSTOM:
            custom = client.CustomObjectsApi(self.kube.api)
            if ns:
                return custom.list_namespaced_custom_object, (c.GROUP, c.VERSION, ns, self.plural)
            return custom.list_cluster_custom_object, (c.GROUP, c.VERSION, self.plural)
        core, apps = self.kube.core, client.AppsV1Api(self.kube.api)
        coordination = client.CoordinationV1Api(self.kube.api)
        calls = {
            ("pods", True): core.list_namespaced_pod,
            ("pods", False): core.list_pod_for_all_namespaces,
            ("secrets", True): core.list_namespaced_secret,
            ("secrets", False): core.list_secret_for_all_namespaces,
            ("deployments", True): apps.list_namespaced_deployment,
            ("deployments", False): apps.list_deployment_for_all_namespaces,
            ("leases", True): coordination.list_namespaced_lease,
            ("leases", False): coordination.list_lease_for_all_namespaces,
        }
        return calls[(self.plural, bool(ns))], ((ns,) if ns else ())

    def _keep(self, obj: dict[str, Any]) -> dict[str, Any]:
        """What the cache holds of an object: Secrets without their data, pods projected to
        what is read, nothing with managedFields."""
        if self.plural == "secrets":
            obj = _strip_secret(obj)
        elif self.plural == "pods":
            obj = _project_pod(obj)
        return _slim(obj)

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        obj = self._keep(obj)
        meta = obj["metadata"]
        if kind == "DELETED":
            self.remove(meta["namespace"], meta["name"])
        elif _older(obj, self.get(meta["namespace"], meta["name"])):
            return  # an event our own write (already cached) has overtaken
        else:
            self._put(obj)
        self.on_change(obj)


def _older(new: dict[str, Any], cached: dict[str, Any] | None) -> bool:
    """True if `new` is an older version than `cached`. resourceVersions are opaque strings
    by contract; the apiserver's are etcd revisions, so they compare as integers when both
    parse, and anything else is taken as newer."""
    if cached is None:
        return False
    try:
        return int(new["metadata"]["resourceVersion"]) < int(cached["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return False


class _Gone(Exception):
    """The watch's resourceVersion is too old (410): the informer must list again."""
